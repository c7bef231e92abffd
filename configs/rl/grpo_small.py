"""GRPO of a 0.92M-parameter SFT model (d_model 128, 4 layers) on the world's word problems: the
run whose held-out accuracy rises over its SFT model (docs/benchmarks.md, about an hour on a
2-core CPU).

  python experiments/pretrain.py --config=configs/pretrain/tiny.py \\
      --workdir=/tmp/jaxllm/small_pre \\
      --config.model.d_model=128 --config.model.num_layers=4 --config.model.mlp_dim=384 \\
      --config.train.num_steps=1500
  python experiments/sft.py --config=configs/sft/tiny.py --workdir=/tmp/jaxllm/small_sft \\
      --config.init.checkpoint=/tmp/jaxllm/small_pre
  python experiments/rl.py --config=configs/rl/grpo_small.py --workdir=/tmp/jaxllm/grpo_small \\
      --config.init.checkpoint=/tmp/jaxllm/small_sft

32 prompts x 8 completions per iteration; the world holds 5,000 training prompts and 1,000
held-out ones (new number combinations), all of which the greedy eval answers every 30 steps.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import rl


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=210)
  c = rl.default_config("tiny")  # the model shapes come from the init run
  c.train.num_steps = args.steps
  c.train.batch_size = 256
  c.rl.group_size = 8
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.28
  c.data.world_sizes.rl = 5000
  c.eval.qa_questions = 1000
  c.eval.pass_k = 0  # sampled pass@k over 1,000 prompts would double each eval's time
  c.train.eval_every = 30
  c.train.checkpoint_every = 30
  c.optimizer.lr = 3e-5
  return c
