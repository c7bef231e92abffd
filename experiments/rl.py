"""Reinforcement learning from an SFT run: GRPO-style with verifiable rewards, RLHF against a
trained reward model, PPO with a value head.

  python experiments/rl.py --config=configs/rl/grpo_tiny.py --workdir=/tmp/jaxllm/grpo \\
      --config.init.checkpoint=/tmp/jaxllm/sft
  python experiments/rl.py --config=configs/rl/rlhf_tiny.py --workdir=/tmp/jaxllm/rlhf \\
      --config.init.checkpoint=/tmp/jaxllm/sft --config.rl.reward_model=/tmp/jaxllm/rm
  python experiments/rl.py --config=configs/rl/ppo_tiny.py --workdir=/tmp/jaxllm/ppo \\
      --config.init.checkpoint=/tmp/jaxllm/sft

Each step is one iteration: sample config.rl.group_size completions for each of
train.batch_size / group_size prompts with the current policy, score them, compute advantages
and update with the clipped objective. metrics.jsonl gets rollout/*, time/*, train/* and, every
eval step, eval/* on held-out prompts. Running again with the same --workdir resumes exactly (the
prompt order and the sampler's keys derive from the seed and the iteration). The stage:
jaxllm/recipes/rl.py.
"""

from jaxllm.recipes import rl

if __name__ == "__main__":
  rl.main()
