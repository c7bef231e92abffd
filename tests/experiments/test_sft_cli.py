"""experiments/sft.py from a pretrained run: chat data, RAG data, a self-contained run dir."""

import json

from tests.experiments.conftest import run_script
from tests.helpers import read_metrics


def test_sft_from_a_pretrained_run(pretrained_run, tmp_path):
  workdir = tmp_path / "sft"
  done = run_script("sft.py", "--config=configs/sft/tiny.py:steps=12", f"--workdir={workdir}",
                    f"--config.init.checkpoint={pretrained_run}", "--config.train.log_every=4",
                    "--config.train.eval_every=12", "--config.train.checkpoint_every=12")
  assert done.returncode == 0, done.stderr
  tokenizer = (workdir / "tokenizer.json").read_bytes()
  assert tokenizer == (pretrained_run / "tokenizer.json").read_bytes()
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"] == json.loads((pretrained_run / "config.json").read_text())["model"]
  losses = [m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m]
  assert len(losses) == 3 and losses[-1] < losses[0]
  # The fine-tuned run samples like any other run directory.
  sample = run_script("sample.py", f"--workdir={workdir}", "--prompt=What is 2 + 3?", "--chat",
                      "--temperature=0", "--max_new_tokens=8")
  assert sample.returncode == 0, sample.stderr


def test_rag_sft_writes_its_conversations(pretrained_run, tmp_path):
  workdir = tmp_path / "rag"
  done = run_script("sft.py", "--config=configs/sft/rag_tiny.py:steps=2,other_worlds=1",
                    f"--workdir={workdir}", f"--config.init.checkpoint={pretrained_run}",
                    "--config.train.eval_every=2", "--config.train.checkpoint_every=2")
  assert done.returncode == 0, done.stderr
  records = [json.loads(line) for line in (workdir / "rag_sft.jsonl").read_text().splitlines()]
  with_passages = [r for r in records if r["messages"][0]["content"].startswith("Passages:")]
  assert 0 < len(with_passages) < len(records)


def test_sft_without_init_is_a_clear_error(tmp_path):
  done = run_script("sft.py", "--config=configs/sft/tiny.py", f"--workdir={tmp_path}")
  assert done.returncode == 2 and "config.init.checkpoint is empty" in done.stderr
