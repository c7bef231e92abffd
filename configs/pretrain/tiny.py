"""Tiny Llama-style model on the embedded world; about a minute on a laptop CPU.

  python experiments/pretrain.py --config=configs/pretrain/tiny.py --workdir=/tmp/jaxllm/tiny

`--config=configs/pretrain/tiny.py:steps=50` shortens it; any field can be overridden too.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import pretrain


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=1000)
  c = pretrain.default_config("tiny")
  c.train.num_steps = args.steps
  c.train.batch_size = 16
  c.train.log_every = 50
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  c.data.seq_len = 128
  c.optimizer.lr = 3e-3
  c.optimizer.warmup_steps = 20
  return c


def get_sweep(arg=None):
  """Learning-rate ablation around the default 3e-3:

    python experiments/sweep.py --config=configs/pretrain/tiny.py --workdir=/tmp/jaxllm/lr
  """
  del arg  # the same points at any length
  from jaxllm.workflow import sweep  # pylint: disable=import-outside-toplevel
  return sweep.grid(**{"optimizer.lr": [1e-3, 3e-3, 1e-2, 3e-2]})
