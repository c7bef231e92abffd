"""experiments/distill.py: a smaller student distilled from the shared pretrained run."""

import json
import math

from jaxllm.inference import runs
from tests.experiments.conftest import run_script
from tests.helpers import read_metrics


def test_distill_from_a_pretrained_teacher(pretrained_run, tmp_path):
  workdir = tmp_path / "student"
  done = run_script("distill.py", "--config=configs/distill/tiny.py:steps=4",
                    f"--workdir={workdir}", f"--config.teacher.checkpoint={pretrained_run}",
                    "--config.train.log_every=2", "--config.train.eval_every=4",
                    "--config.train.checkpoint_every=4", "--config.train.eval_batches=1")
  assert done.returncode == 0, done.stderr
  metrics = read_metrics(workdir)
  train = [m for m in metrics if "train/kl" in m]
  evals = [m for m in metrics if "eval/perplexity" in m]
  assert len(train) == 2 and all(math.isfinite(m["train/kl"]) for m in train)
  assert len(evals) == 1 and math.isfinite(evals[0]["eval/perplexity"])
  assert math.isfinite(evals[0]["eval/kl"]) and math.isfinite(evals[0]["eval/teacher_nll"])
  tokenizer = (workdir / "tokenizer.json").read_bytes()
  assert tokenizer == (pretrained_run / "tokenizer.json").read_bytes()
  config = json.loads((workdir / "config.json").read_text())
  assert config["teacher"]["step"] == 30  # the latest step, recorded
  teacher_cfg = json.loads((pretrained_run / "config.json").read_text())["model"]
  assert config["model"]["vocab_size"] == teacher_cfg["vocab_size"]
  student = runs.load_run(workdir)  # a plain run directory: the student alone
  assert student.step == 4 and student.model.cfg.d_model < teacher_cfg["d_model"]

  bad = run_script("distill.py", "--config=configs/distill/tiny.py:steps=4",
                   f"--workdir={tmp_path / 'bad'}",
                   f"--config.teacher.checkpoint={tmp_path / 'no_such_run'}")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
  assert bad.stderr.strip().splitlines()[-1].startswith(
      "error: config.teacher.checkpoint="), bad.stderr
