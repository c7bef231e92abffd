"""Reward model on the embedded world's preference pairs, from the tiny SFT run.

  python experiments/reward_model.py --config=configs/reward/tiny.py --workdir=/tmp/jaxllm/rm \\
      --config.init.checkpoint=/tmp/jaxllm/sft

`:steps=N` sets the number of steps. Study annotator bias with
--config.data.annotator.length_bias=0.5 (or .noise=0.2): eval pairs keep the true labels.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import reward_model


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=300)
  c = reward_model.default_config("tiny")
  c.train.num_steps = args.steps
  c.train.batch_size = 32
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  return c
