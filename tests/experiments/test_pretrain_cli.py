"""experiments/pretrain.py as a user runs it: real processes, real signals, clear errors."""

import json
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxllm import runs, storage
from jaxllm.errors import UserError
from jaxllm.train import checkpoint
from tests.experiments.conftest import child_env, run_script
from tests.helpers import ROOT, read_metrics, train_losses

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses

# Dropout on, so that the per-step random keys must resume exactly too.
ARGS = ["--config=configs/pretrain/tiny.py", "--config.train.num_steps=40",
        "--config.train.log_every=1", "--config.train.checkpoint_every=15",
        "--config.train.eval_every=15", "--config.model.dropout_rate=0.1"]


def _cmd(workdir, *extra):
  return [sys.executable, "experiments/pretrain.py", f"--workdir={workdir}", *ARGS, *extra]


def _last_step(workdir):
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return 0
  # The run may be writing its newest line while this polls: read complete lines only.
  complete = path.read_text().split("\n")[:-1]
  steps = [m["step"] for m in map(json.loads, complete) if "train/loss" in m]
  return max(steps, default=0)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """The uninterrupted run the interrupted ones must equal."""
  full = tmp_path_factory.mktemp("full")
  subprocess.run(_cmd(full), cwd=ROOT, env=child_env(), check=True, capture_output=True)
  return full


def _evals(workdir):
  return [m for m in read_metrics(workdir) if "eval/loss" in m]


def test_sigterm_from_outside_then_same_command_is_bit_identical_on_cloud_storage(
    full_run, gcs, tmp_path):
  """A run in a gs:// work directory (the local emulator) stopped by SIGTERM mid-run, then
  the same command: it resumes from the checkpoint on cloud storage and ends bit-identical to
  the uninterrupted run in a local directory: losses, evals and params."""
  full = full_run
  part = storage.path(gcs.url(tmp_path.name, "part"))
  proc = subprocess.Popen(_cmd(part), cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  out = []
  # Metrics reach gs:// at checkpoints: the console (log_every=1) says how far the run is.
  while not (out and re.match(r"step (2\d|3\d)/40 \| loss", out[-1])):
    line = proc.stdout.readline()
    assert line, "".join(out)
    out.append(line)
  proc.send_signal(signal.SIGSTOP)  # freeze it mid-run, then deliver SIGTERM
  proc.send_signal(signal.SIGTERM)
  proc.send_signal(signal.SIGCONT)
  rest, _ = proc.communicate(timeout=300)
  out = "".join(out) + rest
  assert proc.returncode == 0, out
  assert "stop requested (SIGTERM or Ctrl-C): saved a checkpoint at step" in out
  interrupted_at = _last_step(part)
  assert 20 <= interrupted_at < 40, out
  assert not (part / "run.lock").exists()
  assert {p.name for p in part.iterdir()} >= {
      "config.json", "metrics.jsonl", "perf.jsonl", "tensorboard", "tokenizer.json",
      "checkpoints"}

  rerun = subprocess.run(_cmd(part), cwd=ROOT, env=child_env(), capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr
  assert f"resumed from {part / 'checkpoints'} at step {interrupted_at}" in rerun.stdout
  assert train_losses(part) == train_losses(full)  # every step, bit for bit
  assert _evals(part) == _evals(full)
  for a, b in zip(jax.tree.leaves(runs.load_run(part).params),
                  jax.tree.leaves(runs.load_run(full).params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  sealed = part / "checkpoints" / "40" / checkpoint.MANIFEST  # the integrity manifest too
  assert checkpoint.check_manifest(sealed.parent) is None and sealed.exists()


# The SIGKILL test's kill point is drawn from this seed (printed with the draw, and in every
# failure message): change it to try another point, set it back to reproduce a failure. Whether
# a checkpoint was complete at the kill still depends on timing; the test checks either case.
SIGKILL_SEED = 20250611


def _kill_point(seed: int) -> tuple[int, float]:
  """(the logged step after which to kill, then seconds to wait), drawn from `seed`."""
  rng = random.Random(seed)
  return rng.randint(4, 34), rng.uniform(0.0, 0.05)


def _first_train_step(stdout: str) -> int | None:
  """The first step whose training line a run printed (log_every=1: each step prints one)."""
  match = re.search(r"^step (\d+)/40 \| loss", stdout, re.MULTILINE)
  return int(match[1]) if match else None


def test_sigkill_at_a_seeded_random_point_then_same_command_is_bit_identical(full_run, tmp_path):
  """kill -9 at a step and moment drawn from SIGKILL_SEED (saves every 3 steps, asynchronous,
  so the kill may land inside one): the rerun resumes from the newest complete checkpoint, or
  starts from step 0 when none was complete, redoes only the steps after it, logs each step
  once, and ends bit-identical to the uninterrupted run."""
  kill_after, delay = _kill_point(SIGKILL_SEED)
  draw = f"SIGKILL_SEED={SIGKILL_SEED}: kill after step {kill_after}, then {delay:.4f} s"
  print(draw)
  part = tmp_path / "part"
  every3 = "--config.train.checkpoint_every=3"
  proc = subprocess.Popen(_cmd(part, every3), cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while _last_step(part) < kill_after:
    assert proc.poll() is None, f"{draw}: the run ended before the kill"
    assert time.time() < deadline, draw
    time.sleep(0.002)
  time.sleep(delay)
  proc.kill()
  proc.wait()
  complete = [int(p.name) for p in (part / "checkpoints").iterdir()
              if p.name.isdigit()] if (part / "checkpoints").exists() else []
  newest = max(complete, default=0)
  assert newest <= _last_step(part) < 40, draw

  rerun = subprocess.run(_cmd(part, every3), cwd=ROOT, env=child_env(), capture_output=True,
                         text=True)
  out = f"{draw}; newest complete checkpoint {newest or 'none'}:\n{rerun.stdout}"
  assert rerun.returncode == 0, f"{out}{rerun.stderr}"
  assert "damaged" not in rerun.stdout, out
  if newest:
    assert f"resumed from {part / 'checkpoints'} at step {newest}" in rerun.stdout, out
  else:
    assert "resumed from" not in rerun.stdout, out
  assert _first_train_step(rerun.stdout) == newest + 1, out  # step 1 when nothing was complete
  # Lines the killed run logged after its checkpoint were dropped: each step is logged once.
  assert [m["step"] for m in read_metrics(part) if "train/loss" in m] == list(range(1, 41)), out
  assert train_losses(part) == train_losses(full_run), out
  assert _evals(part) == _evals(full_run), out


@pytest.mark.parametrize("override,message", [
    ("--config.model.num_kv_heads=3",
     "num_heads=4 is not divisible by config.model.num_kv_heads=3"),
    ("--config.mesh.tensor=3", "config.mesh"),
    ("--config.data.source=nowhere/*.jsonl", "input glob 'nowhere/*.jsonl' matches no files"),
    ("--config.train.device_memory_gib=0.0001", "it would run out of memory. Lower it with "
     "--config.model.remat=full"),
    ("--config.train.num_steps=abc", "flag --config.train.num_steps=abc: invalid literal for int"),
    ("--config.trian.num_steps=3", "--config.trian.num_steps: config has no field 'trian' (did you "
     "mean 'train'?)"),
    ("--config.train.nonexistent=1", "config.train has no field 'nonexistent'; its fields: "),
    ("--config=configs/pretrain/nope.py",
     "--config: the config file cannot be loaded ([Errno 2] No such file"),
    ("--config=configs/pretrain/llama_125m.py:steps=x", "config argument 'steps=x': steps takes a "
     "int"),
])
def test_user_errors_print_one_line_and_exit_2(tmp_path, override, message):
  workdir = tmp_path / "run"
  result = subprocess.run(_cmd(workdir, override), cwd=ROOT, env=child_env(),
                          capture_output=True, text=True)
  assert result.returncode == 2, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  if "num_kv_heads" in override or "nope.py" in override or "trian" in override:
    assert not workdir.exists()  # found before any dataset is prepared or directory made


@pytest.mark.parametrize("script,args,flag", [
    ("pretrain.py", ["--config=configs/pretrain/tiny.py"], "--workdir"),
    ("pretrain.py", ["--workdir=/nowhere"], "--config"),
    ("sample.py", [], "--workdir"),
])
def test_a_missing_required_flag_is_one_line_naming_it(script, args, flag):
  result = run_script(script, *args)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {flag} is required: "), lines


@pytest.mark.parametrize("script,args,shown", [
    ("pretrain.py", ["--config=configs/pretrain/tiny.py", "--config.train.num_steps=7"],
     "  num_steps: 7"),
    ("sft.py", ["--config=configs/sft/tiny.py", "--config.lora.rank=5"], "  rank: 5"),
    ("evaluate.py", ["--config.qa.questions=9"], "  questions: 9"),
    ("pipeline.py", ["--config=configs/pipeline/tiny.py", "--config.world_seed=4"],
     "world_seed: 4"),
])
def test_print_config_shows_every_field_after_the_overrides(script, args, shown):
  result = run_script(script, *args, "--print_config")  # no --workdir needed
  assert result.returncode == 0, result.stderr
  assert shown in result.stdout.splitlines()


def test_masked_lm_run_trains_and_cannot_be_sampled(tmp_path):
  """configs/pretrain/mlm_tiny.py for a few steps: its loss falls, eval is finite, and the run
  is refused (one line naming it) by what needs a causal model: sample.py, chat.py ..."""
  workdir = tmp_path / "mlm"
  done = run_script("pretrain.py", "--config=configs/pretrain/mlm_tiny.py:steps=24",
                    f"--workdir={workdir}", "--config.train.batch_size=8",
                    "--config.data.seq_len=64", "--config.train.log_every=4",
                    "--config.train.eval_every=24", "--config.train.checkpoint_every=24",
                    "--config.train.eval_batches=2")
  assert done.returncode == 0, done.stderr
  losses = train_losses(workdir)
  assert len(losses) == 6 and losses[24] < losses[4] - 0.5, losses
  evals = {m["step"]: m for m in _evals(workdir)}
  assert sorted(evals) == [0, 24]  # eval_at_start: the masked-token numbers before training
  assert 0 < evals[24]["eval/loss"] < evals[0]["eval/loss"] < 10
  assert evals[24]["eval/accuracy"] > evals[0]["eval/accuracy"]  # 17 -> 20 of 139 when written
  with pytest.raises(UserError, match=f"{workdir} is a masked-LM run"):
    runs.load_run(workdir)

