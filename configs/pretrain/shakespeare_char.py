"""nanoGPT's character-level Shakespeare "CPU" run: a 4-layer GPT (width 128, 4 heads, no biases,
no dropout) on one text file read as a character stream, context 64, batch 12, 2000 steps.

  python experiments/pretrain.py --config=configs/pretrain/shakespeare_char.py \\
      --workdir=/tmp/jaxllm/shakespeare --config.data.path=input.txt

data.path is any UTF-8 text (tinyshakespeare's input.txt for the comparison): the first 90% of its
characters train, the rest validate, every batch is 12 random 64-character windows
(jaxllm/data/stream.py). nanoGPT's README reports validation loss 1.88 for this configuration.
`:steps=N` shortens it.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import pretrain


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=2000)
  c = pretrain.default_config("tiny")
  c.model.update(vocab_size=65, num_layers=4, d_model=128, num_heads=4, num_kv_heads=4,
                 mlp_dim=512, max_seq_len=64, norm="layer", mlp="gelu", position="learned",
                 use_bias=False, tie_embeddings=True, dropout_rate=0.0)
  c.data.path = ""  # required: --config.data.path=FILE
  c.data.tokenizer_kind = "char"
  c.data.seq_len = 64
  c.train.num_steps = args.steps
  c.train.batch_size = 12
  c.train.log_every = 50
  c.train.eval_every = 250
  c.train.eval_batches = 200  # nanoGPT's eval_iters
  c.train.checkpoint_every = args.steps
  c.optimizer.lr = 1e-3
  c.optimizer.min_lr_ratio = 0.1  # cosine down to 1e-4 at the last step
  c.optimizer.warmup_steps = 100
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.optimizer.clip_norm = 1.0
  return c
