"""Logical axis rules, and placing parameters and batches on the mesh."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# Logical axis -> mesh axes. Parameters: `embed` is split over fsdp (ZeRO-3 style), heads, mlp
# and vocab over tensor (Megatron style). Activations (`act_*`): batch over data and fsdp.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("position", None),
    ("layers", None),
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)

BATCH_AXES = ("data", "fsdp")


def rules_from_config(rules: Sequence[Sequence[Any]]) -> tuple[tuple[str, Any], ...]:
  """ConfigDict lists -> hashable tuples that flax accepts."""
  out = []
  for name, axes in rules:
    out.append((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes))
  return tuple(out)


def logical_to_sharding(logical_tree: Any, mesh: Mesh, rules) -> Any:
  """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, rules)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Builds global arrays from this process's rows (its shard of the global batch)."""
  out = {}
  for key, local in local_batch.items():
    local = np.asarray(local)
    global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
    out[key] = jax.make_array_from_process_local_data(batch_sharding(mesh, local.ndim), local,
                                                      global_shape)
  return out


def process_rows(num_rows: int) -> slice:
  """This process's rows of a global batch of `num_rows` that every process holds whole: the
  process_index-th of process_count equal parts (the rows `global_batch` takes from it)."""
  count = jax.process_count()
  if num_rows % count:
    raise ValueError(f"{num_rows} rows cannot be split evenly over {count} processes.")
  per = num_rows // count
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def local_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This process's share (`process_rows`) of rows every process holds whole."""
  if jax.process_count() == 1:
    return rows
  part = process_rows(len(next(iter(rows.values()))))
  return {k: v[part] for k, v in rows.items()}


def fetch(tree: Any) -> Any:
  """Numpy copies of the arrays in `tree`, each whole in every process (arrays spread over
  several processes are gathered; jax.device_get reads only arrays this process holds)."""
  def one(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return jax.device_get(x)
    if x.is_fully_replicated:  # this process holds a whole copy
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(one, tree)


def gather_rows(tree: Any) -> Any:
  """Every process's rows of `tree` (numpy arrays with rows first), concatenated in process
  order, in every process: the inverse of `local_rows`."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)),
                      tree)
