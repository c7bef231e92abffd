"""Distil the tiny pretrained model into a 3x smaller student on the embedded world's text.

  python experiments/distill.py --config=configs/distill/tiny.py --workdir=/tmp/jaxllm/distill \\
      --config.teacher.checkpoint=/tmp/jaxllm/tiny

The same student trained on the data alone, the baseline to compare at equal steps:

  python experiments/distill.py --config=configs/distill/tiny.py --workdir=/tmp/jaxllm/student \\
      --config.teacher.checkpoint=/tmp/jaxllm/tiny --config.distill.kd_weight=0

The teacher is configs/pretrain/tiny.py's run (2 layers, d_model 64: 164,160 parameters); the
student keeps its 2 layers at half the width (d_model 32: 57,504 parameters). With temperature
1 and kd_weight 0.9 it ends 0.049 nats per token below the data-only student (mean of 3 seeds,
docs/benchmarks.md "Distillation"); temperature 2 ended worse than the data alone.
`:steps=N` sets the number of steps.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import distill


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=1000)
  c = distill.default_config("tiny")
  c.model.num_layers = 2
  c.model.d_model = 32
  c.model.num_heads = 2
  c.model.num_kv_heads = 1
  c.model.mlp_dim = 96
  c.distill.temperature = 1.0
  c.distill.kd_weight = 0.9
  c.train.num_steps = args.steps
  c.train.batch_size = 16
  c.train.log_every = 50
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  c.train.eval_batches = 16
  c.data.seq_len = 128
  c.optimizer.lr = 3e-3
  c.optimizer.warmup_steps = 20
  return c
