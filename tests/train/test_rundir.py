"""A run directory is never damaged or silently wrong: a changed config on resume is refused
before anything is written, one writer holds the lock, a moved run resumes, the tokenizer is
part of the run, and files are replaced whole."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from jaxllm import rundir, runs
from jaxllm.errors import UserError
from jaxllm.recipes import pretrain
from jaxllm.train import metrics as metrics_lib
from tests.helpers import read_metrics


def _snapshot(directory: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(directory)): p.read_bytes()
          for p in sorted(directory.rglob("*")) if p.is_file()}


# -- the config on resume --

def test_config_changes_names_what_differs_and_leaves_resumable_fields_and_paths_alone():
  saved = {"seed": 0, "model": {"num_layers": 2, "remat": "none"},
           "train": {"num_steps": 10, "batch_size": 8}, "mesh": {"rules": [["a", "b"]]},
           "data": {"source": "/old/place/*.jsonl", "world_seed": 0}, "lora": {"rank": 4}}
  same = {"seed": 0, "model": {"num_layers": 2, "remat": "full"},
          "train": {"num_steps": 99, "batch_size": 8}, "mesh": {"rules": (("a", "b"),)},
          "data": {"source": "/new/place/*.jsonl", "world_seed": 0}, "lora": {"rank": 4}}
  assert rundir.config_changes(saved, same) == []
  changed = {**same, "seed": 1, "model": {"num_layers": 3, "remat": "none"}}
  del changed["lora"]
  assert rundir.config_changes(saved, changed) == [
      "lora: a section in the run, absent now", "model.num_layers: 2 in the run, 3 now",
      "seed: 0 in the run, 1 now"]
  assert rundir.config_changes(saved, changed, ignore=("model", "seed", "lora")) == []


@pytest.mark.slow
def test_a_changed_config_on_resume_is_refused_before_anything_is_written(tiny_config, tmp_path):
  pretrain.run(tiny_config, tmp_path)
  before = _snapshot(tmp_path)
  layers = tiny_config.model.num_layers
  tiny_config.model.num_layers = layers + 1
  with pytest.raises(UserError, match=rf"config.model.num_layers: {layers} in the run, "
                     rf"{layers + 1} now.*new --workdir"):
    pretrain.run(tiny_config, tmp_path)
  assert _snapshot(tmp_path) == before  # config.json, tokenizer, checkpoints: untouched
  # Fields a resume may change: more steps, another cadence, another mesh.
  tiny_config.model.num_layers = layers
  tiny_config.train.num_steps, tiny_config.train.eval_every = 12, 6
  tiny_config.mesh.data, tiny_config.mesh.fsdp = 4, 2
  state = pretrain.run(tiny_config, tmp_path)
  assert int(state["step"]) == 12
  assert json.loads((tmp_path / "config.json").read_text())["train"]["num_steps"] == 12


def test_the_loops_check_compares_the_resolved_config(tmp_path):
  """What a recipe resolves from its init run (the step it used) is compared in the loop."""
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  saved = {"stage": "sft", "init": {"checkpoint": "pre", "step": 100, "stage": "pretrain"},
           "model": {"num_layers": 2}}
  (tmp_path / "config.json").write_text(json.dumps(saved))
  given = {**saved, "init": {"checkpoint": "elsewhere/pre", "step": -1, "stage": ""},
           "model": {"num_layers": 4}}  # as given: the model and step come from the init run
  rundir.check_resume_early(given, tmp_path)
  resolved = {**saved, "init": {"checkpoint": "elsewhere/pre", "step": 200, "stage": "pretrain"}}
  with pytest.raises(UserError, match="config.init.step: 100 in the run, 200 now"):
    rundir.check_resume(resolved, tmp_path)
  rundir.check_resume({**resolved, "init": saved["init"]}, tmp_path)
  with pytest.raises(UserError, match="config.init.step: 100 in the run, 150 now"):
    rundir.check_resume_early({**given, "init": {"step": 150}}, tmp_path)  # asked for by hand
  # A run of its own model: the model is compared as given, except a vocabulary size of 0
  # ("the tokenizer's", resolved by the recipe).
  own = {"stage": "pretrain", "init": {}, "model": {"vocab_size": 384, "d_model": 64}}
  (tmp_path / "config.json").write_text(json.dumps(own))
  rundir.check_resume_early({**own, "model": {"vocab_size": 0, "d_model": 64}}, tmp_path)
  with pytest.raises(UserError, match="config.model.d_model: 64 in the run, 32 now"):
    rundir.check_resume_early({**own, "model": {"vocab_size": 0, "d_model": 32}}, tmp_path)


# -- one writer --

def _holder_file(workdir: pathlib.Path, pid: int) -> pathlib.Path:
  import socket
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / rundir.LOCK
  path.write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                              "command": "pretrain.py --workdir=x", "since": "2026-01-01T00:00"}))
  return path


def test_a_run_directory_in_use_is_refused_naming_the_holder(tmp_path):
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    path = _holder_file(tmp_path, sleeper.pid)
    with pytest.raises(UserError, match=rf"in use by 'pretrain.py --workdir=x' \(pid "
                       rf"{sleeper.pid} on host .*delete {path}"), rundir.lock(tmp_path):
      pass
    assert path.exists()  # someone else's lock is left alone
  finally:
    sleeper.kill()
    sleeper.wait()


def test_a_stale_lock_on_this_host_is_cleared_and_the_lock_is_released_after_errors(
    tmp_path, capsys):
  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()
  path = _holder_file(tmp_path, gone.pid)
  with pytest.raises(RuntimeError), rundir.lock(tmp_path):
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with rundir.lock(tmp_path):  # re-entrant in one process (the pipeline's stages)
      pass
    assert path.exists()
    raise RuntimeError("the run failed")
  assert "cleared a stale lock" in capsys.readouterr().err
  assert not path.exists()


def test_a_directory_the_lock_made_is_removed_when_nothing_was_written(tmp_path):
  for written in (False, True):
    workdir = tmp_path / f"new-{written}" / "run"
    with pytest.raises(RuntimeError), rundir.lock(workdir):
      if written:
        (workdir / "config.json").write_text("{}")
      raise RuntimeError("a config error found after the lock was taken")
    assert workdir.exists() == written and not (workdir / rundir.LOCK).exists()


@pytest.mark.slow
def test_a_second_writer_is_refused_while_a_run_trains(tiny_config, tmp_path):
  """Two runs into one --workdir: the second stops at once; the first finishes whole."""
  seen = []

  def second_run(step):
    if step == 3:
      with pytest.raises(UserError, match="in use by"):
        _other_process_lock(tmp_path)
      seen.append(step)
  pretrain.run(tiny_config, tmp_path, hooks=(second_run,))
  assert seen == [3]
  steps = [m["step"] for m in read_metrics(tmp_path) if "train/loss" in m]
  assert steps == list(range(1, 11))
  assert not (tmp_path / rundir.LOCK).exists()


def _other_process_lock(workdir):
  """Takes the lock as another process would (this process already holds it)."""
  script = ("import sys; from jaxllm import rundir\n"
            "from jaxllm.errors import UserError\n"
            "try:\n  with rundir.lock(sys.argv[1]): pass\n"
            "except UserError as e:\n  print(e); sys.exit(2)\n")
  out = subprocess.run([sys.executable, "-c", script, str(workdir)], capture_output=True,
                       text=True, check=False)
  if out.returncode == 2:
    raise UserError(out.stdout.strip())
  assert out.returncode == 0, out.stderr


# -- a run can be moved; the tokenizer is part of it --

@pytest.mark.slow
def test_a_moved_run_resumes_and_carries_its_tokenizer(tiny_config, tmp_path):
  tokenizer_file = tmp_path / "shared" / "tokenizer.json"
  first = tmp_path / "first"
  pretrain.run(tiny_config, first)  # trains its own tokenizer
  tokenizer_file.parent.mkdir()
  shutil.copy(first / "tokenizer.json", tokenizer_file)
  # A run given a tokenizer file keeps its own copy of it.
  tiny_config.data.tokenizer = str(tokenizer_file)
  run = tmp_path / "run"
  pretrain.run(tiny_config, run)
  assert json.loads((run / "tokenizer.json").read_text()) == json.loads(
      tokenizer_file.read_text())
  # Moved as docs/gpu.md copies runs (without data/, which is made again), then resumed.
  moved = tmp_path / "elsewhere" / "run"
  shutil.copytree(run, moved, ignore=lambda where, names: ["data"] if where == str(run) else [])
  shutil.rmtree(run)
  tiny_config.train.num_steps = 12
  state = pretrain.run(tiny_config, moved)
  assert int(state["step"]) == 12
  # Another tokenizer of the same size at the same path: the run reads its own, and a resume
  # with it is refused.
  other = json.loads(tokenizer_file.read_text())
  merges = other["model"]["merges"]
  merges[0], merges[1] = merges[1], merges[0]
  tokenizer_file.write_text(json.dumps(other))
  assert runs.load_run(moved).tokenizer.encode("the town") == runs.load_run(
      first).tokenizer.encode("the town")
  tiny_config.train.num_steps = 14
  with pytest.raises(UserError, match="differs from .*tokenizer.json, the tokenizer the run"):
    pretrain.run(tiny_config, moved)
  assert runs.latest_step(moved) == 12


# -- files are replaced whole --

def test_metrics_dropped_on_resume_are_dropped_by_a_rename(tmp_path, monkeypatch):
  writer = metrics_lib.MetricWriter(tmp_path, enabled=True)
  for step in range(1, 6):
    writer.write(step, {"train/loss": float(step)})
  writer.close()
  original = (tmp_path / "metrics.jsonl").read_text()
  replaced = []
  real_replace = os.replace
  monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(pathlib.Path(b).name),
                                                   real_replace(a, b)))

  def killed(*args, **kwargs):
    raise KeyboardInterrupt  # a kill while the new file is written
  monkeypatch.setattr(rundir.os, "fsync", killed)
  writer = metrics_lib.MetricWriter(tmp_path, enabled=True)
  with pytest.raises(KeyboardInterrupt):
    writer.truncate_after(3)
  assert (tmp_path / "metrics.jsonl").read_text() == original  # the old file, whole
  monkeypatch.undo()
  monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(pathlib.Path(b).name),
                                                   real_replace(a, b)))
  assert writer.truncate_after(3) == 2
  writer.close()
  assert "metrics.jsonl" in replaced
  assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3]
