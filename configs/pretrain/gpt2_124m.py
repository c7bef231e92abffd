"""GPT-2 small (124M parameters) on GPU/TPU: bfloat16 compute, FSDP over all devices, scanned
layers.

  python experiments/pretrain.py --config=configs/pretrain/gpt2_124m.py \
      --workdir=/tmp/jaxllm/gpt2_124m

Arguments: `--config=configs/pretrain/gpt2_124m.py:steps=1000,batch=256,seq_len=1024`.
Data defaults to the embedded world; point it at real text with --config.data.source=GLOB
(or tfds:NAME) and --config.data.tokenizer=PATH/tokenizer.json (experiments/train_tokenizer.py).
"""

from jaxllm.recipes import pretrain


def get_config(arg=None):
  c = pretrain.accelerator_config("gpt2-124m", arg, seq_len=1024)
  return c
