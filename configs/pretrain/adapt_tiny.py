"""Domain adaptation: continue pretraining a tiny run on another corpus.

  python experiments/pretrain.py --config=configs/pretrain/adapt_tiny.py \
      --workdir=/tmp/jaxllm/adapt \
      --config.init.checkpoint=/tmp/jaxllm/tiny

It is the pretraining objective started from the run's params (fresh optimizer), model config
and tokenizer. The default corpus is another embedded world (seed 1: other people, towns and
prices); point it at your own text with --config.data.source='corpus/*.txt' (or .jsonl, or a
tfds: name). `:steps=N` sets the number of steps.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import pretrain


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=300, world_seed=1)
  c = pretrain.default_config("tiny")
  c.data.source = "world"
  c.data.world_seed = args.world_seed
  c.data.seq_len = 128
  c.train.num_steps = args.steps
  c.train.batch_size = 16
  c.train.log_every = 50
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.optimizer.lr = 1e-3  # a third of pretraining's: adapt without wiping out what it knows
  c.optimizer.warmup_steps = 20
  return c
