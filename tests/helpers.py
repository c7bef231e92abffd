"""Shared test helpers."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax

from jaxllm.train.metrics import read_metrics  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]


def scaled_gradients(loss_fn, factor: float):
  """`loss_fn` whose loss and metrics are unchanged but whose gradients are `factor` times
  larger: a deliberate break for tests that claim two ways of computing gradients agree."""
  def scaled(params, batch, rng, model, **kwargs):
    loss, metrics = loss_fn(params, batch, rng, model, **kwargs)
    return loss + (factor - 1.0) * (loss - jax.lax.stop_gradient(loss)), metrics
  return scaled


def train_losses(workdir) -> dict[int, float]:
  return {m["step"]: m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(script: str, *args: str, devices: int = 8, processes: int = 1) -> list:
  """experiments/`script` (or a path from the repository root) started as `processes` JAX
  processes on this machine (gloo collectives on CPU), each with `devices` CPU devices; returns
  the Popen objects (`finish`)."""
  from tests.conftest import FAST_COMPILE_FLAGS
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{FAST_COMPILE_FLAGS} --xla_force_host_platform_device_count={devices}")
  distributed = [[]]
  if processes > 1:
    port = free_port()
    distributed = [["--config.distributed.initialize=True",
                    f"--config.distributed.coordinator_address=localhost:{port}",
                    f"--config.distributed.num_processes={processes}",
                    f"--config.distributed.process_id={i}"] for i in range(processes)]
  path = script if "/" in script else f"experiments/{script}"
  return [subprocess.Popen([sys.executable, path, *args, *flags], cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for flags in distributed]


def finish(procs, timeout: int = 600) -> list[str]:
  """Waits for every process; asserts each exited 0; returns their outputs."""
  outs = []
  for p in procs:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out
    outs.append(out)
  return outs
