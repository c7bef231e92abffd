"""Magnitude pruning of dense kernels: global unstructured, and 2:4 semi-structured.

- unstructured: the k = round(sparsity * N) weights of smallest |w| over ALL targeted kernels
  together (N weights) are removed, so layers lose different fractions (global magnitude
  pruning, as in Han et al. 2015 / the lottery-ticket line of work). Exactly k are removed:
  ties are broken by position.
- 2:4: in every group of 4 consecutive weights along a kernel's input axis (the contracted
  dimension, as NVIDIA's sparse tensor cores require), the 2 of largest |w| are kept, so
  sparsity is exactly 50% in every group.

Masks are boolean trees keyed by parameter path ("layer_0/mlp/up/kernel": True = kept). A
recovery fine-tune keeps them with the optimizer's `keep_zeros` (jaxllm/train/optimizer.py):
weights that are zero when fine-tuning starts get no update, so they stay exactly zero.
"""

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.compress import quantize
from jaxllm.errors import ConfigError
from jaxllm.models.config import ModelConfig

STRUCTURES = ("unstructured", "2:4")
# The attention and MLP projections, the layers SparseGPT and Wanda prune; not the embedding
# or the output head.
DEFAULT_TARGETS = r"(attn/(q|k|v|o)|mlp/(gate|up|down))/kernel$"


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def targeted(params: Any, targets: str) -> dict[str, jax.Array]:
  """{path: kernel} of the params whose '/'-joined path matches `targets` (a regex)."""
  found = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_str(path)
    if re.search(targets, name):
      found[name] = leaf
  if not found:
    raise ConfigError(f"config.prune.targets={targets!r} matches no parameter; paths look like "
                      "'layer_0/attn/q/kernel' or 'layers/mlp/up/kernel'.")
  return found


def unstructured_masks(kernels: dict[str, jax.Array], sparsity: float) -> dict[str, np.ndarray]:
  """Global magnitude masks removing exactly round(sparsity * N) of the N weights."""
  if not 0.0 <= sparsity < 1.0:
    raise ConfigError(f"config.prune.sparsity={sparsity} must be in [0, 1).")
  magnitudes = [np.abs(np.asarray(w, np.float32)).ravel() for w in kernels.values()]
  flat = np.concatenate(magnitudes)
  k = int(round(sparsity * flat.size))
  keep = np.ones(flat.size, bool)
  if k:
    keep[np.argsort(flat, kind="stable")[:k]] = False
  masks, start = {}, 0
  for (name, w), m in zip(kernels.items(), magnitudes):
    masks[name] = keep[start:start + m.size].reshape(w.shape)
    start += m.size
  return masks


def two_four_mask(w: jax.Array, axis: int) -> np.ndarray:
  """Keeps the 2 largest |w| of every 4 consecutive entries along `axis`."""
  w = np.moveaxis(np.abs(np.asarray(w, np.float32)), axis, -1)
  groups = w.reshape(*w.shape[:-1], w.shape[-1] // 4, 4)
  order = np.argsort(-groups, axis=-1, kind="stable")  # largest first; ties by position
  keep = np.zeros(groups.shape, bool)
  np.put_along_axis(keep, order[..., :2], True, axis=-1)
  return np.moveaxis(keep.reshape(w.shape), -1, axis)


def two_four_masks(kernels: dict[str, jax.Array], cfg: ModelConfig) -> dict[str, np.ndarray]:
  input_axes = quantize.kernel_input_axes(cfg)
  masks = {}
  for name, w in kernels.items():
    if name not in input_axes:
      raise ConfigError(f"config.prune.targets matches {name}, which is not a dense kernel; "
                        "2:4 pruning groups a kernel's input axis.")
    axis = input_axes[name][-1]
    if w.shape[axis] % 4:
      raise ConfigError(f"{name} has {w.shape[axis]} inputs along axis {axis}, not a multiple "
                        "of 4, so it cannot be pruned 2:4; leave it out of config.prune.targets.")
    masks[name] = two_four_mask(w, axis)
  return masks


def magnitude_masks(params: Any, cfg: ModelConfig, sparsity: float,
                    structure: str = "unstructured",
                    targets: str = DEFAULT_TARGETS) -> dict[str, np.ndarray]:
  """{path: bool mask} over the targeted kernels of `Transformer(cfg)` params."""
  kernels = targeted(params, targets)
  if structure == "unstructured":
    return unstructured_masks(kernels, sparsity)
  if structure == "2:4":
    return two_four_masks(kernels, cfg)
  raise ConfigError(f"config.prune.structure={structure!r} is not one of {STRUCTURES}.")


def apply_masks(params: Any, masks: dict[str, np.ndarray]) -> Any:
  """`params` with the masked-out entries set to zero."""
  def apply(path, leaf):
    mask = masks.get(path_str(path))
    return leaf if mask is None else jnp.where(mask, leaf, jnp.zeros((), leaf.dtype))
  return jax.tree_util.tree_map_with_path(apply, params)


def sparsity_of(params: Any, targets: str = DEFAULT_TARGETS) -> dict[str, float]:
  """Fraction of exact zeros in the targeted kernels, and in all params."""
  kernels = targeted(params, targets)
  zeros = sum(int(jnp.sum(w == 0)) for w in kernels.values())
  size = sum(int(w.size) for w in kernels.values())
  all_zeros = sum(int(jnp.sum(w == 0)) for w in jax.tree.leaves(params))
  all_size = sum(int(w.size) for w in jax.tree.leaves(params))
  return {"targeted": zeros / size, "targeted_weights": size, "all": all_zeros / all_size}
