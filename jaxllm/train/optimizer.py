"""AdamW with global-norm clipping and a learning-rate schedule, from config.optimizer."""

import jax
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
    raise ConfigError(f"config.optimizer.schedule={opt_config.schedule!r} is not one of {SCHEDULES}.")
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


def make_optimizer(opt_config, num_steps: int) -> optax.GradientTransformation:
  """clip_by_global_norm -> AdamW(schedule, b1, b2, eps, weight_decay on matrices)."""
  chain = []
  if opt_config.clip_norm > 0:
    chain.append(optax.clip_by_global_norm(opt_config.clip_norm))
  chain.append(optax.adamw(learning_rate_schedule(opt_config, num_steps), b1=opt_config.b1,
                           b2=opt_config.b2, eps=opt_config.eps,
                           weight_decay=opt_config.weight_decay, mask=decay_mask))
  return optax.chain(*chain)
