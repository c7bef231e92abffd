"""Two runs of a stage with the same config and seed write byte-identical metrics.jsonl on CPU
(the timings go to perf.jsonl). Each pair runs as two separate processes with different Python
hash seeds, so nothing may depend on set or dict order, addresses or the clock."""

import subprocess
import sys

import pytest

from tests.experiments.conftest import child_env
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses

EVAL = ["--config.eval.qa_questions=4", "--config.eval.max_new_tokens=8"]
# Pretraining is covered by tests/experiments/test_pretrain_cli.py: its SIGTERM and SIGKILL
# reruns are separate processes (random hash seeds) whose metrics must equal bit for bit; RL by
# tests/experiments/test_multiprocess_stages.py, whose runs (separate processes, random hash
# seeds) must agree to float rounding.
STAGES = {
    "sft": ("sft.py", ["--config=configs/sft/tiny.py:steps=4", "--config.train.log_every=1",
                       "--config.train.eval_every=4", "--config.train.checkpoint_every=4",
                       *EVAL]),
    "dpo": ("dpo.py", ["--config=configs/dpo/tiny.py:steps=4", "--config.train.log_every=1",
                       "--config.train.eval_every=4", "--config.train.checkpoint_every=4",
                       "--config.train.eval_batches=2", "--config.train.batch_size=8", *EVAL]),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_same_seed_gives_byte_identical_metrics(stage, pretrained_run, tmp_path):
  script, args = STAGES[stage]
  init = [] if stage == "pretrain" else [f"--config.init.checkpoint={pretrained_run}"]
  procs = []
  for hash_seed in ("1", "2"):
    env = {**child_env(), "PYTHONHASHSEED": hash_seed}
    procs.append(subprocess.Popen(
        [sys.executable, f"experiments/{script}", f"--workdir={tmp_path / hash_seed}", *args,
         *init], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
  first, second = ((tmp_path / h / "metrics.jsonl").read_bytes() for h in ("1", "2"))
  assert first.count(b"\n") >= 3 and b"eval/" in first and b"perf/" not in first
  assert first == second
