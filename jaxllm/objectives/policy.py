"""Policy-gradient objectives for RL on sampled completions: advantages, KL, the clipped loss.

Notation, per completion token t of a rollout row: logp_t = log pi(y_t | x, y_<t) under the
params being trained, old_t under the params that sampled the rollout (recomputed by the
trainer, not taken from the sampler), ref_t under the frozen reference, A_t its advantage.
Everything is aligned to token positions: index t of a [B, T] array belongs to token t, which
the model predicted at position t - 1 (index 0 is never a completion token). Log-probs are taken
at the sampling temperature (logits / T), the distribution the completions came from.

Advantages (group estimators see a row-major [P * G] reward vector, G completions per prompt):
- GRPO (Shao et al. 2024): A_i = (r_i - mean_g) / (std_g + eps), std with Bessel's correction
  (as TRL).
- Dr. GRPO (Liu et al. 2025): A_i = r_i - mean_g; no std division (it favours easy and hard
  prompts over the informative ones).
- RLOO (Ahmadian et al. 2024): A_i = r_i - mean of the other G - 1 rewards = G / (G - 1) (r_i -
  mean_g).
- GAE (Schulman et al. 2016) for PPO with a value head: delta_t = r_t + gamma V_{t+1} - V_t,
  A_t = delta_t + gamma lambda A_{t+1}, returns R_t = A_t + V_t; r_t is the sequence reward on
  the last completion token (minus the per-token KL penalty when it goes in the reward).

Policy loss per token (PPO, Schulman et al. 2017), ratio rho_t = exp(logp_t - old_t):
  l_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps_low, 1 + eps_high))
with eps_high > eps_low the DAPO clip-higher (Yu et al. 2025); with dual clip c > 1 (Ye et al.
2020) tokens with A_t < 0 take min(l_t, -c A_t), so a huge ratio cannot blow the loss up.

KL to the reference, with log-ratio d_t = ref_t - logp_t (Schulman, "Approximating KL"):
  k1 = -d_t,  k2 = d_t^2 / 2,  k3 = exp(d_t) - d_t - 1  (GRPO's; never negative)
added to the loss as beta * k (beta = 0: the reference is never run). k1 and k3 are unbiased
estimates of the value KL(pi || ref) on tokens sampled from pi; k2's bias is small when pi is near
ref. As a loss their gradients differ from the value they estimate: in expectation over pi's samples
k1's gradient is zero, k2's is that of KL(pi || ref), and k3's is that of the forward
KL(ref || pi) (E_pi[(1 - ref/pi) grad log pi] = -E_ref[grad log pi]).

Aggregation of the per-token loss l_t over a batch (mask m_t: completion tokens that count):
- "token_mean": sum_bt l m / sum_bt m (DAPO; every token weighs the same),
- "seq_mean_token_mean": mean over rows of (sum_t l m / sum_t m) (the GRPO paper),
- "seq_mean_token_sum_norm": mean over rows of sum_t l m / L, L a constant (the longest
  completion allowed; Dr. GRPO), so long replies are not down-weighted.
As every objective here (jaxllm/objectives/lm.py), the loss is a sum over units with
metrics["weight"] their count (tokens, or rows with at least one counted token), so microbatches
and data parallelism give the global-batch value. Metrics use the same units (Dr. GRPO's report
the sequence mean of token means).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.models.reward import padding_inputs

ADVANTAGES = ("grpo", "dr_grpo", "rloo", "gae")
KL_ESTIMATORS = ("k1", "k2", "k3")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")

Metrics = dict[str, jax.Array]


# ---- advantages ---------------------------------------------------------------------------


def group_advantages(rewards_n, group_size: int, estimator: str = "grpo",
                     eps: float = 1e-4) -> np.ndarray:
  """Per-completion advantages [N] from rewards [N] laid out group after group (N = P * G)."""
  rewards = np.asarray(rewards_n, np.float64)
  if group_size < 2 or rewards.size % group_size:
    raise ValueError(f"{rewards.size} rewards do not split into groups of {group_size} (>= 2).")
  r_pg = rewards.reshape(-1, group_size)
  mean_p1 = r_pg.mean(axis=1, keepdims=True)
  if estimator == "grpo":
    out = (r_pg - mean_p1) / (r_pg.std(axis=1, ddof=1, keepdims=True) + eps)
  elif estimator == "dr_grpo":
    out = r_pg - mean_p1
  elif estimator == "rloo":
    out = group_size / (group_size - 1) * (r_pg - mean_p1)
  else:
    raise ValueError(f"group advantage estimator {estimator!r} is not one of grpo, dr_grpo, rloo.")
  return out.reshape(-1).astype(np.float32)


def uniform_groups(rewards_n, group_size: int) -> np.ndarray:
  """[P] True where every completion of a prompt got the same reward (no learning signal)."""
  r_pg = np.asarray(rewards_n).reshape(-1, group_size)
  return np.all(r_pg == r_pg[:, :1], axis=1)


def gae(rewards_bt: jax.Array, values_bt: jax.Array, mask_bt: jax.Array, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
  """(advantages, returns) [B, T] by generalised advantage estimation over masked tokens.

  The masked tokens of a row are its completion (contiguous); the value after the last one is 0
  (the episode ends), and positions outside the mask get 0.
  """
  mask_bt = mask_bt.astype(jnp.float32)
  values_bt = values_bt * mask_bt
  next_values_bt = jnp.concatenate([values_bt[:, 1:], jnp.zeros_like(values_bt[:, :1])], axis=1)
  deltas_bt = (rewards_bt + gamma * next_values_bt - values_bt) * mask_bt

  def back(carry_b, xs):
    delta_b, m_b = xs
    adv_b = (delta_b + gamma * lam * carry_b) * m_b
    return adv_b, adv_b

  _, adv_tb = jax.lax.scan(back, jnp.zeros(rewards_bt.shape[:1], jnp.float32),
                           (deltas_bt.T, mask_bt.T), reverse=True)
  advantages_bt = adv_tb.T
  return advantages_bt, (advantages_bt + values_bt) * mask_bt


def whiten(x_bt: jax.Array, mask_bt: jax.Array, eps: float = 1e-8) -> jax.Array:
  """(x - mean) / std over the masked entries (PPO's advantage normalisation); 0 elsewhere."""
  mask_bt = mask_bt.astype(jnp.float32)
  n = jnp.maximum(mask_bt.sum(), 1.0)
  mean = (x_bt * mask_bt).sum() / n
  var = (jnp.square(x_bt - mean) * mask_bt).sum() / n
  return (x_bt - mean) * jax.lax.rsqrt(var + eps) * mask_bt


# ---- per-token pieces -----------------------------------------------------------------------


def kl_estimate(logp_bt: jax.Array, ref_logp_bt: jax.Array, estimator: str = "k3") -> jax.Array:
  """Per-token estimate of KL(pi || ref) from the sampled tokens' log-probs."""
  d = ref_logp_bt - logp_bt
  if estimator == "k1":
    return -d
  if estimator == "k2":
    return 0.5 * jnp.square(d)
  if estimator == "k3":
    return jnp.exp(d) - d - 1.0
  raise ValueError(f"KL estimator {estimator!r} is not one of {KL_ESTIMATORS}.")


def token_logps(logits_btv: jax.Array, tokens_bt: jax.Array,
                temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """(log-prob of each token given the ones before, entropy of the distribution it was drawn
  from), float32 [B, T], at `temperature`; index 0 (no prediction) is 0."""
  logits_btv = logits_btv[:, :-1].astype(jnp.float32) / temperature
  logp_btv = jax.nn.log_softmax(logits_btv, axis=-1)
  picked_bt = jnp.take_along_axis(logp_btv, tokens_bt[:, 1:, None], axis=-1)[..., 0]
  entropy_bt = -jnp.sum(jnp.exp(logp_btv) * logp_btv, axis=-1)
  pad = lambda x: jnp.pad(x, ((0, 0), (1, 0)))
  return pad(picked_bt), pad(entropy_bt)


def aggregate(x_bt: jax.Array, mask_bt: jax.Array, mode: str,
              norm_length: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """(sum over units, number of units) of a per-token quantity under an aggregation mode."""
  mask_bt = mask_bt.astype(jnp.float32)
  if mode == "token_mean":
    return jnp.sum(x_bt * mask_bt), jnp.sum(mask_bt)
  tokens_b = jnp.sum(mask_bt, axis=1)
  rows_b = (tokens_b > 0).astype(jnp.float32)
  sums_b = jnp.sum(x_bt * mask_bt, axis=1)
  if mode == "seq_mean_token_mean":
    return jnp.sum(sums_b / jnp.maximum(tokens_b, 1.0)), jnp.sum(rows_b)
  if mode == "seq_mean_token_sum_norm":
    return jnp.sum(sums_b) / norm_length, jnp.sum(rows_b)
  raise ValueError(f"aggregation {mode!r} is not one of {AGGREGATIONS}.")


def clipped_surrogate(logp_bt, old_logp_bt, advantages_bt, clip_low: float = 0.2,
                      clip_high: float = 0.2, dual_clip: float = 0.0) -> tuple[jax.Array, Metrics]:
  """Per-token PPO loss with asymmetric clipping and optional dual clip, and per-token
  indicators: where the clipped term is the one taken (low / high side), and the ratio."""
  ratio_bt = jnp.exp(logp_bt - old_logp_bt)
  unclipped_bt = -advantages_bt * ratio_bt
  clipped_bt = -advantages_bt * jnp.clip(ratio_bt, 1.0 - clip_low, 1.0 + clip_high)
  loss_bt = jnp.maximum(unclipped_bt, clipped_bt)
  active_bt = (clipped_bt > unclipped_bt).astype(jnp.float32)
  if dual_clip:
    capped_bt = jnp.minimum(loss_bt, -dual_clip * advantages_bt)
    dual_bt = ((advantages_bt < 0) & (capped_bt < loss_bt)).astype(jnp.float32)
    loss_bt = jnp.where(advantages_bt < 0, capped_bt, loss_bt)
  else:
    dual_bt = jnp.zeros_like(loss_bt)
  return loss_bt, {"clip_fraction": active_bt,
                   "clip_low_fraction": active_bt * (ratio_bt < 1.0),
                   "clip_high_fraction": active_bt * (ratio_bt > 1.0),
                   "dual_clip_fraction": dual_bt, "ratio": ratio_bt}


def value_loss(values_bt, old_values_bt, returns_bt,
               clip: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Per-token 0.5 (V - R)^2, or with clip > 0 PPO's 0.5 max((V - R)^2, (V_clipped - R)^2) with
  V_clipped within clip of the rollout's value; and where the clipped term is taken."""
  unclipped_bt = jnp.square(values_bt - returns_bt)
  if not clip:
    return 0.5 * unclipped_bt, jnp.zeros_like(unclipped_bt)
  v_clipped_bt = old_values_bt + jnp.clip(values_bt - old_values_bt, -clip, clip)
  clipped_bt = jnp.square(v_clipped_bt - returns_bt)
  was_clipped_bt = (clipped_bt > unclipped_bt).astype(jnp.float32)
  return 0.5 * jnp.maximum(unclipped_bt, clipped_bt), was_clipped_bt


# ---- the objective --------------------------------------------------------------------------


def forward(params, batch: dict[str, jax.Array], model, rng=None) -> tuple[jax.Array, Any]:
  """(logits [B, T, V], values [B, T] or None) of rollout rows (right- or left-padded)."""
  positions_bt, segments_bt = padding_inputs(batch["valid"])
  out = model.apply({"params": params}, batch["tokens"], positions_bt, segments_bt,
                    deterministic=rng is None, rngs={} if rng is None else {"dropout": rng})
  return out if isinstance(out, tuple) else (out, None)


def policy_loss(params, batch: dict[str, jax.Array], rng, model, *, temperature: float = 1.0,
                clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float = 0.0,
                kl_coef: float = 0.0, kl_estimator: str = "k3",
                aggregation: str = "token_mean", norm_length: float = 1.0,
                entropy_coef: float = 0.0, value_coef: float = 0.0,
                value_clip: float = 0.0) -> tuple[jax.Array, Metrics]:
  """The RL objective on a batch of rollout rows (jaxllm/rl/rollout.py):

  tokens, valid, loss_mask, old_logps, advantages [B, T]; ref_logps when kl_coef > 0;
  old_values and returns when value_coef > 0 (the model then returns (logits, values)).
  loss = agg(l_t + kl_coef k_t - entropy_coef H_t) + value_coef agg(value loss).
  """
  logits_btv, values_bt = forward(params, batch, model, rng)
  logp_bt, entropy_bt = token_logps(logits_btv, batch["tokens"], temperature)
  mask_bt = batch["loss_mask"].astype(jnp.float32)
  pg_bt, indicators = clipped_surrogate(logp_bt, batch["old_logps"], batch["advantages"],
                                        clip_low, clip_high, dual_clip)
  token_loss_bt = pg_bt - entropy_coef * entropy_bt
  per_token = dict(indicators, policy_loss=pg_bt, entropy=entropy_bt, logp=logp_bt,
                   advantages=batch["advantages"],
                   approx_kl_old=kl_estimate(logp_bt, batch["old_logps"], "k3"))
  if kl_coef:
    kl_bt = kl_estimate(logp_bt, batch["ref_logps"], kl_estimator)
    token_loss_bt = token_loss_bt + kl_coef * kl_bt
    per_token["kl"] = kl_bt
  loss, weight = aggregate(token_loss_bt, mask_bt, aggregation, norm_length)
  if value_coef:
    if values_bt is None:
      raise ValueError("value_coef > 0 needs a model with a value head (PolicyWithValue).")
    v_loss_bt, v_clipped_bt = value_loss(values_bt, batch["old_values"], batch["returns"],
                                         value_clip)
    v_loss, _ = aggregate(v_loss_bt, mask_bt, aggregation, norm_length)
    loss = loss + value_coef * v_loss
    per_token.update(value_loss=v_loss_bt, value_clip_fraction=v_clipped_bt, values=values_bt)
  metric_mode = "seq_mean_token_mean" if aggregation == "seq_mean_token_sum_norm" else aggregation
  metrics = {k: aggregate(jax.lax.stop_gradient(v), mask_bt, metric_mode)[0]
             for k, v in per_token.items()}
  metrics["weight"] = weight
  return loss, metrics


def rollout_logps(params, batch: dict[str, jax.Array], model,
                  temperature: float = 1.0) -> tuple[jax.Array, Any]:
  """(per-token log-probs [B, T] at `temperature`, values [B, T] or None): what the trainer
  records for a rollout before updating (old log-probs, the reference's, old values)."""
  logits_btv, values_bt = forward(params, batch, model)
  return token_logps(logits_btv, batch["tokens"], temperature)[0], values_bt
