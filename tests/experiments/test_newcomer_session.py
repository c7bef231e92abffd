"""A newcomer's first session with a run directory, as one script: moved to a place of their
own, then sample, chat, evaluate twice, a resume with a wrong config, a finished run started
again, the Python API, and sample once more. Nothing may print a traceback, and the run must come
out exactly as it went in (same config, checkpoints and greedy text)."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from tests.experiments.conftest import child_env
from tests.experiments.conftest import run_script as _run

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses

PROMPT = "Greta Park works as"
PYTHON_API = """
import sys, jaxllm
run = jaxllm.load_run(sys.argv[1])
print(run.generate([sys.argv[2]], max_new_tokens=12)[0])
"""


def _checkpoint_files(run):
  """Every file under checkpoints/ with a digest of its bytes."""
  return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted((run / "checkpoints").rglob("*")) if p.is_file()}


def test_a_newcomers_session_has_no_traceback_and_leaves_the_run_as_it_was(pretrained_run,
                                                                          tmp_path):
  run = tmp_path / "my runs" / "first"  # moved, into a path with a space
  shutil.copytree(pretrained_run, run, ignore=shutil.ignore_patterns("labels", "run.lock"),
                  symlinks=True)
  config_before, checkpoints_before = (run / "config.json").read_bytes(), _checkpoint_files(run)
  finished = []

  def step(script, *args, stdin=None, rc=0):
    done = _run(script, *args, stdin=stdin)
    finished.append((script, args, done))
    assert done.returncode == rc, f"{script} {args}: rc {done.returncode}\n{done.stderr}"
    return done

  sample = ("sample.py", f"--workdir={run}", f"--prompt={PROMPT}", "--max_new_tokens=12",
            "--temperature=0")
  text = step(*sample).stdout  # a 30-step model's text: spaces, perhaps; compared below

  chat = step("chat.py", f"--workdir={run}", "--max_new_tokens=6",
              stdin="/help\nWho is Greta Park?\n/reset\nWhat is 3 + 4?\n/quit\n").stdout
  assert chat.count("\n---\n") == 2 and "(a new conversation)" in chat

  step("evaluate.py", f"--workdir={run}", "--config.suites=lm", "--config.batch_size=4")
  step("evaluate.py", f"--workdir={run}", "--config.suites=skills", "--config.max_new_tokens=6")
  suites = json.loads((run / "eval.json").read_text())["suites"]
  assert {"lm", "skills"} <= set(suites)  # the second evaluation kept the first's numbers

  wrong = step("pretrain.py", "--config=configs/pretrain/tiny.py", f"--workdir={run}",
               "--config.model.num_layers=3", rc=2)
  assert "model.num_layers" in wrong.stderr and len(wrong.stderr.strip().splitlines()) <= 2

  again = step("pretrain.py", "--config=configs/pretrain/tiny.py", f"--workdir={run}",
               "--config.train.num_steps=30", "--config.train.eval_every=30",
               "--config.train.checkpoint_every=30")
  assert "is already complete at step 30" in again.stdout

  api = subprocess.run([sys.executable, "-c", PYTHON_API, str(run), PROMPT], cwd=tmp_path,
                       env=child_env(), capture_output=True, text=True, timeout=300)
  finished.append(("python api", (), api))
  assert api.returncode == 0, api.stderr
  assert api.stdout == text  # the API and sample.py give the same greedy text

  assert step(*sample).stdout == text
  assert (run / "config.json").read_bytes() == config_before
  assert _checkpoint_files(run) == checkpoints_before
  assert not (run / "run.lock").exists()
  for script, args, done in finished:
    assert "Traceback" not in done.stderr + done.stdout, (script, args, done.stderr)
