"""Train state: a dict pytree created directly with its shardings on the mesh.

state = {"step": int32[], "params": ..., "opt_state": ..., "nonfinite_streak": int32[],
         "nonfinite_total": int32[]}
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxllm.models.params import init_params_fn, unbox
from jaxllm.parallel import sharding as sharding_lib


def _boxed_state(params_boxed, tx: optax.GradientTransformation) -> dict[str, Any]:
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params_boxed,
      "opt_state": tx.init(params_boxed),  # moments inherit the params' logical names
      "nonfinite_streak": jnp.zeros((), jnp.int32),
      "nonfinite_total": jnp.zeros((), jnp.int32),
  }


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, rules,
                    seq_len: int) -> tuple[Any, Any]:
  """(abstract unboxed state, NamedSharding tree) without allocating anything."""
  init = init_params_fn(model, seq_len)
  # The key is made inside the trace: no array is created (a compile-only mesh has no devices
  # to put one on).
  boxed = jax.eval_shape(lambda: _boxed_state(init(jax.random.key(0)), tx))
  shardings = sharding_lib.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          unbox(boxed), shardings)
  return abstract, shardings


def create_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                 shardings: Any, seq_len: int, params: Any = None) -> dict[str, Any]:
  """Initialises the state already sharded (jitted init with out_shardings from state_shardings).

  If `params` is given (e.g. from a pretrained checkpoint) they replace the fresh ones and the
  optimizer state is built for them.
  """
  init = init_params_fn(model, seq_len)
  if params is None:
    make = lambda r: nn.meta.unbox(_boxed_state(init(r), tx))
    state = jax.jit(make, out_shardings=shardings)(rng)
  else:
    params = jax.device_put(params, shardings["params"])
    make = lambda p: _boxed_state(p, tx)
    state = jax.jit(make, out_shardings=shardings)(params)
  return state
