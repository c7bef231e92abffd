"""DPO of the tiny SFT run on the embedded world's preference pairs.

  python experiments/dpo.py --config=configs/dpo/tiny.py --workdir=/tmp/jaxllm/dpo \\
      --config.init.checkpoint=/tmp/jaxllm/sft

`:steps=N` sets the number of steps; --config.preference.loss=ipo|simpo|orpo picks another
loss of the family (jaxllm/objectives/preference.py).
"""

from jaxllm import config as config_lib
from jaxllm.recipes import dpo


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=300)
  c = dpo.default_config("tiny")
  c.train.num_steps = args.steps
  c.train.batch_size = 32
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  return c
