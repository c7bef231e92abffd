"""Reward-model loss: Bradley-Terry on scalar rewards of (chosen, rejected) pairs.

loss = -log sigmoid(r_c - r_r - m) + c (r_c + r_r)^2 per pair, with an optional margin m per
pair (Llama 2's graded preferences) and an optional reward-centering coefficient c
(Eisenstein et al. 2023), the terms TRL's RewardTrainer uses. `lm_weight` w > 0 adds
w * NLL(chosen reply), the token-mean next-token loss of the chosen reply under the reward
model's kept LM head (RewardModel(lm_head=True)): hidden-state regularisation (Yang et al. 2024,
"GRM"), which keeps the backbone a language model while the score head trains.

`reward_loss` is the objective (contract in jaxllm/objectives/lm.py) for a RewardModel
(jaxllm/models/reward.py) on batches of pair rows (jaxllm/data/preferences.py). Its `_sq`
metrics are mean squares, from which the loop reports standard deviations (`_std`).
"""

import jax
import jax.numpy as jnp

from jaxllm.objectives.preference import both_sides, pair_sums, sequence_logprobs


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


def reward_loss(params, batch: dict[str, jax.Array], rng, model, *,
                center_coefficient: float = 0.0, use_margin: bool = False,
                lm_weight: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Bradley-Terry on the rewards of both replies of each pair (one forward pass over both);
  `use_margin` subtracts the batch's per-pair "margin"; `lm_weight` > 0 adds the chosen reply's
  token-mean NLL (the model must be a RewardModel(lm_head=True))."""
  out = model.apply({"params": params}, both_sides(batch, "tokens"), both_sides(batch, "valid"),
                    deterministic=rng is None, return_logits=bool(lm_weight),
                    rngs={} if rng is None else {"dropout": rng})
  rewards = out[0] if lm_weight else out
  r_chosen, r_rejected = jnp.split(rewards, 2)
  losses, metrics = bradley_terry_loss(r_chosen, r_rejected,
                                       batch["margin"] if use_margin else None,
                                       center_coefficient)
  if lm_weight:
    logits_chosen = jnp.split(out[1], 2)[0][:, :-1]
    nll_chosen = -sequence_logprobs(logits_chosen, batch["chosen_tokens"][:, 1:],
                                    batch["chosen_loss_mask"][:, 1:], average=True)
    losses = losses + lm_weight * nll_chosen
    metrics["nll_chosen"] = nll_chosen
  metrics.update({"rewards/chosen_sq": jnp.square(r_chosen),
                  "rewards/rejected_sq": jnp.square(r_rejected),
                  "truncated": batch["truncated"]})
  return pair_sums(losses, metrics, batch["pair_weight"])
