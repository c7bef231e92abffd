"""Llama-style 335M model on GPU/TPU: bfloat16 compute, FSDP over all devices, scanned layers.

  python experiments/pretrain.py --config=configs/pretrain/llama_350m.py \
      --workdir=/tmp/jaxllm/llama_350m

Arguments: `--config=configs/pretrain/llama_350m.py:steps=1000,batch=256,seq_len=2048`.
Data defaults to the embedded world; point it at real text with --config.data.source=GLOB
(or tfds:NAME) and --config.data.tokenizer=PATH/tokenizer.json (experiments/train_tokenizer.py).
"""

from jaxllm.recipes import pretrain


def get_config(arg=None):
  c = pretrain.accelerator_config("llama-350m", arg, seq_len=2048)
  return c
