"""GRPO of the tiny SFT run on the embedded world's word problems, rewarded by the verifier.

  python experiments/rl.py --config=configs/rl/grpo_tiny.py --workdir=/tmp/jaxllm/grpo \\
      --config.init.checkpoint=/tmp/jaxllm/sft

`:steps=N` sets the iterations. Variants: --config.rl.advantage=dr_grpo (with
--config.rl.aggregation=seq_mean_token_sum_norm: Dr. GRPO) or rloo; --config.rl.kl_coef=0.04
adds the k3 KL to the SFT model; --config.rl.epochs=2 --config.rl.minibatches=2 reuses each
rollout for four updates (the ratio clipping then matters); --config.lora.rank=8 trains LoRA
adapters (the base is the reference, no copy).
"""

from jaxllm import config as config_lib
from jaxllm.recipes import rl


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=60)
  c = rl.default_config("tiny")
  c.train.num_steps = args.steps
  c.train.batch_size = 64  # 8 prompts x 8 completions per iteration
  c.rl.group_size = 8
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.28  # DAPO clip-higher
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.optimizer.lr = 1e-5
  return c
