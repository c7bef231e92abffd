"""Next-token prediction: masked cross-entropy with optional z-loss.

Objective contract (every file in jaxllm/objectives): a loss function has the signature
`loss_fn(params, batch, rng, model) -> (loss, metrics)` where `loss` is a SUM over the
objective's units (here target tokens) and `metrics["weight"]` is the number of units. Every
other metric is a sum over the same units. The train step adds these over microbatches and
divides by the total weight once, so gradient accumulation and data parallelism give exactly
the global-batch mean.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxllm.compress import quantize
from jaxllm.errors import ConfigError
from jaxllm.models.lora import LoraModel
from jaxllm.models.transformer import dense


def token_cross_entropy(logits_btv: jax.Array,
                        targets_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
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


def chunked_lm_sums(hidden_btd: jax.Array, head_dv: jax.Array, targets_bt: jax.Array,
                    mask_bt: jax.Array, chunk: int,
                    z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """masked_lm_sums(hidden . head, ...) without the whole [B, T, V] logits in memory.

  The sequence is cut into T / chunk pieces; a lax.scan computes each piece's float32 logits
  [B, chunk, V] and its sums, under jax.checkpoint so the backward pass recomputes them piece by
  piece as well. Peak logits memory drops by T / chunk at the cost of one more head matmul.
  Chunks run along the sequence so each keeps the batch sharding.
  """
  b, t, d = hidden_btd.shape
  if chunk <= 0 or t % chunk:
    raise ConfigError(f"config.train.loss_chunk={chunk} must divide the sequence length {t}; "
                      "pick a divisor (or 0 for the whole logits at once).")
  pieces = lambda x: x.reshape(b, t // chunk, chunk, *x.shape[2:]).swapaxes(0, 1)

  @jax.checkpoint
  def piece_sums(hidden_bcd, targets_bc, mask_bc):
    # The head enters in its param dtype: the scan sums its gradient over pieces in that dtype.
    logits_bcv = dense(hidden_bcd, head_dv.astype(hidden_bcd.dtype), 1, jnp.float32)
    logits_bcv = nn.with_logical_constraint(logits_bcv, ("act_batch", "act_len", "act_vocab"))
    return masked_lm_sums(logits_bcv, targets_bc, mask_bc, z_loss)

  def body(total, xs):
    loss, metrics = piece_sums(*xs)
    return jax.tree.map(jnp.add, total, (loss, metrics)), None

  xs = (pieces(hidden_btd), pieces(targets_bt), pieces(mask_bt))
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                       jax.eval_shape(piece_sums, *(jax.tree.map(lambda x: x[0], xs))))
  total, _ = jax.lax.scan(body, zeros, xs)
  return total


def output_head(model, params) -> jax.Array:
  """The [D, V] projection that turns the model's final hidden state into logits (param
  dtype): the tied embedding, transposed, or lm_head's kernel. For a LoRA model, the frozen
  base's (the head must not be adapted), dequantized when that base is int8."""
  cfg = model.cfg
  if isinstance(model, LoraModel):
    if model.lora.targets_path(("lm_head",)):
      raise ConfigError("config.train.loss_chunk > 0 computes logits outside the model, which "
                        "cannot apply a LoRA adapter on lm_head; leave lm_head out of "
                        "config.lora.targets or set config.train.loss_chunk=0.")
    params = model.bound_frozen()
  if cfg.tie_embeddings:
    head = params["embed"]
    if cfg.quant == "int8":  # an int8 (QLoRA) base: one scale per vocabulary row
      return quantize.dequantize_array(head["embedding"], head["scale"], (1,)).T
    return head["embedding"].T
  head = params["lm_head"]
  if cfg.quant == "int8":
    return quantize.dequantize_array(head["kernel"], head["scale"], (0,))
  return head["kernel"]


def hidden_model(model):
  """The same model returning its final hidden state [B, T, D] instead of logits."""
  if isinstance(model, LoraModel):
    return dataclasses.replace(model, model=model.model.clone(output="hidden"))
  return model.clone(output="hidden")


def model_inputs(batch: dict[str, jax.Array]) -> dict[str, Any]:
  """Keyword arguments for Transformer.__call__ taken from a packed batch."""
  return dict(positions_bt=batch.get("positions"), segment_ids_bt=batch.get("segment_ids"))


def lm_loss(params, batch: dict[str, jax.Array], rng: jax.Array, model,
            z_loss: float = 0.0, chunk: int = 0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Causal LM loss. batch: inputs, targets, loss_mask [B, T]; optional positions, segment_ids.

  rng=None means evaluation (no dropout). chunk > 0: the cross-entropy runs over pieces of
  `chunk` positions (chunked_lm_sums), never holding the whole float32 logits.
  """
  if chunk:
    hidden_btd = hidden_model(model).apply(
        {"params": params}, batch["inputs"], **model_inputs(batch), deterministic=rng is None,
        rngs={} if rng is None else {"dropout": rng})
    return chunked_lm_sums(hidden_btd, output_head(model, params), batch["targets"],
                           batch["loss_mask"], chunk, z_loss)
  logits_btv = model.apply({"params": params}, batch["inputs"], **model_inputs(batch),
                           deterministic=rng is None,
                           rngs={} if rng is None else {"dropout": rng})
  return masked_lm_sums(logits_btv, batch["targets"], batch["loss_mask"], z_loss)
