"""Magnitude pruning of the tiny pretrained model, then a short recovery fine-tune with the
masks kept.

  python experiments/prune.py --config=configs/prune/tiny.py --workdir=/tmp/jaxllm/pruned \
      --config.init.checkpoint=/tmp/jaxllm/tiny

`:sparsity=0.7,structure=2:4,steps=N` change the pruning and the recovery length (steps=0: no
fine-tune, the pruned params are written as they are). Before pruning, held-out perplexity is
measured one-shot at every sparsity of config.prune.sweep and for 2:4; the plot
WORKDIR/sparsity.png shows them with the recovered model (numbers in WORKDIR/prune.json).
"""

from jaxllm import config as config_lib
from jaxllm.recipes import prune


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=200, sparsity=0.5, structure="unstructured")
  c = prune.default_config("tiny")
  c.prune.sparsity = args.sparsity
  c.prune.structure = args.structure
  c.prune.recover = args.steps > 0
  c.train.num_steps = max(args.steps, 1)
  c.train.batch_size = 16
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.data.seq_len = 128
  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 10
  return c
