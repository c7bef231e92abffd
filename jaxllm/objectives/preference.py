"""Preference losses on sequence log-probs: the DPO family, per pair of (chosen, rejected).

Notation, per pair: pc, pr = log pi(y_c | x), log pi(y_r | x) under the policy; rc, rr = the same
under the frozen reference; h = (pc - rc) - (pr - rr), the difference of log-ratios.

- DPO (Rafailov et al. 2023): loss = -log sigmoid(beta h).
- Conservative DPO / cDPO (Mitchell 2023): labels flipped with probability eps,
  loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).
- DPO-Positive / DPOP (Pal et al. 2024, "Smaug"): DPO with a penalty whenever the policy puts
  less mass than the reference on the chosen reply, loss = -log sigmoid(beta (h - lambda
  max(0, rc - pc))). Pairs whose replies differ in a token or two (a wrong final number) let
  plain DPO lower both log-probs together; the penalty forbids that for the chosen one.
- IPO (Azar et al. 2023): loss = (h - 1 / (2 beta))^2. As in TRL, IPO is usually given
  length-normalised log-probs (token means, `sequence_logprobs(..., average=True)`); the caller
  chooses.
- SimPO (Meng et al. 2024), reference-free: with length-averaged log-probs pc, pr,
  loss = -log sigmoid(beta (pc - pr) - gamma) (with the same optional label smoothing).
- ORPO (Hong et al. 2024), reference-free: with length-averaged log-probs,
  log odds(y) = p - log(1 - exp(p)), loss = NLL(chosen) - lambda log sigmoid(log odds(y_c) -
  log odds(y_r)); the NLL term is the SFT loss on the chosen response.

- RPO (Pang et al. 2024): any of these plus `sft_weight` times the chosen reply's token-mean
  NLL, which keeps DPO from lowering the chosen log-probs along with the rejected ones.

Every function returns per-pair losses [P] and the metrics researchers compare across runs
(TRL's names): rewards/chosen = beta (pc - rc), rewards/rejected = beta (pr - rr),
rewards/accuracies = 1[chosen > rejected], rewards/margins = their difference, logps/chosen,
logps/rejected (SimPO and ORPO, which have no reference, report beta * pc and beta * pr); ORPO
adds log_odds_chosen (the log odds ratio), log_odds_ratio (its log sigmoid) and nll_loss.

`preference_loss` is the objective (jaxllm/objectives/lm.py states the contract) on batches of
pair rows (jaxllm/data/preferences.py). The reference log-probs come from the batch
(`reference="precomputed"`: ref_chosen_logps, ref_rejected_logps, sums over the reply, computed
once before training) or from a forward pass of the frozen reference in the step
(`reference="in_step"`, see jaxllm/models/frozen.py). SimPO and ORPO need none.
"""

import jax
import jax.numpy as jnp

from jaxllm.models.frozen import WithFrozen
from jaxllm.models.reward import padding_inputs

LOSS_TYPES = ("dpo", "dpop", "ipo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")
LENGTH_AVERAGED = ("ipo", "simpo", "orpo")  # these compare token-mean log-probs
REFERENCES = ("in_step", "precomputed")

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
          "rewards/accuracies": (chosen_p > rejected_p).astype(jnp.float32),
          "rewards/margins": chosen_p - rejected_p, "logps/chosen": pc, "logps/rejected": pr}


def _smoothed_sigmoid_loss(logits_p: jax.Array, label_smoothing: float) -> jax.Array:
  return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits_p)
          - label_smoothing * jax.nn.log_sigmoid(-logits_p))


def dpo_loss(pc, pr, rc, rr, beta: float = 0.1,
             label_smoothing: float = 0.0) -> tuple[jax.Array, Metrics]:
  """DPO (label_smoothing = 0) or conservative DPO (label_smoothing = eps in (0, 0.5))."""
  h = (pc - rc) - (pr - rr)
  losses = _smoothed_sigmoid_loss(beta * h, label_smoothing)
  return losses, _reward_metrics(beta * (pc - rc), beta * (pr - rr), pc, pr)


def dpop_loss(pc, pr, rc, rr, beta: float = 0.1,
              lam: float = 50.0) -> tuple[jax.Array, Metrics]:
  """DPO-Positive: DPO's logit less lam times how far the chosen log-prob fell below the
  reference's (zero while the policy keeps the chosen reply at least as likely)."""
  shortfall = jnp.maximum(0.0, rc - pc)
  losses = -jax.nn.log_sigmoid(beta * ((pc - rc) - (pr - rr) - lam * shortfall))
  metrics = _reward_metrics(beta * (pc - rc), beta * (pr - rr), pc, pr)
  metrics["dpop/shortfall"] = shortfall
  return losses, metrics


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
  # TRL's ORPO names: log_odds_chosen is the log odds ratio itself, log_odds_ratio its
  # log sigmoid (the term the loss maximises).
  metrics.update({"log_odds_chosen": log_odds, "log_odds_ratio": ratio, "nll_loss": nll_chosen})
  return losses, metrics


def both_sides(batch: dict[str, jax.Array], key: str) -> jax.Array:
  """batch["chosen_KEY"] rows then batch["rejected_KEY"] rows: [2P, ...], one forward pass."""
  return jnp.concatenate([batch[f"chosen_{key}"], batch[f"rejected_{key}"]])


def pair_inputs(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Chosen rows then rejected rows [2P, L - 1], shifted for next-token prediction."""
  tokens, valid, mask = (both_sides(batch, k) for k in ("tokens", "valid", "loss_mask"))
  positions, segment_ids = padding_inputs(valid[:, :-1])
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask[:, 1:],
          "positions": positions, "segment_ids": segment_ids}


def _logps(apply, seq: dict[str, jax.Array], **kwargs) -> jax.Array:
  """Sum of reply log-probs [2P] under `apply` (a model's apply bound to its params)."""
  logits = apply(seq["inputs"], positions_bt=seq["positions"],
                 segment_ids_bt=seq["segment_ids"], **kwargs)
  return sequence_logprobs(logits, seq["targets"], seq["loss_mask"])


def reference_logps(params, batch: dict[str, jax.Array], model) -> tuple[jax.Array, jax.Array]:
  """Sums of reply log-probs of chosen and rejected [P] each under `params` (no dropout): the
  reference log-probs that `reference="precomputed"` reads from the batch."""
  seq = pair_inputs(batch)
  logps = _logps(lambda *a, **k: model.apply({"params": params}, *a, **k), seq)
  return jnp.split(logps, 2)


def preference_loss(params, batch: dict[str, jax.Array], rng, model, *, loss_type: str = "dpo",
                    beta: float = 0.1, label_smoothing: float = 0.0, gamma: float = 0.5,
                    sft_weight: float = 0.0, dpop_lambda: float = 50.0,
                    reference: str = "in_step") -> tuple[jax.Array, Metrics]:
  """The DPO family on a batch of pair rows: sums over pairs, metrics["weight"] = pairs.

  loss_type: dpo (with label_smoothing > 0: conservative DPO) | dpop (penalty dpop_lambda) |
  ipo | simpo (margin gamma) | orpo (beta is its lambda). sft_weight > 0 adds the chosen NLL (RPO).
  """
  seq = pair_inputs(batch)
  sums = _logps(lambda *a, **k: model.apply({"params": params}, *a, **k), seq,
                deterministic=rng is None, rngs={} if rng is None else {"dropout": rng})
  counts = jnp.maximum(jnp.sum(seq["loss_mask"], axis=-1), 1.0)
  average = loss_type in LENGTH_AVERAGED
  scale = (lambda x: x / counts) if average else (lambda x: x)
  pc, pr = jnp.split(scale(sums), 2)
  if loss_type not in REFERENCE_FREE:
    if reference == "precomputed":
      ref = jnp.concatenate([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    else:
      if not isinstance(model, WithFrozen):
        raise ValueError("reference='in_step' runs the reference's frozen params: pass a "
                         "WithFrozen or LoraModel model (the train loop binds frozen_params).")
      ref = _logps(model.frozen_apply, seq)
    rc, rr = jnp.split(scale(ref), 2)
  nll_chosen = -jnp.split(sums / counts, 2)[0]  # token-mean NLL of the chosen reply
  if loss_type == "dpo":
    losses, metrics = dpo_loss(pc, pr, rc, rr, beta, label_smoothing)
  elif loss_type == "dpop":
    losses, metrics = dpop_loss(pc, pr, rc, rr, beta, dpop_lambda)
  elif loss_type == "ipo":
    losses, metrics = ipo_loss(pc, pr, rc, rr, beta)
  elif loss_type == "simpo":
    losses, metrics = simpo_loss(pc, pr, beta, gamma, label_smoothing)
  elif loss_type == "orpo":
    losses, metrics = orpo_loss(pc, pr, nll_chosen, beta)
  else:
    raise ValueError(f"loss_type={loss_type!r} is not one of {LOSS_TYPES}.")
  if sft_weight:
    losses = losses + sft_weight * nll_chosen
  metrics = dict(metrics, nll_chosen=nll_chosen, truncated=batch["truncated"])
  return pair_sums(losses, metrics, batch["pair_weight"])


def pair_sums(losses: jax.Array, metrics: Metrics,
              weight: jax.Array) -> tuple[jax.Array, Metrics]:
  """Per-pair losses and metrics -> sums weighted by pair_weight (0 on padding rows), with
  metrics["weight"] = the number of real pairs (the objective contract)."""
  weight = weight.astype(jnp.float32)
  out = {k: jnp.sum(v.astype(jnp.float32) * weight) for k, v in metrics.items()}
  out["weight"] = jnp.sum(weight)
  return jnp.sum(losses * weight), out
