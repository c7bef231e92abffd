"""Device mesh with axes (data, fsdp, tensor) and multi-host initialisation."""

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh

from jaxllm.errors import ConfigError, UserError

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_axis_sizes(sizes: dict[str, int], num_devices: int) -> tuple[int, ...]:
  """Fills the one axis set to -1 with the remaining devices; checks the product."""
  values = [int(sizes[a]) for a in MESH_AXES]
  free = [a for a, v in zip(MESH_AXES, values) if v == -1]
  if len(free) > 1:
    raise ConfigError(f"config.mesh: only one axis may be -1, got {free}; set the others.")
  if any(v == 0 or v < -1 for v in values):
    raise ConfigError(f"config.mesh sizes must be positive or -1, got "
                      f"{dict(zip(MESH_AXES, values))}.")
  fixed = math.prod(v for v in values if v != -1)
  if free:
    if num_devices % fixed:
      raise ConfigError(
          f"config.mesh: {num_devices} devices are not divisible by the fixed axes "
          f"{dict(zip(MESH_AXES, values))} (product {fixed}); change the sizes.")
    values[MESH_AXES.index(free[0])] = num_devices // fixed
  elif fixed != num_devices:
    raise ConfigError(
        f"config.mesh {dict(zip(MESH_AXES, values))} uses {fixed} devices but {num_devices} are "
        "present; make the product match or set one axis to -1.")
  return tuple(values)


def make_mesh(mesh_config, devices=None) -> Mesh:
  """Mesh over all (or the given) devices; axis sizes from config.mesh.{data,fsdp,tensor}."""
  num_devices = jax.device_count() if devices is None else len(devices)
  shape = resolve_axis_sizes({a: mesh_config[a] for a in MESH_AXES}, num_devices)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if devices is None:
    # Topology-aware device order on TPU/GPU slices.
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def maybe_initialize_distributed(dist_config) -> None:
  """Calls jax.distributed.initialize when config.distributed.initialize is set (once: later
  calls do nothing).

  On Cloud TPU VMs and SLURM/Open MPI clusters the arguments are found automatically; leave
  coordinator_address empty there. Elsewhere set coordinator_address, num_processes, process_id.
  """
  if not dist_config.initialize or jax.distributed.is_initialized():
    return
  kwargs = {}
  if dist_config.coordinator_address:
    kwargs = dict(coordinator_address=dist_config.coordinator_address,
                  num_processes=dist_config.num_processes, process_id=dist_config.process_id)
  # Lets several CPU processes on one machine train together; no effect on GPU/TPU.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def process_zero_first(needed: Callable[[], bool], make: Callable[[], None], name: str) -> None:
  """Runs `make` where `needed()`: in process 0 first, then, after a barrier every process
  joins, in the others (which find the result there when they share a disk with process 0)."""
  if jax.process_count() == 1:
    if needed():
      make()
    return
  if jax.process_index() == 0 and needed():
    make()
  multihost_utils.sync_global_devices(f"jaxllm-{name}")
  if jax.process_index() != 0 and needed():
    make()


def on_process_zero(make: Callable[[], Any], name: str) -> Any:
  """Runs `make` in process 0 only (files every process reads: the others find them on the shared
  disk once this returns); every process waits here for it. Returns what `make` returned in
  process 0, None in the others. When it raises in process 0, the others raise too, naming
  `name`, instead of waiting forever."""
  if jax.process_count() == 1:
    return make()
  result, failed = None, False
  try:
    if jax.process_index() == 0:
      result = make()
  except BaseException:
    failed = True
    raise
  finally:  # every process joins, whether or not process 0 failed
    any_failed = bool(np.any(multihost_utils.process_allgather(np.int32(failed))))
  if any_failed:
    raise UserError(f"process 0 failed in {name}; its output says why.")
  return result


def process_zero_value(value: int) -> int:
  """Process 0's `value` (an int or bool) in every process: a decision read from files that
  process 0 may rewrite is taken once, by process 0, and every process follows it."""
  if jax.process_count() == 1:
    return int(value)
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))
