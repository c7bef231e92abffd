"""Ahead-of-time compilation of a stage's train step (and the sampler) for a device mesh that
need not be this machine's: a TPU slice described by name, compiled here with libtpu.

What a stage trains, without its data, is a `StepSpec` (each recipe's `step_spec(config)`): the
model, the loss, the layout of a batch row, whether frozen params ride along (a LoRA base, a DPO
reference), and the optimizer updates per step. `compile_train_step` lowers exactly the step a
run jits (jaxllm/train/loop.py: `jit_train_step`, donation, shardings from the logical rules)
with abstract arrays placed on the mesh, compiles it, and reports the bytes each device holds;
XLA's memory plan comes from `memory`, the program's collectives and traffic from
jaxllm/train/hlo.py, and `train_flops` is the model's count (jaxllm/workflow/compile.py puts
them together against a chip's peaks).

Nothing is allocated: the state, batch and frozen params are `jax.ShapeDtypeStruct`s.
"""

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxllm.inference import sampler as sampler_lib
from jaxllm.models import params as params_lib
from jaxllm.models import transformer
from jaxllm.models.config import ModelConfig
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.train import loop as loop_lib
from jaxllm.train import memory as memory_lib
from jaxllm.train import metrics as metrics_lib
from jaxllm.train import optimizer as optimizer_lib
from jaxllm.train import state as state_lib

Layout = dict[str, tuple[tuple[int, ...], Any]]


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """A stage's train step without its data."""

  model: Any  # an nn.Module, or a WithFrozen/LoraModel whose frozen_model holds frozen params
  loss_fn: Callable
  layout: Layout  # key -> (shape of one batch row, dtype)
  frozen: bool = False  # frozen params are passed to every step (LoRA base, DPO reference)
  sequences_per_row: int = 1  # 2 for preference pairs
  updates_per_step: tuple[int, int] = (1, 1)  # (epochs, minibatches): RL's updates per batch
  lora: bool = False  # only the adapters train: no weight gradients for the frozen base
  lm_head: bool = True  # False: a reward model's scalar head instead of the vocabulary matmul


def abstract_params(model: nn.Module, mesh: Mesh, rules, seq_len: int) -> Any:
  """ShapeDtypeStructs of `model`'s params, placed by the logical rules on `mesh`."""
  init = params_lib.init_params_fn(model, seq_len)
  boxed = jax.eval_shape(lambda: init(jax.random.key(0)))
  shardings = sharding_lib.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      params_lib.unbox(boxed), shardings)


def abstract_batch(layout: Layout, rows: int, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch of `rows` rows, split over data x fsdp as `sharding.global_batch` does."""
  return {k: jax.ShapeDtypeStruct((rows, *shape), np.dtype(dtype),
                                  sharding=sharding_lib.batch_sharding(mesh, 1 + len(shape)))
          for k, (shape, dtype) in layout.items()}


def compile_train_step(config, spec: StepSpec, mesh: Mesh, rules) -> dict[str, Any]:
  """Compiles the stage's train step for `mesh`; returns {"compiled", "compile_seconds", "state"
  (abstract, placed), per device "params_bytes", "state_bytes" (params and optimizer state),
  "batch_bytes" and "frozen_bytes"; "num_params", "num_frozen"}. Raises OutOfMemory when the
  compiler cannot place the step (TPU says so at compile time)."""
  tc, seq_len = config.train, config.data.seq_len
  epochs, minibatches = spec.updates_per_step
  num_updates = tc.num_steps * epochs * minibatches
  model_cfg = spec.model.cfg
  loop_lib.check_mesh_fits(config, mesh, model_cfg, minibatches)
  tx = optimizer_lib.make_optimizer(config.optimizer, num_updates)
  schedule = optimizer_lib.learning_rate_schedule(config.optimizer, num_updates)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, shardings = state_lib.state_shardings(spec.model, tx, mesh, rules, seq_len)
    frozen = (abstract_params(spec.model.frozen_model, mesh, rules, seq_len)
              if spec.frozen else None)
    batch = abstract_batch(spec.layout, tc.batch_size, mesh)
    rng = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                               sharding=NamedSharding(mesh, P()))
    step = loop_lib.jit_train_step(config, spec.loss_fn, spec.model, tx, schedule, shardings,
                                   mesh, spec.updates_per_step)
    out = {"state": state, "params_bytes": per_device_bytes(state["params"]),
           "state_bytes": per_device_bytes(state), "batch_bytes": per_device_bytes(batch),
           "frozen_bytes": per_device_bytes(frozen) if frozen is not None else 0,
           "num_params": params_lib.count_params(state["params"]),
           "num_frozen": params_lib.count_params(frozen) if frozen is not None else 0}
    start = time.perf_counter()
    try:
      out["compiled"] = step.lower(state, batch, rng, frozen).compile()
    except Exception as e:  # XLA's own out-of-memory at compile time (TPU): said with numbers
      needs = memory_lib.compiler_out_of_memory(str(e))
      if needs is None:
        raise
      raise OutOfMemory(str(e).splitlines()[0][:400], needs, out) from None
    out["compile_seconds"] = time.perf_counter() - start
  return out


class OutOfMemory(Exception):
  """The compiler could not place the program in a device's memory: `needs` = (bytes the
  program needs, bytes the compiler had), either NaN when its message gives none; `sizes` are
  compile_train_step's byte counts."""

  def __init__(self, message: str, needs: tuple[float, float], sizes: dict[str, Any]):
    super().__init__(message)
    self.needs, self.sizes = needs, sizes


def per_device_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of placed ShapeDtypeStructs (its shard of each)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return total


def train_flops(model_cfg: ModelConfig, spec: StepSpec, config) -> float:
  """Model FLOPs of one train step, all devices together: 6 N + attention per token
  (metrics.train_flops_per_token) for each trained token, times the optimizer updates over the
  batch; LoRA skips the frozen weights' gradients (4 N); a frozen reference adds a forward
  (2 N); a reward model without the LM head leaves out its d_model x vocab matmul."""
  seq_len = config.data.seq_len
  per_token = metrics_lib.train_flops_per_token(model_cfg, seq_len)
  if not spec.lm_head:  # a score head of d_model x 1 instead of d_model x vocab
    per_token -= 6 * model_cfg.d_model * model_cfg.vocab_size
  forward = per_token / 3  # 2 N + attention's forward share
  if spec.lora:
    per_token -= forward  # no gradient of the frozen weights: forward + input gradients
  elif spec.frozen:
    per_token += forward  # the reference model's forward pass
  epochs, _ = spec.updates_per_step
  tokens = config.train.batch_size * seq_len * spec.sequences_per_row
  return per_token * tokens * epochs


def memory(compiled) -> dict[str, int]:
  """memory.estimate's numbers for the compiled program (bytes per device)."""
  return memory_lib.estimate(compiled)


def compile_sampler(model: nn.Module, mesh: Mesh, rules, seq_len: int, batch: int,
                    prompt_len: int, new_tokens: int) -> dict[str, Any]:
  """Compiles the KV-cache sampler's program (prefill of `prompt_len` tokens, then a decode loop
  of `new_tokens` steps) for `batch` rows with the params on `mesh`; returns {"compiled",
  "compile_seconds", "params_bytes" (per device), "cache_bytes" (the whole KV cache)}."""
  replicated = NamedSharding(mesh, P())

  def arg(shape, dtype):
    return jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=replicated)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params = abstract_params(model, mesh, rules, seq_len)
    smp = sampler_lib.Sampler(model, None, pad_id=0, mesh=mesh, rules=rules)
    key = jax.eval_shape(lambda: jax.random.key(0))
    args = (params, arg((batch, prompt_len), np.int32), arg((batch,), np.int32),
            arg((batch,), np.int32), jax.ShapeDtypeStruct((), key.dtype, sharding=replicated),
            arg((), np.float32), arg((), np.int32), arg((), np.float32),
            arg((smp.max_stop_tokens,), np.int32))
    start = time.perf_counter()
    compiled = smp._jitted.lower(*args, num_new=new_tokens).compile()  # noqa: SLF001
    seconds = time.perf_counter() - start
    cache = jax.eval_shape(lambda: transformer.init_cache(model.cfg, batch,
                                                          prompt_len + new_tokens))
  return {"compiled": compiled, "compile_seconds": seconds,
          "params_bytes": per_device_bytes(params),
          "cache_bytes": sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                             for x in jax.tree.leaves(cache))}
