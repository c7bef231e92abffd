"""Test session set-up: 8 fake CPU devices (set before JAX starts), float32 everywhere."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from jaxllm import config as config_lib  # noqa: E402


@pytest.fixture
def tiny_config():
  """A small, fast pretraining config on the embedded world (8-way data parallel)."""
  c = config_lib.base_config("tiny")
  c.data.seq_len = 32
  c.train.num_steps = 10
  c.train.batch_size = 8
  c.train.log_every = 1
  c.train.eval_every = 5
  c.train.eval_batches = 1
  c.train.checkpoint_every = 5
  c.train.async_checkpointing = False
  c.optimizer.warmup_steps = 2
  c.optimizer.lr = 1e-3
  return c
