"""LoRA: low-rank adapters in their own param tree, over a frozen base model.

A layer W (kernel of shape in_shape + out_shape) targeted by `LoraConfig.targets` computes

  y = x . W + (alpha / r) * (dropout(x) . a) . b,   a: in_shape + (r,),  b: (r,) + out_shape

(Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"; rsLoRA scales by
alpha / sqrt(r), Kalajdzievski 2023). `a` starts uniform in +-1/sqrt(fan_in) (PEFT's default),
`b` at zero, so an untrained adapter leaves the model's output exactly unchanged.

The adapters live in the "lora" variable collection of `Transformer(cfg, lora=LoraConfig(...))`,
mirroring the module paths of the layers they adapt (`layer_0/attn/q/{a,b}`, or stacked
`[L, ...]` under `layers/` with scanned layers). `LoraModel` presents them as the model's only
params, so the training step, the optimizer (no state for the base) and checkpoints (adapters
only) need nothing LoRA-specific; the frozen base enters the compiled step as an argument.
`merge` folds the adapters into the base for sampling and export.
"""

import dataclasses
import functools
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxllm.errors import ConfigError
from jaxllm.models.frozen import WithFrozen

# Attention q/k/v/o and the MLP (gate/up/down), the targets of QLoRA and most LoRA recipes.
DEFAULT_TARGETS = r"(attn/(q|k|v|o)|mlp/(gate|up|down))$"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """rank r, alpha, dropout on the adapter input, and a regex over layer paths.

  `targets` is searched in the '/'-joined module path of each dense layer: `layer_3/attn/q`
  (or `layers/attn/q` with scanned layers), `layer_0/mlp/down`, `lm_head`.
  """

  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: str = DEFAULT_TARGETS
  rslora: bool = False  # scale by alpha / sqrt(rank) instead of alpha / rank

  @property
  def scale(self) -> float:
    return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

  def targets_path(self, path: tuple[str, ...]) -> bool:
    return re.search(self.targets, "/".join(path)) is not None

  @classmethod
  def from_config(cls, c) -> "LoraConfig | None":
    """config.lora -> LoraConfig, or None when config.lora.rank is 0 (full fine-tuning)."""
    if c.rank == 0:
      return None
    if c.rank < 0 or not 0.0 <= c.dropout < 1.0 or c.alpha <= 0:
      raise ConfigError(f"config.lora: rank={c.rank} (> 0, or 0 for full fine-tuning), "
                        f"alpha={c.alpha} (> 0) and dropout={c.dropout} (in [0, 1)) are out "
                        "of range.")
    try:
      re.compile(c.targets)
    except re.error as e:
      raise ConfigError(f"config.lora.targets={c.targets!r} is not a regular expression "
                        f"({e}).") from None
    return cls(rank=int(c.rank), alpha=float(c.alpha), dropout=float(c.dropout),
               targets=str(c.targets), rslora=bool(c.rslora))


@dataclasses.dataclass(frozen=True)
class LoraModel(WithFrozen):
  """A model whose params are its LoRA adapters; the frozen params are the base
  (jaxllm/models/frozen.py).

  `init(rngs, tokens)` -> {"params": adapters}; `apply({"params": adapters}, ...)` runs the
  base model (bound with `with_frozen(base_params)`, e.g. inside the jitted step) plus the
  adapters. `frozen_model` is the plain base model (its params' shapes and shardings), so
  `frozen_apply` runs the base without adapters.
  """

  def __post_init__(self):
    if getattr(self.model, "lora", None) is None:
      raise ValueError("LoraModel needs a model built with lora=LoraConfig(...).")

  @property
  def lora(self) -> LoraConfig:
    return self.model.lora

  @property
  def frozen_model(self) -> nn.Module:
    return self.model.clone(lora=None)

  def init(self, rngs, *args, **kwargs) -> dict[str, Any]:
    variables = self.model.init(rngs, *args, **kwargs)
    if "lora" not in variables:
      raise ConfigError(f"config.lora.targets={self.lora.targets!r} matches no layer; paths "
                        "look like 'layer_0/attn/q', 'layers/mlp/down' or 'lm_head'.")
    return {"params": variables["lora"]}

  def apply(self, variables, *args, **kwargs):
    return self.model.apply({"params": self.bound_frozen(), "lora": variables["params"]}, *args,
                            **kwargs)


def _low_rank_product(a: jax.Array, b: jax.Array, kernel_ndim: int) -> jax.Array:
  """a . b over the rank axis, vmapped over a leading layer axis when the kernel is stacked."""
  if kernel_ndim == a.ndim + b.ndim - 2:
    return jnp.tensordot(a, b, axes=1)
  if kernel_ndim == a.ndim + b.ndim - 3:  # scanned layers: a [L, ..., r], b [L, r, ...]
    return jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a, b)
  raise ValueError(f"adapter shapes {a.shape}, {b.shape} do not fit a kernel of rank "
                   f"{kernel_ndim}.")


@functools.partial(jax.jit, static_argnums=2)
def merge(base: Any, adapters: Any, lora: LoraConfig) -> Any:
  """Base params with every adapted kernel replaced by W + scale * a . b (same dtypes);
  compiled once per tree structure and LoRA config, and runs on sharded params."""
  def walk(base_node, adapter_node, path):
    if set(adapter_node) == {"a", "b"}:
      kernel = base_node["kernel"]
      delta = _low_rank_product(adapter_node["a"].astype(jnp.float32),
                                adapter_node["b"].astype(jnp.float32), kernel.ndim)
      return dict(base_node, kernel=(kernel.astype(jnp.float32) + lora.scale * delta)
                  .astype(kernel.dtype))
    out = dict(base_node)
    for key, child in adapter_node.items():
      if key not in base_node:
        raise ValueError(f"adapter {'/'.join(path + (key,))} has no base layer.")
      out[key] = walk(base_node[key], child, path + (key,))
    return out
  return walk(base, adapters, ())
