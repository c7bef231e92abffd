"""Llama 3 8B shapes on GPU/TPU: bfloat16 compute, FSDP over all devices, scanned layers.

  python experiments/pretrain.py --config=configs/pretrain/llama3_8b.py \
      --workdir=/tmp/jaxllm/llama3_8b

Arguments: `--config=configs/pretrain/llama3_8b.py:steps=1000,batch=256,seq_len=2048`.
Data defaults to the embedded world; point it at real text with --config.data.source=GLOB
(or tfds:NAME) and --config.data.tokenizer=PATH/tokenizer.json (experiments/train_tokenizer.py).
"""

from jaxllm.recipes import pretrain


def get_config(arg=None):
  c = pretrain.accelerator_config("llama3-8b", arg, seq_len=2048)
  c.model.remat = "full"  # activations of 32 layers at 8B do not fit otherwise
  c.optimizer.lr = 3e-4
  return c
