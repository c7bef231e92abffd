"""Two real JAX processes on this machine (gloo collectives) train like one process with the
same devices, each reading only its data shards; their checkpoint resumes in one process."""

import json
import shutil

import jax
import numpy as np
import pytest

from jaxllm.models import params as params_lib
from jaxllm.models.config import ModelConfig
from jaxllm.models.transformer import Transformer
from jaxllm.train import checkpoint
from tests.helpers import finish, launch, read_metrics

pytestmark = pytest.mark.slow  # two processes and a third run, each a subprocess

# FSDP over all 4 devices, so each process holds and writes half of every parameter.
ARGS = ["--config=configs/pretrain/tiny.py", "--config.train.num_steps=6",
        "--config.train.log_every=1", "--config.train.checkpoint_every=3",
        "--config.train.eval_every=3", "--config.train.batch_size=8", "--config.data.seq_len=32",
        "--config.data.shards=2", "--config.mesh.data=1", "--config.mesh.fsdp=-1"]


def _pretrain(workdir, devices: int = 4, processes: int = 1) -> list:
  return launch("pretrain.py", f"--workdir={workdir}", *ARGS, devices=devices,
                processes=processes)


def _losses(workdir) -> dict[str, dict[int, float]]:
  """Every logged train and eval loss, and the train gradient norm, by step."""
  out = {"train": {}, "eval": {}, "grad_norm": {}}
  keys = {"train": "train/loss", "eval": "eval/loss", "grad_norm": "train/grad_norm"}
  for m in read_metrics(workdir):
    for kind, key in keys.items():
      if key in m:
        out[kind][m["step"]] = m[key]
  return out


def _final_params(workdir) -> list[np.ndarray]:
  cfg = ModelConfig.from_dict(json.loads((workdir / "config.json").read_text())["model"])
  abstract = params_lib.unbox(jax.eval_shape(
      params_lib.init_params_fn(Transformer(cfg), 32), jax.random.key(0)))
  params = checkpoint.restore_params(workdir / "checkpoints", abstract)
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_two_processes_train_like_one_and_hand_over_to_one(tmp_path):
  two, one = tmp_path / "two", tmp_path / "one"
  outs = finish(_pretrain(two, 2, 2) + _pretrain(one))
  assert "4 cpu devices, 2 processes" in outs[0]
  assert "4 cpu devices, 1 processes" in outs[2]

  # Every step's loss and gradient norm, the evals and the final parameters: the same global
  # batches (two data shards, one per process there, both in one process here) give the same
  # training. Only the order of the cross-process gradient sums may differ, hence the tolerance.
  # The gradient norms are what would show a wrong scale of the summed gradients (AdamW and
  # clipping cancel a constant one in the params).
  assert sorted(_losses(two)["train"]) == list(range(1, 7))
  assert sorted(_losses(two)["grad_norm"]) == list(range(1, 7))
  for kind in ("train", "eval", "grad_norm"):
    assert _losses(two)[kind].keys() == _losses(one)[kind].keys()
    np.testing.assert_allclose(list(_losses(two)[kind].values()),
                               list(_losses(one)[kind].values()), rtol=1e-5)
  for a, b in zip(_final_params(two), _final_params(one)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  # The two processes' step-3 checkpoint (each wrote its half of every parameter and its data
  # shard's position) restores in one process on 4 devices and continues to the same end.
  losses, params = _losses(two)["train"], _final_params(two)
  shutil.rmtree(two / "checkpoints" / "6")
  out = finish(_pretrain(two))[0]
  assert f"resumed from {two / 'checkpoints'} at step 3" in out
  assert "4 cpu devices, 1 processes" in out
  resumed = _losses(two)["train"]
  assert [resumed[s] for s in (1, 2, 3)] == [losses[s] for s in (1, 2, 3)]
  np.testing.assert_allclose(list(resumed.values()), list(losses.values()), rtol=1e-5)
  for a, b in zip(_final_params(two), params):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
