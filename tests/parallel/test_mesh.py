"""Mesh sizes from config, and two real JAX processes training together."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxllm.errors import ConfigError
from jaxllm.parallel.mesh import resolve_axis_sizes
from tests.helpers import ROOT, read_metrics


def test_minus_one_takes_the_remaining_devices():
  assert resolve_axis_sizes({"data": -1, "fsdp": 4, "tensor": 2}, 16) == (2, 4, 2)
  assert resolve_axis_sizes({"data": 2, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)


@pytest.mark.parametrize("sizes,message", [
    ({"data": -1, "fsdp": -1, "tensor": 1}, "only one axis may be -1"),
    ({"data": -1, "fsdp": 3, "tensor": 1}, "not divisible"),
    ({"data": 2, "fsdp": 2, "tensor": 1}, "uses 4 devices but 8 are present"),
])
def test_bad_mesh_sizes_are_named(sizes, message):
  with pytest.raises(ConfigError, match=message):
    resolve_axis_sizes(sizes, 8)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _pretrain(workdir, devices, *extra):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  cmd = [sys.executable, "experiments/pretrain.py", "--config=configs/pretrain/tiny.py",
         f"--workdir={workdir}", "--config.train.num_steps=8", "--config.train.log_every=1",
         "--config.data.shard_by_process=False", *extra]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def test_two_processes_train_like_one_process_with_the_same_devices(tmp_path):
  port = _free_port()
  procs = [_pretrain(tmp_path / "multi", 2, "--config.distributed.initialize=True",
                     f"--config.distributed.coordinator_address=localhost:{port}",
                     "--config.distributed.num_processes=2",
                     f"--config.distributed.process_id={i}") for i in range(2)]
  single = _pretrain(tmp_path / "single", 4)
  for p in procs + [single]:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
  multi = [m["train/loss"] for m in read_metrics(tmp_path / "multi") if "train/loss" in m]
  one = [m["train/loss"] for m in read_metrics(tmp_path / "single") if "train/loss" in m]
  assert len(multi) == len(one) == 8
  np.testing.assert_allclose(multi, one, rtol=1e-5)  # only the reduction order differs
