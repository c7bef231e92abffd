"""What a program is compiled for: this machine's devices, or a TPU slice or a set of GPUs
described by name and compiled for ahead of time from any machine (libtpu for TPUs, JAX's CUDA
plugin with a device description for GPUs; experiments/compile.py).

`platform()` is the backend the code being traced targets ("cpu", "gpu", "tpu"). It is this
machine's backend, except inside `compiling_for(name)`, where choices that depend on the
backend (splash attention, XLA options, mesh checks) are made for the target instead.

CHIPS is the one table of accelerator facts (per chip, bf16): peak FLOP/s, HBM bytes and
bandwidth, and bidirectional ICI bandwidth (NVLink on a GPU), from the vendors' published
specifications. The TPU capacities are binary (GiB), as the compiler counts them: the v5e's
"16 GB" is 16 GiB, of which XLA lets a program use 15.75 GiB; the H100's is what CUDA reports
(79.1 GiB of its 80 GB).
"""

import contextlib
import contextvars
import dataclasses
import importlib.resources
import math
import os
from collections.abc import Iterator, Sequence

import jax

from jaxllm.errors import ConfigError

_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar("jaxllm_target",
                                                                         default=None)


def platform() -> str:
  """The backend being compiled for: "tpu" inside `compiling_for("tpu")`, else this machine's."""
  return _PLATFORM.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(name: str) -> Iterator[None]:
  """Within it, `platform()` is `name` (a slice compiled for ahead of time)."""
  token = _PLATFORM.set(name)
  try:
    yield
  finally:
    _PLATFORM.reset(token)


def process_count(devices: Sequence) -> int:
  """Hosts the devices live on (a mesh's devices; a compile-only slice of several hosts too)."""
  return len({d.process_index for d in devices})


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  peak_flops: float  # bf16 FLOP/s
  hbm_bytes: float
  hbm_bandwidth: float  # bytes/s
  ici_bandwidth: float  # bytes/s, bidirectional, all links of the chip together
  source: str


GB, GiB = 1e9, 2.0 ** 30
# Keyed by jax's device_kind (longest names first: "TPU v5 lite" before "TPU v5").
CHIPS = {
    "TPU v6 lite": Chip("v6e", 918e12, 32 * GiB, 1638 * GB, 800 * GB,
                        "cloud.google.com/tpu/docs/v6e (system architecture table)"),
    "TPU v5 lite": Chip("v5e", 197e12, 16 * GiB, 819 * GB, 400 * GB,
                        "cloud.google.com/tpu/docs/v5e (key chip specifications)"),
    "TPU v5": Chip("v5p", 459e12, 95 * GiB, 2765 * GB, 1200 * GB,
                   "cloud.google.com/tpu/docs/v5p (key specifications)"),
    "TPU v4": Chip("v4", 275e12, 32 * GiB, 1200 * GB, 6 * 2 * 45 * GB,
                   "cloud.google.com/tpu/docs/v4 (peak, HBM); ICI: 6 links of 45 GB/s each way "
                   "(TPU v4 paper, ISCA 2023)"),
    "NVIDIA H100 80GB HBM3": Chip("h100", 989e12, 84942979072, 3352 * GB, 900 * GB,
                                  "nvidia.com/en-us/data-center/h100 (SXM: dense BF16, HBM3 "
                                  "bandwidth, NVLink 900 GB/s); memory as CUDA reports it"),
}
# GPUs compiled for by name (--topology=h100:8): the device description XLA's GPU compiler
# targets (stream_executor's GpuTargetConfigProto as text; no comments, which the parser
# silently takes as an empty description), in jaxllm/parallel/gpu_targets/: h100.txtpb holds the
# fields jax 0.10's XLA reads from XLA's xla/backends/gpu/target_config/specs/h100_sxm.txtpb.
GPUS = {"h100": "h100.txtpb"}


def chip(device_kind: str) -> Chip | None:
  for key, value in CHIPS.items():
    if key in device_kind:
      return value
  return None


# On a machine without TPUs: several processes may compile at once (libtpu otherwise takes a
# lock), and libtpu need not look for TPU VM metadata or worker hostnames.
_COMPILE_ONLY_ENV = {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_SKIP_MDS_QUERY": "1",
                     "TPU_WORKER_HOSTNAMES": "localhost"}


def topology_devices(name: str) -> list:
  """The devices of a TPU slice named like 'v5e:2x4' or 'v5p:4x4x8', or of GPUs named like
  'h100:8' (one host) or 'h100:4x8' (hosts x GPUs), for compiling only (no TPU or GPU needed;
  libtpu must be installed for TPUs, pip install -e '.[tpu]', and JAX's CUDA plugin for GPUs,
  pip install -e '.[gpu-compile]')."""
  try:
    from jax.experimental import topologies
  except ImportError as e:  # pragma: no cover - part of jax
    raise ConfigError(f"jax.experimental.topologies is missing ({e}).") from e
  kind, _, shape = name.partition(":")
  try:
    dims = [int(x) for x in shape.split("x")] if shape else []
  except ValueError:
    dims = []
  if kind in GPUS:
    return _gpu_devices(topologies, name, kind, dims)
  if not kind or not dims or any(d < 1 for d in dims):
    raise ConfigError(f"--topology={name!r}: write a TPU generation and chip grid, e.g. "
                      "v5e:2x4, v6e:16x16, v5p:4x4x8, v4:2x2x2.")
  if jax.default_backend() != "tpu":  # no TPU here: libtpu only compiles
    for name_, value in _COMPILE_ONLY_ENV.items():
      os.environ.setdefault(name_, value)
  kwargs = {}
  if math.prod(dims) == 1:  # one chip: libtpu wants the host bounds said
    kwargs["chips_per_host_bounds"] = (1, 1, 1)
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=name,
                                             **kwargs).devices)
  except Exception as e:  # libtpu missing, or a shape it does not know
    text = str(e).splitlines()[0][:300]
    if "lockfile" in text:
      hint = "another process holds libtpu's lock: set ALLOW_MULTIPLE_LIBTPU_LOAD=1"
    elif "libtpu" in text.lower() or "not found" in text.lower() or "Unknown backend" in text:
      hint = "install libtpu: pip install -e '.[tpu]'"
    else:
      hint = "check the generation (v4, v5e, v5p, v6e) and the chip grid"
    raise ConfigError(f"--topology={name!r}: {text}; {hint}.") from e


def is_gpu(name: str) -> bool:
  """Whether --topology=`name` names GPUs (compiled for through JAX's CUDA plugin)."""
  return name.partition(":")[0] in GPUS


def _gpu_devices(topologies, name: str, kind: str, dims: list[int]) -> list:
  if len(dims) not in (1, 2) or any(d < 1 for d in dims):
    raise ConfigError(f"--topology={name!r}: write a GPU and how many, e.g. {kind}:8 (one host) "
                      f"or {kind}:4x8 (4 hosts of 8).")
  hosts, per_host = (1, dims[0]) if len(dims) == 1 else dims
  spec = importlib.resources.files("jaxllm.parallel").joinpath("gpu_targets", GPUS[kind])
  try:
    return list(topologies.get_topology_desc(
        platform="cuda", topology=f"1x{hosts}x{per_host}",
        target_config=spec.read_text(encoding="utf-8")).devices)
  except (NotImplementedError, RuntimeError, ValueError) as e:
    text = str(e).splitlines()[0][:300]
    hint = ("install JAX's CUDA plugin (pip install -e '.[gpu-compile]'), and on a machine "
            "without a GPU start with JAX_PLATFORMS=cpu (experiments/compile.py does)")
    raise ConfigError(f"--topology={name!r}: {text}; {hint}.") from e


def devices_per_chip(devices: Sequence) -> int:
  """TensorCores shown as devices per chip (2 on a v4 slice as libtpu describes it, else 1)."""
  if devices[0].platform != "tpu":
    return 1
  chips = {tuple(d.coords) for d in devices}
  return max(1, len(devices) // max(1, len(chips)))
