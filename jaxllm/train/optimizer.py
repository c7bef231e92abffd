"""AdamW with global-norm clipping and a learning-rate schedule, from config.optimizer."""

import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxllm.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def learning_rate_schedule(opt_config, num_steps: int) -> optax.Schedule:
  """Linear warmup (lr / warmup at the first update, lr at update `warmup`), then cosine or
  linear decay to lr * min_lr_ratio, or constant."""
  lr, warmup = opt_config.lr, opt_config.warmup_steps
  end = lr * opt_config.min_lr_ratio
  decay_steps = max(num_steps - warmup, 1)
  if opt_config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=opt_config.min_lr_ratio)
  elif opt_config.schedule == "linear":
    decay = optax.linear_schedule(lr, end, decay_steps)
  elif opt_config.schedule == "constant":
    decay = optax.constant_schedule(lr)
  else:
    raise ConfigError(f"config.optimizer.schedule={opt_config.schedule!r} is not one of "
                      f"{SCHEDULES}.")
  if warmup <= 0:
    return decay
  warm = optax.linear_schedule(lr / warmup, lr, max(warmup - 1, 1))
  return optax.join_schedules([warm, decay], [warmup])


def decay_mask(params):
  """Weight decay on matrices and embeddings only (not on norms or biases).

  Decided by the parameter's name, since stacked (scanned) layers make norm scales 2-D.
  """
  def is_decayed(path, _):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(names) and names[-1] in ("kernel", "embedding")
  return jax.tree_util.tree_map_with_path(is_decayed, params)


class KeepZerosState(NamedTuple):
  masks: Any  # per param: a bool array (True: may change), or a scalar True when not targeted


def keep_zeros(targets: str) -> optax.GradientTransformation:
  """Entries of the params whose path matches `targets` (a regex over 'layer_0/mlp/up/kernel')
  that are zero when the optimizer starts get no update, so they stay exactly zero: pruning
  masks kept through fine-tuning. The masks are optimizer state, so checkpoints keep them."""
  def init(params):
    def mask(path, p):
      name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
      if not re.search(targets, name):
        return jnp.ones((), bool)
      if isinstance(p, nn.meta.AxisMetadata):  # logically partitioned: the mask is too
        return p.replace_boxed(p.unbox(apply_constraint=False) != 0)
      return p != 0
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    return KeepZerosState(jax.tree_util.tree_map_with_path(mask, params, is_leaf=is_box))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros((), u.dtype)), updates,
                        state.masks), state
  return optax.GradientTransformation(init, update)


def make_optimizer(opt_config, num_steps: int) -> optax.GradientTransformation:
  """clip_by_global_norm -> AdamW(schedule, b1, b2, eps, weight_decay on matrices), then
  keep_zeros(opt_config.keep_zeros) when set."""
  chain = []
  if opt_config.clip_norm > 0:
    chain.append(optax.clip_by_global_norm(opt_config.clip_norm))
  chain.append(optax.adamw(learning_rate_schedule(opt_config, num_steps), b1=opt_config.b1,
                           b2=opt_config.b2, eps=opt_config.eps,
                           weight_decay=opt_config.weight_decay, mask=decay_mask))
  if opt_config.get("keep_zeros"):
    chain.append(keep_zeros(opt_config.keep_zeros))
  return optax.chain(*chain)
