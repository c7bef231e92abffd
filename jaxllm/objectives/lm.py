"""Next-token prediction: masked cross-entropy with optional z-loss.

Objective contract (every file in jaxllm/objectives): a loss function has the signature
`loss_fn(params, batch, rng, model) -> (loss, metrics)` where `loss` is a SUM over the
objective's units (here target tokens) and `metrics["weight"]` is the number of units. Every
other metric is a sum over the same units. The train step adds these over microbatches and
divides by the total weight once, so gradient accumulation and data parallelism give exactly
the global-batch mean.
"""

from typing import Any

import jax
import jax.numpy as jnp


def token_cross_entropy(logits_btv: jax.Array, targets_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-token -log p(target) and logsumexp(logits), both float32 [B, T]."""
  logits_btv = logits_btv.astype(jnp.float32)
  lse_bt = jax.nn.logsumexp(logits_btv, axis=-1)
  target_logit_bt = jnp.take_along_axis(logits_btv, targets_bt[..., None], axis=-1)[..., 0]
  return lse_bt - target_logit_bt, lse_bt


def masked_lm_sums(logits_btv: jax.Array, targets_bt: jax.Array, mask_bt: jax.Array,
                   z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Sum of cross-entropy (+ z_loss * logsumexp^2, PaLM) over tokens where mask is nonzero."""
  mask_bt = mask_bt.astype(jnp.float32)
  nll_bt, lse_bt = token_cross_entropy(logits_btv, targets_bt)
  nll = jnp.sum(nll_bt * mask_bt)
  z = jnp.sum(jnp.square(lse_bt) * mask_bt)
  correct = jnp.sum((jnp.argmax(logits_btv, axis=-1) == targets_bt) * mask_bt)
  metrics = {"weight": jnp.sum(mask_bt), "nll": nll, "accuracy": correct}
  if z_loss:
    metrics["z_loss"] = z
  return nll + z_loss * z, metrics


def model_inputs(batch: dict[str, jax.Array]) -> dict[str, Any]:
  """Keyword arguments for Transformer.__call__ taken from a packed batch."""
  return dict(positions_bt=batch.get("positions"), segment_ids_bt=batch.get("segment_ids"))


def lm_loss(params, batch: dict[str, jax.Array], rng: jax.Array, model,
            z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Causal LM loss. batch: inputs, targets, loss_mask [B, T]; optional positions, segment_ids.

  rng=None means evaluation (no dropout).
  """
  logits_btv = model.apply({"params": params}, batch["inputs"], **model_inputs(batch),
                           deterministic=rng is None,
                           rngs={} if rng is None else {"dropout": rng})
  return masked_lm_sums(logits_btv, batch["targets"], batch["loss_mask"], z_loss)
