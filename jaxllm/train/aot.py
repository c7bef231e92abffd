"""Ahead-of-time compilation of a stage's train step (and the sampler) for a device mesh that
need not be this machine's: a TPU slice described by name, compiled here with libtpu.

What a stage trains, without its data, is a `StepSpec` (each recipe's `step_spec(config)`): the
model, the loss, the layout of a batch row, whether frozen params ride along (a LoRA base, a DPO
reference), and the optimizer updates per step. `compile_train_step` lowers exactly the step a
run jits (jaxllm/train/loop.py: `jit_train_step`, donation, shardings from the logical rules)
with abstract arrays placed on the mesh, compiles it, and reads back what XLA planned: memory
per device, the collectives in the program and how many times each runs. `report` adds the
model's FLOPs and a roofline bound from the chip's published peaks (jaxllm/parallel/target.py).

Nothing is allocated: the state, batch and frozen params are `jax.ShapeDtypeStruct`s.
"""

import dataclasses
import re
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
  (abstract, placed), and
  per device "params_bytes", "state_bytes" (params and optimizer state), "batch_bytes",
  "frozen_bytes"; "num_params", "num_frozen"}. XLA's out-of-memory error propagates (callers
  give advice)."""
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
      needs = out_of_memory(str(e))
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


_UNITS = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def out_of_memory(message: str) -> tuple[float, float] | None:
  """(bytes needed, bytes available) from XLA's RESOURCE_EXHAUSTED message, or None when the
  message is about something else."""
  if "RESOURCE_EXHAUSTED" not in message and "Ran out of memory" not in message:
    return None
  patterns = (r"\(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)",
              r"Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm")
  for pattern in patterns:
    match = re.search(pattern, message)
    if match:
      return (float(match.group(1)) * _UNITS[match.group(2)],
              float(match.group(3)) * _UNITS[match.group(4)])
  return (float("nan"), float("nan"))


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
  (2 N)."""
  seq_len = config.data.seq_len
  per_token = metrics_lib.train_flops_per_token(model_cfg, seq_len)
  forward = per_token / 3  # 2 N + attention's forward share
  if spec.lora:
    per_token -= forward  # no gradient of the frozen weights: forward + input gradients
  elif spec.frozen:
    per_token += forward  # the reference model's forward pass
  epochs, _ = spec.updates_per_step
  tokens = config.train.batch_size * seq_len * spec.sequences_per_row
  return per_token * tokens * epochs


# Collectives as they appear in HLO text, by the kind reported.
_COLLECTIVES = {"all-gather": "all-gather", "all-reduce": "all-reduce",
                "reduce-scatter": "reduce-scatter", "all-to-all": "all-to-all",
                "collective-permute": "collective-permute"}
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|bf16|f16|s32|u32|f32|s64|u64|f64|c64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}


def _shape_bytes(text: str) -> int:
  """Bytes of every array shape written in `text` (a tuple shape counts each element)."""
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    total += _BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
  return total


def collective_bytes(hlo_text: str) -> dict[str, dict[str, float]]:
  """{kind: {"count", "bytes"}} per device for one run of the program: each collective's result
  bytes (an all-reduce counted twice: a reduce-scatter then an all-gather), times the trip
  count of every while loop around it (scanned layers, microbatches)."""
  computations, calls = _parse_hlo(hlo_text)
  times = _executions(computations, calls)
  out: dict[str, dict[str, float]] = {}
  for name, lines in computations.items():
    for line in lines:
      match = re.search(r"=\s*(.*?)\s+(all-gather|all-reduce|reduce-scatter|all-to-all|"
                        r"collective-permute)(-start)?\(", line)
      if not match:
        continue
      kind = _COLLECTIVES[match.group(2)]
      result = match.group(1)
      if match.group(3):  # an async start returns (operands, results[, context]): the results
        parts = _top_level_parts(result)
        result = parts[1] if len(parts) > 1 else result
      size = _shape_bytes(result) * (2 if kind == "all-reduce" else 1)
      entry = out.setdefault(kind, {"count": 0.0, "bytes": 0.0})
      entry["count"] += times.get(name, 1)
      entry["bytes"] += size * times.get(name, 1)
  return out


def _top_level_parts(shape: str) -> list[str]:
  """'(a, (b, c), d)' -> ['a', '(b, c)', 'd']."""
  shape = shape.strip()
  if not shape.startswith("("):
    return [shape]
  parts, depth, current = [], 0, ""
  for ch in shape[1:-1]:
    if ch == "," and depth == 0:
      parts.append(current.strip())
      current = ""
      continue
    depth += (ch in "([{") - (ch in ")]}")
    current += ch
  parts.append(current.strip())
  return parts


def _parse_hlo(text: str) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, int]]]]:
  """(computation -> its instruction lines, computation -> [(callee, times per call)])."""
  computations: dict[str, list[str]] = {}
  current = None
  for line in text.splitlines():
    header = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if header and not line.startswith(" "):
      current = header.group(1)
      computations[current] = []
      if line.startswith("ENTRY"):
        computations.setdefault("__entry__", []).append(current)
      continue
    if current is not None and line.startswith(" "):
      computations[current].append(line)
  calls: dict[str, list[tuple[str, int]]] = {}
  for name, lines in computations.items():
    if name == "__entry__":
      continue
    for line in lines:
      trips = 1
      if re.search(r"\swhile\(", line):
        known = re.search(r'known_trip_count["\s:=]*\{?["\s]*n["\s:=]*"?(\d+)', line)
        trips = int(known.group(1)) if known else 1
        body = re.search(r"body=%?([\w.\-]+)", line)
        cond = re.search(r"condition=%?([\w.\-]+)", line)
        if body:
          calls.setdefault(name, []).append((body.group(1), trips))
        if cond:
          calls.setdefault(name, []).append((cond.group(1), trips + 1))
        continue
      for attr in ("calls", "to_apply", "true_computation", "false_computation"):
        for callee in re.findall(rf"{attr}=%?([\w.\-]+)", line):
          calls.setdefault(name, []).append((callee, 1))
      branches = re.search(r"branch_computations=\{([^}]*)\}", line)
      if branches:
        for callee in re.findall(r"%?([\w.\-]+)", branches.group(1)):
          calls.setdefault(name, []).append((callee, 1))
  return computations, calls


def _executions(computations: dict[str, list[str]],
                calls: dict[str, list[tuple[str, int]]]) -> dict[str, float]:
  """How many times each computation runs in one run of the entry computation."""
  entries = computations.get("__entry__", [])
  times: dict[str, float] = {}

  def visit(name: str, count: float, depth: int = 0) -> None:
    if depth > 64:
      return
    times[name] = times.get(name, 0.0) + count
    for callee, per_call in calls.get(name, []):
      visit(callee, count * per_call, depth + 1)
  for entry in entries:
    visit(entry, 1.0)
  return times


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
