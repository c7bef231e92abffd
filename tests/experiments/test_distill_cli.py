"""experiments/distill.py: a smaller student distilled from the shared pretrained run."""

import json
import math

import pytest

from jaxllm import runs
from tests.experiments.conftest import run_script
from tests.helpers import read_metrics

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses


def test_distill_from_a_pretrained_teacher(pretrained_run, tmp_path):
  workdir = tmp_path / "student"
  done = run_script("distill.py", "--config=configs/distill/tiny.py:steps=8",
                    f"--workdir={workdir}", f"--config.teacher.checkpoint={pretrained_run}",
                    "--config.train.log_every=4", "--config.train.eval_every=8",
                    "--config.train.checkpoint_every=8", "--config.train.eval_batches=1",
                    "--config.train.eval_at_start=True", "--config.optimizer.warmup_steps=2")
  assert done.returncode == 0, done.stderr
  metrics = read_metrics(workdir)
  train = [m for m in metrics if "train/kl" in m]
  evals = {m["step"]: m for m in metrics if "eval/kl" in m}
  assert [m["step"] for m in train] == [4, 8] and sorted(evals) == [0, 8]
  # The loss is the configured mix (kd_weight 0.9, temperature 1) of KL and data cross-entropy.
  for m in train:
    assert m["train/loss"] == pytest.approx(0.9 * m["train/kl"] + 0.1 * m["train/nll"], rel=1e-5)
  for m in evals.values():
    assert m["eval/loss"] == pytest.approx(0.9 * m["eval/kl"] + 0.1 * m["eval/nll"], rel=1e-5)
    assert m["eval/perplexity"] == pytest.approx(math.exp(m["eval/nll"]), rel=1e-9)
  # Eight steps pull the student toward the teacher on held-out text: the KL falls by a third
  # (1.36 -> 0.88 nats per token when written), and the frozen teacher's own loss on the same
  # tokens does not move.
  kl = {step: m["eval/kl"] for step, m in evals.items()}
  assert kl[8] < kl[0] - 0.2, kl
  assert evals[8]["eval/teacher_nll"] == evals[0]["eval/teacher_nll"]
  tokenizer = (workdir / "tokenizer.json").read_bytes()
  assert tokenizer == (pretrained_run / "tokenizer.json").read_bytes()
  config = json.loads((workdir / "config.json").read_text())
  assert config["teacher"]["step"] == 30  # the latest step, recorded
  teacher_cfg = json.loads((pretrained_run / "config.json").read_text())["model"]
  assert config["model"]["vocab_size"] == teacher_cfg["vocab_size"]
  student = runs.load_run(workdir)  # a plain run directory: the student alone
  assert student.step == 8 and student.model.cfg.d_model < teacher_cfg["d_model"]

  bad = run_script("distill.py", "--config=configs/distill/tiny.py:steps=4",
                   f"--workdir={tmp_path / 'bad'}",
                   f"--config.teacher.checkpoint={tmp_path / 'no_such_run'}")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith(
      "error: config.teacher.checkpoint="), bad.stderr
