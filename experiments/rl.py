"""Reinforcement learning from an SFT run: GRPO-style with verifiable rewards, RLHF against a
trained reward model, PPO with a value head.

  python experiments/rl.py --config=configs/rl/grpo_tiny.py --workdir=/tmp/jaxllm/grpo \\
      --config.init.checkpoint=/tmp/jaxllm/sft
  python experiments/rl.py --config=configs/rl/rlhf_tiny.py --workdir=/tmp/jaxllm/rlhf \\
      --config.init.checkpoint=/tmp/jaxllm/sft --config.rl.reward_model=/tmp/jaxllm/rm
  python experiments/rl.py --config=configs/rl/ppo_tiny.py --workdir=/tmp/jaxllm/ppo \\
      --config.init.checkpoint=/tmp/jaxllm/sft

Each step is one iteration: sample config.rl.group_size completions for each of
train.batch_size / group_size prompts with the current policy, score them
(config.rl.rewards), compute advantages (config.rl.advantage) and make rl.epochs x
rl.minibatches updates with the clipped objective (jaxllm/objectives/policy.py). metrics.jsonl
gets rollout/* (reward, accuracy, pass@G, length, dropped groups, sampler-vs-trainer log-prob
difference, KL to the reference), time/* (sampling, rewards, log-probs, updates), train/* (loss,
KL, entropy, clip fractions) and, every eval step, eval/* on held-out prompts (greedy accuracy,
pass@k, format, reward-model score). Running again with the same --workdir resumes exactly
(the prompt order and the sampler's keys derive from the seed and the iteration).
"""

from jaxllm import cli
from jaxllm.rl.experiment import run

if __name__ == "__main__":
  cli.run_stage(run, "Config file (see configs/rl/).")
