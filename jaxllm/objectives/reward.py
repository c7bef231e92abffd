"""Reward-model loss: Bradley-Terry on scalar rewards of (chosen, rejected) pairs.

loss = -log sigmoid(r_c - r_r - m) + c (r_c + r_r)^2 per pair, with an optional margin m per
pair (Llama 2's graded preferences) and an optional reward-centering coefficient c
(Eisenstein et al. 2023), the terms TRL's RewardTrainer uses.
"""

import jax
import jax.numpy as jnp


def bradley_terry_loss(r_chosen: jax.Array, r_rejected: jax.Array,
                       margin: jax.Array | None = None,
                       center_coefficient: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-pair losses [P] and metrics: accuracy, margin, rewards of chosen and rejected."""
  diff = r_chosen - r_rejected
  losses = -jax.nn.log_sigmoid(diff - (0.0 if margin is None else margin))
  if center_coefficient:
    losses = losses + center_coefficient * jnp.square(r_chosen + r_rejected)
  metrics = {"accuracy": (diff > 0).astype(jnp.float32), "margin": diff,
             "rewards/chosen": r_chosen, "rewards/rejected": r_rejected}
  return losses, metrics
