"""RLHF: GRPO of the tiny SFT run against a trained reward model (experiments/reward_model.py),
with a KL penalty to the SFT model. The verifier's accuracy is logged, not optimised, so a reward
that rises while accuracy falls (reward hacking) shows in metrics.jsonl.

  python experiments/rl.py --config=configs/rl/rlhf_tiny.py --workdir=/tmp/jaxllm/rlhf \\
      --config.init.checkpoint=/tmp/jaxllm/sft --config.rl.reward_model=/tmp/jaxllm/rm
"""

from jaxllm import config as config_lib
from jaxllm.recipes import rl


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=60)
  c = rl.default_config("tiny")
  c.train.num_steps = args.steps
  c.train.batch_size = 64
  c.rl.group_size = 8
  c.rl.rewards.correct = 0.0
  c.rl.rewards.reward_model = 1.0
  c.rl.kl_coef = 0.05
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.optimizer.lr = 1e-5
  return c
