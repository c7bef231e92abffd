"""Memory per device of a compiled step, checked against the device before the first step.

The estimate is XLA's own for the compiled program (per device, since the program is SPMD):
arguments + outputs - donated aliases + temporaries, or its peak of live buffers when that is
larger. The limit is the device's `bytes_limit` (GPU, TPU); on CPU, where the devices
share the host, the host's memory divided by the local devices. config.train.device_memory_gib
overrides it (a margin for other processes, or a test).
"""

import os
import re
from typing import Any

import jax

from jaxllm.errors import UserError

GiB = 2 ** 30


def estimate(compiled) -> dict[str, int]:
  """Bytes per device of a `jax.jit(...).lower(...).compile()` result."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  out = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
         "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes}
  out["sum"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
  out["peak"] = getattr(m, "peak_memory_in_bytes", 0) or 0
  # Checked: the larger of the two (the CPU backend's "peak" leaves the temporaries out).
  out["total"] = max(out["sum"], out["peak"])
  return out


def device_limit(device: Any, override_gib: float = 0.0) -> int | None:
  """Bytes one device may use, or None when unknown."""
  if override_gib > 0:
    return int(override_gib * GiB)
  stats = device.memory_stats() or {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  if device.platform == "cpu":
    try:
      host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
      return None
    return host // max(jax.local_device_count(), 1)
  return None


def _size(n: int) -> str:
  return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2 ** 20:.2f} MiB"


def check(compiled, override_gib: float = 0.0) -> str:
  """A line describing the memory per device; raises UserError when it does not fit."""
  est = estimate(compiled)
  if not est:
    return "memory per device: not reported by this backend"
  limit = device_limit(jax.local_devices()[0], override_gib)
  line = (f"memory per device (compiled step): {_size(est['sum'])} = "
          f"{_size(est['arguments'])} state and batch + {_size(est['temporaries'])} "
          f"temporaries + {_size(est['outputs'] - est['aliased'])} new outputs")
  if est["peak"] > est["sum"]:
    line += f" (XLA's peak of live buffers: {_size(est['peak'])})"
  if limit is None:
    return line + " (device limit unknown)"
  line += f", of {_size(limit)}"
  if est["total"] > limit:
    raise UserError(
        f"the train step needs {_size(est['total'])} per device and a device has "
        f"{_size(limit)} ({_size(est['arguments'])} of state and batch, "
        f"{_size(est['temporaries'])} of activations and temporaries); {ADVICE}")
  return line


ADVICE = ("it would run out of memory. Lower it with --config.model.remat=full (recompute "
          "activations), a larger --config.train.microbatches (smaller pieces of the batch), "
          "more FSDP (--config.mesh.fsdp=-1 shards params and optimizer state over all "
          "devices), --config.train.loss_chunk=N for a large vocabulary, or a smaller batch or "
          "seq_len; experiments/compile.py tries a config for a TPU slice from any machine.")

_UNITS = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def compiler_out_of_memory(message: str) -> tuple[float, float] | None:
  """(bytes needed, bytes available) from XLA's RESOURCE_EXHAUSTED message at compile time (the
  TPU compiler refuses a program that does not fit), NaN where it gives no figure; None when the
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
