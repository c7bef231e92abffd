"""Logical axis rules, and placing parameters and batches on the mesh."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
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
