"""experiments/rl.py with a reward of the test's own (Python API: rl.run(..., rewards=...)), for
runs as subprocesses: distinct characters per reply, which differs between an untrained model's
samples where the verifiers give every reply 0."""

import functools

import numpy as np

from jaxllm import cli
from jaxllm.recipes import rl
from jaxllm.rl import rewards


def variety(records, replies):
  del records
  return np.array([len(set(r)) / 10.0 for r in replies], np.float32)


if __name__ == "__main__":
  own = rewards.Rewards({"variety": variety}, {"variety": 1.0})
  cli.run_stage(functools.partial(rl.run, rewards=own), "Config file (see configs/rl/).")
