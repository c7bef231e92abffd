"""Stages beyond pretraining under two real JAX processes (gloo collectives on CPU): each
process samples, scores and trains on its share, and the run equals one process with the same
four devices (to float rounding of the cross-process sums). Pretraining's own two-process test
is tests/parallel/test_multiprocess.py."""

import json
import math
import shutil

import jax
import numpy as np
import pytest

from jaxllm import runs
from tests.helpers import finish, launch, read_metrics

pytestmark = pytest.mark.slow  # subprocess runs

# experiments/rl.py with a reward that an untrained model's replies vary in
RL = "tests/experiments/rl_own_reward.py"


def _same_metrics(two, one, rtol=1e-5):
  """Every logged value of two runs, step by step, equal within `rtol`."""
  a, b = read_metrics(two), read_metrics(one)
  assert [m["step"] for m in a] == [m["step"] for m in b]
  for x, y in zip(a, b):
    assert x.keys() == y.keys(), (x.keys() ^ y.keys())
    for key in x:
      assert math.isclose(x[key], y[key], rel_tol=rtol, abs_tol=1e-6), (x["step"], key, x[key],
                                                                          y[key])


def test_rl_across_two_processes_equals_one(pretrained_run, tmp_path):
  # FSDP over all 4 devices: each process loads and holds half of every parameter (load_run
  # reads the slices of its own devices), samples its share of the prompts' rows and scores
  # those replies (a Python reward: each process scores its own share); the KL reference and
  # the held-out eval run too.
  args = ["--config=configs/rl/grpo_tiny.py:steps=2", f"--config.init.checkpoint={pretrained_run}",
          "--config.train.batch_size=16", "--config.rl.group_size=4",
          "--config.rl.max_new_tokens=12", "--config.data.seq_len=96",
          "--config.rl.kl_coef=0.05", "--config.rl.minibatches=2",
          "--config.rl.drop_uniform_groups=False", "--config.optimizer.lr=1e-4",
          "--config.train.eval_every=2", "--config.train.checkpoint_every=1",
          "--config.eval.qa_questions=4", "--config.eval.pass_k=2", "--config.eval.pass_samples=2",
          "--config.eval.batch_size=8", "--config.mesh.data=1", "--config.mesh.fsdp=-1"]
  two, one = tmp_path / "two", tmp_path / "one"
  outs = finish(launch(RL, f"--workdir={two}", *args, devices=2, processes=2)
                + launch(RL, f"--workdir={one}", *args, devices=4))
  assert "4 cpu devices, 2 processes" in outs[0]
  metrics = read_metrics(two)
  assert [m["step"] for m in metrics if "rollout/reward_mean" in m] == [1, 2]
  assert any("eval/questions" in m for m in metrics)
  assert len({m["rollout/reward_mean"] for m in metrics if "rollout/reward_mean" in m}) == 2
  _same_metrics(two, one)
  # Params within a tenth of one step's largest move (lr 1e-4): Adam's normalised steps turn
  # float rounding of near-zero gradients into differences of a few percent of a step.
  final = jax.tree.leaves(runs.load_run(two).params)
  for x, y in zip(final, jax.tree.leaves(runs.load_run(one).params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=2e-5)

  # The two processes' step-1 checkpoint resumes in one process (the prompt order is the same in
  # every process) and samples and trains as before.
  shutil.rmtree(two / "checkpoints" / "2")
  out = finish(launch(RL, f"--workdir={two}", *args, devices=4))[0]
  assert f"resumed from {two / 'checkpoints'} at step 1" in out
  _same_metrics(two, one)
  for x, y in zip(jax.tree.leaves(runs.load_run(two).params), final):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=2e-5)

  # evaluate.py joins a two-process job too: both evaluate, process 0 prints and writes.
  first, second = finish(launch("evaluate.py", f"--workdir={two}", "--config.suites=lm,qa",
                                "--config.qa.questions=8", "--config.max_new_tokens=8",
                                "--config.batch_size=8", devices=2, processes=2))
  result = json.loads((two / "eval.json").read_text())
  assert set(result["suites"]) == {"lm", "qa"} and result["step"] == 2
  assert "wrote" in first and "wrote" not in second
