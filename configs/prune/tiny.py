"""Magnitude pruning of the tiny pretrained model, then a short recovery fine-tune with the
masks kept.

  python experiments/prune.py --config=configs/prune/tiny.py --workdir=/tmp/jaxllm/pruned \
      --config.init.checkpoint=/tmp/jaxllm/tiny

`:sparsity=0.7,structure=2:4,steps=N` change the pruning and the recovery length (steps=0: no
fine-tune, the pruned params are written as they are). Before pruning, held-out perplexity is
measured one-shot at every sparsity of config.prune.sweep and for 2:4; the plot
WORKDIR/sparsity.png shows them with the recovered model (numbers in WORKDIR/prune.json).
"""

import ml_collections

from jaxllm import config as config_lib
from jaxllm.compress import prune


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=200, sparsity=0.5, structure="unstructured")
  c = config_lib.pretrain_config("tiny")
  c.prune = ml_collections.ConfigDict()
  c.prune.sparsity = args.sparsity  # fraction of the targeted weights removed (2:4: always 0.5)
  c.prune.structure = args.structure  # unstructured (global magnitude) | 2:4
  c.prune.targets = prune.DEFAULT_TARGETS  # regex over param paths
  c.prune.recover = args.steps > 0  # fine-tune config.train.num_steps on the pretraining data
  c.prune.sweep = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"  # one-shot sparsities measured first
  c.prune.eval_texts = ""  # globs of held-out files; "": the world's held-out documents
  c.prune.eval_documents = 300
  c.optimizer.keep_zeros = c.prune.get_ref("targets")
  c.train.num_steps = max(args.steps, 1)
  c.train.batch_size = 16
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.eval_at_start = True  # the pruned model before recovery
  c.train.checkpoint_every = 100
  c.data.seq_len = 128
  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 10
  return c
