"""A model's params as a pytree: built abstractly, unboxed, their shardings on a mesh, counted.

Every param carries logical axis names (nn.with_logical_partitioning); `params_shardings` maps
them to a mesh with the rules of jaxllm/parallel/sharding.py. The train state (jaxllm/train/
state.py), run loading (jaxllm/runs.py), Hugging Face import and quantization read params
through these.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxllm.parallel import sharding as sharding_lib


def unbox(tree: Any) -> Any:
  """Strips logical-partitioning boxes without adding sharding constraints (safe outside jit)."""
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                      is_leaf=is_box)


def init_params_fn(model: nn.Module, seq_len: int) -> Callable[[jax.Array], Any]:
  """rng -> boxed (logically partitioned) params of `model` for [1, seq_len] token inputs."""
  def init(rng):
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    return model.init({"params": rng, "dropout": rng}, tokens)["params"]
  return init


def params_shardings(model: nn.Module, mesh: Mesh, rules, seq_len: int) -> Any:
  """NamedSharding tree for `model`'s params (from their logical axis names)."""
  boxed = jax.eval_shape(init_params_fn(model, seq_len), jax.random.key(0))
  return sharding_lib.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules)


def count_params(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


def param_bytes(params: Any) -> int:
  """Bytes the params take in memory (int8 weights count one byte each)."""
  return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(params))
