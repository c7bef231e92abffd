"""Masked LM (BERT / RoBERTa style) with the tiny model, bidirectional, on the embedded world; CPU.

  python experiments/pretrain.py --config=configs/pretrain/mlm_tiny.py --workdir=/tmp/jaxllm/mlm

Each step masks 15% of the real, non-special tokens afresh (80% become <|mask|>, 10% a random
token, 10% stay) and trains on predicting the originals there (jaxllm/objectives/mlm.py); eval
masks with a fixed key. eval/accuracy is the masked-token accuracy. The run's tokenizer is
trained with <|mask|> among its special tokens. The run cannot be sampled from or chatted with
(it does not predict next tokens). `:steps=N` shortens it; any field can be overridden too,
e.g. --config.mlm.mask_rate=0.3.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import pretrain


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=1000)
  c = pretrain.mlm_config("tiny")
  c.train.num_steps = args.steps
  c.train.batch_size = 16
  c.train.log_every = 50
  c.train.eval_every = 250
  c.train.eval_at_start = True
  c.train.checkpoint_every = 250
  c.data.seq_len = 128
  c.optimizer.lr = 3e-3
  c.optimizer.warmup_steps = 20
  return c
