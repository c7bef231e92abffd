"""QLoRA-style fine-tuning of the tiny pretrained model: configs/sft/tiny_lora.py's rank-8
adapters over a frozen base held as int8 weights (per-output-channel scales; the adapters and
activations stay float32).

  python experiments/sft.py --config=configs/sft/tiny_qlora.py --workdir=/tmp/jaxllm/sft_qlora \
      --config.init.checkpoint=/tmp/jaxllm/tiny

The init run may be a float run (quantized when loaded) or an int8 run written by
experiments/quantize.py. Checkpoints hold the adapters only; sample.py, chat.py and evaluate.py
merge them into the dequantized base. `:steps=N,rank=R` as in tiny_lora.py.
"""

import pathlib

from jaxllm import config as config_lib


def get_config(arg=None):
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("tiny_lora.py"), arg)
  c.lora.base_quant = "int8"
  return c
