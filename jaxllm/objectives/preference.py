"""Preference losses on sequence log-probs: the DPO family, per pair of (chosen, rejected).

Notation, per pair: pc, pr = log pi(y_c | x), log pi(y_r | x) under the policy; rc, rr = the same
under the frozen reference; h = (pc - rc) - (pr - rr), the difference of log-ratios.

- DPO (Rafailov et al. 2023): loss = -log sigmoid(beta h).
- Conservative DPO / cDPO (Mitchell 2023): labels flipped with probability eps,
  loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).
- IPO (Azar et al. 2023): loss = (h - 1 / (2 beta))^2. As in TRL, IPO is usually given
  length-normalised log-probs (token means, `sequence_logprobs(..., average=True)`); the caller
  chooses.
- SimPO (Meng et al. 2024), reference-free: with length-averaged log-probs pc, pr,
  loss = -log sigmoid(beta (pc - pr) - gamma) (with the same optional label smoothing).
- ORPO (Hong et al. 2024), reference-free: with length-averaged log-probs,
  log odds(y) = p - log(1 - exp(p)), loss = NLL(chosen) - lambda log sigmoid(log odds(y_c) -
  log odds(y_r)); the NLL term is the SFT loss on the chosen response.

Every function returns per-pair losses [P] and the metrics researchers compare across runs
(TRL's names): rewards/chosen = beta (pc - rc), rewards/rejected = beta (pr - rr),
rewards/accuracy = 1[chosen > rejected], rewards/margin = their difference, logps/chosen,
logps/rejected (SimPO and ORPO, which have no reference, report beta * pc and beta * pr).
"""

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]


def sequence_logprobs(logits_btv: jax.Array, targets_bt: jax.Array, mask_bt: jax.Array,
                      average: bool = False) -> jax.Array:
  """Sum (or mean) over masked positions of log p(target); [B]. The mask is 1 on the response
  tokens only, so prompt and padding never count."""
  logp_btv = jax.nn.log_softmax(logits_btv.astype(jnp.float32), axis=-1)
  token_bt = jnp.take_along_axis(logp_btv, targets_bt[..., None], axis=-1)[..., 0]
  mask_bt = mask_bt.astype(jnp.float32)
  total_b = jnp.sum(token_bt * mask_bt, axis=-1)
  if average:
    return total_b / jnp.maximum(jnp.sum(mask_bt, axis=-1), 1.0)
  return total_b


def _reward_metrics(chosen_p: jax.Array, rejected_p: jax.Array, pc: jax.Array,
                    pr: jax.Array) -> Metrics:
  return {"rewards/chosen": chosen_p, "rewards/rejected": rejected_p,
          "rewards/accuracy": (chosen_p > rejected_p).astype(jnp.float32),
          "rewards/margin": chosen_p - rejected_p, "logps/chosen": pc, "logps/rejected": pr}


def _smoothed_sigmoid_loss(logits_p: jax.Array, label_smoothing: float) -> jax.Array:
  return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits_p)
          - label_smoothing * jax.nn.log_sigmoid(-logits_p))


def dpo_loss(pc, pr, rc, rr, beta: float = 0.1,
             label_smoothing: float = 0.0) -> tuple[jax.Array, Metrics]:
  """DPO (label_smoothing = 0) or conservative DPO (label_smoothing = eps in (0, 0.5))."""
  h = (pc - rc) - (pr - rr)
  losses = _smoothed_sigmoid_loss(beta * h, label_smoothing)
  return losses, _reward_metrics(beta * (pc - rc), beta * (pr - rr), pc, pr)


def ipo_loss(pc, pr, rc, rr, beta: float = 0.1) -> tuple[jax.Array, Metrics]:
  """IPO: squared distance of the log-ratio difference from 1 / (2 beta)."""
  h = (pc - rc) - (pr - rr)
  losses = jnp.square(h - 1.0 / (2.0 * beta))
  return losses, _reward_metrics(beta * (pc - rc), beta * (pr - rr), pc, pr)


def simpo_loss(pc, pr, beta: float = 2.0, gamma: float = 0.5,
               label_smoothing: float = 0.0) -> tuple[jax.Array, Metrics]:
  """SimPO on length-averaged log-probs: a target reward margin gamma, no reference."""
  losses = _smoothed_sigmoid_loss(beta * (pc - pr) - gamma, label_smoothing)
  return losses, _reward_metrics(beta * pc, beta * pr, pc, pr)


def orpo_loss(pc, pr, nll_chosen, lam: float = 0.1) -> tuple[jax.Array, Metrics]:
  """ORPO on length-averaged log-probs (< 0): the chosen NLL minus lam * log sigmoid of the
  log odds ratio. `nll_chosen` is the per-pair SFT loss on the chosen response."""
  # log(1 - exp(p)) for p < 0, computed without cancellation.
  log1m = lambda p: jnp.log(-jnp.expm1(jnp.minimum(p, -1e-7)))
  log_odds = (pc - pr) - (log1m(pc) - log1m(pr))
  ratio = jax.nn.log_sigmoid(log_odds)
  losses = nll_chosen - lam * ratio
  metrics = _reward_metrics(lam * pc, lam * pr, pc, pr)
  metrics.update({"orpo/log_odds_ratio": log_odds, "orpo/nll_chosen": nll_chosen})
  return losses, metrics
