"""A briefly pretrained run directory shared by the CLI tests of later stages."""

import os
import subprocess
import sys

import pytest

from tests.conftest import FAST_COMPILE_FLAGS
from tests.helpers import ROOT


def child_env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = FAST_COMPILE_FLAGS  # one CPU device in the child
  return env


def run_script(script, *args, stdin=None):
  return subprocess.run([sys.executable, f"experiments/{script}", *args], cwd=ROOT,
                        env=child_env(), input=stdin, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("pretrained")
  done = run_script("pretrain.py", "--config=configs/pretrain/tiny.py", f"--workdir={workdir}",
                    "--config.train.num_steps=30", "--config.train.eval_every=30",
                    "--config.train.checkpoint_every=30")
  assert done.returncode == 0, done.stderr
  return workdir


@pytest.fixture(scope="session")
def reward_run(pretrained_run, tmp_path_factory):
  """A reward model trained briefly from the pretrained run (4 steps; eval at steps 0 and 4)."""
  workdir = tmp_path_factory.mktemp("reward") / "rm"
  done = run_script("reward_model.py", "--config=configs/reward/tiny.py:steps=4",
                    f"--workdir={workdir}", f"--config.init.checkpoint={pretrained_run}",
                    "--config.optimizer.lr=1e-3", "--config.train.log_every=2",
                    "--config.train.eval_every=4", "--config.train.checkpoint_every=4",
                    "--config.train.eval_batches=2", "--config.train.batch_size=8",
                    "--config.train.eval_at_start=True")
  assert done.returncode == 0, done.stderr
  return workdir
