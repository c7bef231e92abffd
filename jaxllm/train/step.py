"""The compiled train step: step(state, batch, rng) -> (state, metrics), for any objective.

Frozen params (a LoRA base) enter as a fourth argument, `step(state, batch, rng, frozen)`: they
are bound to the model inside the trace (`model.with_frozen(frozen)`), get no gradient and no
optimizer state, and are never donated.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxllm.errors import ConfigError
from jaxllm.parallel import target

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]

# XLA options that made the train step faster on a backend (docs/benchmarks.md): on CPU the
# YNNPACK library fusions ran the step's matmuls and reductions slower than XLA's own emitters
# (nanoGPT's Shakespeare configuration: 42.9 -> 36.7 ms per step).
AUTO_XLA_OPTIONS = {"cpu": {"xla_cpu_experimental_ynn_fusion_type": ""}}


def xla_options(spec: str, backend: str | None = None) -> dict[str, str]:
  """compiler_options for jax.jit from config.train.xla_options.

  "auto": AUTO_XLA_OPTIONS for the backend; "": none; otherwise "name=value,name=value" with
  names of XLA debug options (e.g. xla_cpu_enable_fast_math=true).
  """
  if spec == "auto":
    return dict(AUTO_XLA_OPTIONS.get(backend or target.platform(), {}))
  options = {}
  for item in filter(None, (part.strip() for part in spec.split(","))):
    name, eq, value = item.partition("=")
    if not eq or not name.startswith("xla_"):
      raise ConfigError(
          f"config.train.xla_options: {item!r} is not name=value with an XLA option name "
          "(xla_...); write e.g. 'xla_cpu_enable_fast_math=true', or 'auto' or ''.")
    options[name.strip()] = value.strip()
  return options


def split_microbatches(batch: dict[str, jax.Array], num: int) -> dict[str, jax.Array]:
  """[B, ...] -> [num, B / num, ...], microbatch m taking rows m, m + num, ...

  Strided rows keep every microbatch spread over all data shards, so no data moves between
  devices.
  """
  def split(x):
    return x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def accumulate_gradients(loss_fn: LossFn, model, params, batch, rng, num_microbatches: int):
  """Sums of gradients and metrics over microbatches (lax.scan, so memory holds one)."""
  def grads_and_sums(mb, r):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb, r, model)
    return grads, dict(metrics, loss=loss)

  if num_microbatches == 1:
    return grads_and_sums(batch, rng)
  microbatches = split_microbatches(batch, num_microbatches)

  def body(carry, xs):
    mb, i = xs
    out = grads_and_sums(mb, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, carry, out), None

  first = jax.tree.map(lambda x: x[0], microbatches)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grads_and_sums, first, rng))
  sums, _ = jax.lax.scan(body, zeros, (microbatches, jnp.arange(num_microbatches)))
  return sums


def bind_frozen(model, frozen):
  """The model the loss sees: `model` itself, or with its frozen params bound."""
  return model if frozen is None else model.with_frozen(frozen)


def make_train_step(loss_fn: LossFn, model, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, num_microbatches: int = 1,
                    epochs: int = 1, minibatches: int = 1):
  """Builds step(state, batch, rng, frozen=None) -> (state, metrics); jit it with donation of
  `state`.

  The objective returns sums; here they are divided by the total weight of the global batch.
  A non-finite loss, gradient or update leaves params and optimizer state unchanged and is
  counted in state["nonfinite_streak"] / state["nonfinite_total"].

  With epochs * minibatches > 1 (PPO-style RL) one step makes that many optimizer updates on
  the batch: each epoch shuffles the rows (a permutation from the step's key) and splits them
  into `minibatches`; the updates run in a lax.scan and the metrics are their means (the first
  update's loss is also reported, as loss_first). state["step"] counts steps, not updates.
  """
  def update(state, batch, rng, frozen, index):
    grads, sums = accumulate_gradients(loss_fn, bind_frozen(model, frozen), state["params"],
                                       batch, rng, num_microbatches)
    weight = sums.pop("weight")
    denom = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    metrics = {k: v / denom for k, v in sums.items()}
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    finite = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
              & jnp.isfinite(optax.tree.norm(updates)))
    params = optax.apply_updates(state["params"], updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = dict(
        state,
        params=keep(params, state["params"]),
        opt_state=keep(opt_state, state["opt_state"]),
        nonfinite_streak=jnp.where(finite, 0, state["nonfinite_streak"] + 1),
        nonfinite_total=state["nonfinite_total"] + (~finite).astype(jnp.int32),
    )
    metrics.update(weight=weight, grad_norm=grad_norm, skipped=(~finite).astype(jnp.float32),
                   nonfinite_streak=new_state["nonfinite_streak"])
    if schedule is not None:  # optax counts only applied updates
      metrics["lr"] = schedule(index - state["nonfinite_total"])
    return new_state, metrics

  num_updates = epochs * minibatches

  def step(state: dict[str, Any], batch: dict[str, jax.Array], rng: jax.Array, frozen=None):
    rng = jax.random.fold_in(rng, state["step"])
    if num_updates == 1:
      new_state, metrics = update(state, batch, rng, frozen, state["step"])
      return dict(new_state, step=state["step"] + 1), metrics
    rows = jax.tree.leaves(batch)[0].shape[0]
    orders = jnp.stack([jax.random.permutation(jax.random.fold_in(rng, num_updates + e), rows)
                        for e in range(epochs)])  # [E, rows]

    def minibatch(i):
      picked = jax.lax.dynamic_slice_in_dim(orders[i // minibatches],
                                            (i % minibatches) * (rows // minibatches),
                                            rows // minibatches)
      return jax.tree.map(lambda x: jnp.take(x, picked, axis=0), batch)

    def body(state, i):
      return update(state, minibatch(i), jax.random.fold_in(rng, i), frozen,
                    state["step"] * num_updates + i)

    new_state, per_update = jax.lax.scan(body, state, jnp.arange(num_updates))
    metrics = jax.tree.map(lambda x: jnp.mean(x, axis=0), per_update)
    metrics.update(loss_first=per_update["loss"][0], weight=jnp.sum(per_update["weight"]),
                   nonfinite_streak=per_update["nonfinite_streak"][-1],
                   skipped=jnp.sum(per_update["skipped"]))
    if "lr" in per_update:
      metrics["lr"] = per_update["lr"][-1]
    return dict(new_state, step=state["step"] + 1), metrics

  return step


def make_eval_step(loss_fn: LossFn, model):
  """eval_step(params, batch, frozen=None) -> metric sums (including weight), deterministic."""
  def eval_step(params, batch, frozen=None):
    loss, metrics = loss_fn(params, batch, None, bind_frozen(model, frozen))
    return dict(metrics, loss=loss)
  return eval_step
