"""Test session set-up: 8 fake CPU devices (set before JAX starts), float32 everywhere, one
compilation cache for the run, and the `slow` marker."""

import os
import shutil
import tempfile

# The tests' models are tiny, so compiling dominates their time: XLA's CPU backend optimisation
# is turned down (about a third faster; the computations are the same). Scripts the tests start
# get these flags too (tests/experiments/conftest.py), without the 8 devices.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), FAST_COMPILE_FLAGS,
                                    "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole run: both pytest-xdist workers and every
# script a test starts inherit it, so a tiny model's step compiles once rather than in every
# test (the same executables either way). The process that makes it (the xdist controller, or
# the one pytest process) removes it at the end. JAX_COMPILATION_CACHE_DIR set by hand wins.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxllm-test-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from jaxllm import config as config_lib  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: runs scripts as subprocesses, the pipeline, several processes or long "
      "training checks; the fast tier (-m 'not slow') skips them")


# The longest tests, started first so that the quick ones fill the workers' last minutes
# (pytest-xdist hands tests out in collection order).
_LONGEST = ("test_tiny_pipeline_in_two_processes", "test_a_newcomers_session",
            "test_rl_across_two_processes", "test_lora_sft_sharded_and_resumed_matches",
            "test_two_processes_train_like_one")


def pytest_collection_modifyitems(config, items):
  del config
  rank = lambda item: (next((i for i, n in enumerate(_LONGEST) if item.name.startswith(n)),
                            len(_LONGEST)), item.get_closest_marker("slow") is None)
  items.sort(key=rank)  # stable: otherwise in collection order


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, "workerinput"):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
  """A cloud storage bucket on a local emulator (tests/helpers.py StorageEmulator); runs take
  `gcs.url(name)` as their --workdir."""
  from tests.helpers import StorageEmulator
  emulator = StorageEmulator().start(tmp_path_factory.mktemp("gcs"))
  yield emulator
  emulator.stop()


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
