"""PPO of the tiny SFT run with a value head on the policy's trunk, GAE advantages and the
verifier's reward; the KL to the SFT model is a per-token penalty in the reward (InstructGPT).

  python experiments/rl.py --config=configs/rl/ppo_tiny.py --workdir=/tmp/jaxllm/ppo \\
      --config.init.checkpoint=/tmp/jaxllm/sft
"""

from jaxllm import config as config_lib
from jaxllm.recipes import rl


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=60)
  c = rl.default_config("tiny")
  c.train.num_steps = args.steps
  c.train.batch_size = 64
  c.rl.group_size = 4  # completions per prompt (GAE does not compare them; more prompts)
  c.rl.advantage = "gae"
  c.rl.value_coef = 0.5
  c.rl.value_clip = 0.2
  c.rl.gamma = 1.0
  c.rl.gae_lambda = 0.95
  c.rl.kl_coef = 0.05
  c.rl.kl_in_reward = True
  c.rl.epochs = 2
  c.rl.minibatches = 2
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.optimizer.lr = 1e-5
  return c
