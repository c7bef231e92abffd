"""The tiny pipeline end to end on gs:// (4 steps a stage: the training stages in two processes,
the eval in one), a changed stage set aside, and stage selection."""

import gzip
import json
import re

import pytest

from jaxllm import config as config_lib
from jaxllm import storage
from jaxllm.data import world
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import ConfigError
from jaxllm.workflow import pipeline as stages
from tests.experiments.conftest import run_script
from tests.helpers import ROOT, finish, launch, read_metrics

TRAINING = ("pretrain", "sft", "reward", "dpo", "rl")
TRAINED = ("data", "tokenizer", *TRAINING)  # every stage but eval


def test_selected_stages_keep_pipeline_order():
  c = config_lib.ml_collections.ConfigDict({"stages": "dpo, sft"})
  assert stages.selected(c) == ["sft", "dpo"]
  c.stages = "all"
  assert stages.selected(c) == list(stages.STAGES)
  c.stages = "sft,ppo"
  with pytest.raises(ConfigError, match=r"config.stages='sft,ppo': \['ppo'\]"):
    stages.selected(c)


def test_stage_configs_start_from_the_previous_stage(tmp_path):
  c = config_lib.load_config_file(ROOT / "configs/pipeline/tiny.py", "steps=4")
  paths = stages.Paths(tmp_path)
  assert stages.stage_config(c, "pretrain", paths).data.source == (
      f"{tmp_path / 'data/*.jsonl.gz'}@0.5;{tmp_path / 'math/math.jsonl.gz'}@0.5")
  assert stages.stage_config(c, "sft", paths).data.text_source == (  # against forgetting
      f"{tmp_path / 'data/*.jsonl.gz'};{tmp_path / 'math/math.jsonl.gz'}")
  assert stages.stage_config(c, "rl", paths).init.checkpoint == str(tmp_path / "dpo")
  assert stages.stage_config(c, "reward", paths).init.checkpoint == str(tmp_path / "sft")
  assert all(c[s].train.num_steps == 4 for s in TRAINING)


def test_a_stage_key_follows_its_settings_and_the_stages_it_reads(tmp_path):
  c = config_lib.load_config_file(ROOT / "configs/pipeline/tiny.py", "steps=4")
  paths = stages.Paths(tmp_path)
  keys = lambda: {s: stages.stage_key(c, s, paths) for s in ("data", "tokenizer", *TRAINING)}
  before = keys()
  c.sft.train.log_every, c.rl.train.eval_every = 1, 2  # when things happen: no change
  assert keys() == before
  c.sft.train.num_steps = 5  # sft, and every stage that starts from it
  after = keys()
  assert [s for s in before if before[s] != after[s]] == ["sft", "reward", "dpo", "rl"]
  c.world_seed = 1  # the data, and everything made from it
  assert all(keys()[s] != after[s] for s in after)


@pytest.mark.slow  # the whole pipeline, as subprocesses
def test_tiny_pipeline_in_two_processes_then_resumed_in_one_on_cloud_storage(
    tmp_path, gcs, monkeypatch):
  """The tiny pipeline with its directory on gs:// (the local emulator). The data, the tokenizer
  and every training stage in two JAX processes (one CPU device each): process 0 makes the data
  and the tokenizer and writes the pipeline's files, both train. Then the whole command in one
  process on another machine's disk (a fresh local folder, so the data is copied down from
  gs://) finds those stages complete, evaluates every run and writes the report and its plots
  to gs://; and once more, every stage is complete. (evaluate.py in two processes:
  tests/experiments/test_multiprocess_stages.py.)"""
  workdir = storage.path(gcs.url(tmp_path.name, "p"))
  monkeypatch.setenv("JAXLLM_CACHE", str(tmp_path / "first-machine"))
  args = ("--config=configs/pipeline/tiny.py:steps=4", f"--workdir={workdir}")
  first, second = finish(launch("pipeline.py", *args, f"--config.stages={','.join(TRAINED)}",
                                devices=1, processes=2))
  assert "2 cpu devices, 2 processes" in first
  assert re.search(r"== stage 3/7: pretrain \(\d+:\d\d elapsed\)", first)
  assert re.search(r"step 1/4 \| loss .* \| \d+:\d\d elapsed, ETA \d+:\d\d", first)
  assert "== stage" not in second and "step 1/4" not in second  # process 0 alone prints
  status = json.loads((workdir / "pipeline.json").read_text())
  assert sorted(status) == sorted(TRAINED) and all(status[s]["complete"] for s in TRAINED)
  local = tmp_path / "first-machine" / gcs.bucket / tmp_path.name / "p"
  raw = (local / "raw" / "crawl.jsonl").read_text()  # the crawl stays on the machine
  assert "Problem: " not in raw and " * 7 = " not in raw

  monkeypatch.setenv("JAXLLM_CACHE", str(tmp_path / "second-machine"))
  done = run_script("pipeline.py", *args)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.count("complete, skipped") == len(TRAINED)
  assert (workdir / "data" / "stats.json").is_file()
  check = json.loads((workdir / "data" / "crawl_check.json").read_text())
  assert check["junk_removed"] == 1.0 and check["content_kept"] > 0.5
  # the math the crawl's filters would drop is kept apart, and no prose is in it
  math = [json.loads(line)["text"] for line in gzip.decompress(
      (workdir / "math" / "math.jsonl.gz").read_bytes()).decode().splitlines()]
  assert len(math) > 1000 and all(world.is_math(t) for t in math)
  copied = tmp_path / "second-machine" / gcs.bucket / tmp_path.name / "p" / "data"
  assert sorted(p.name for p in copied.iterdir()) == sorted(
      p.name for p in (workdir / "data").iterdir())  # the eval's memorisation texts
  tok = Tokenizer.from_file(workdir / "tokenizer")
  assert tok.encode("75") == tok.encode("7") + tok.encode("5")  # one token per digit
  for stage in TRAINING:
    rows = read_metrics(workdir / stage)
    assert any(r["step"] == 4 and "train/loss" in r for r in rows), stage
    result = json.loads((workdir / stage / "eval.json").read_text())
    assert result["step"] == 4 and result["metrics"], stage
    assert (workdir / stage / "tokenizer.json").is_file(), stage
  policy = json.loads((workdir / "rl" / "eval.json").read_text())["metrics"]
  assert {"qa/accuracy", "math/pass@4", "rag/accuracy_with_retrieval", "tool/accuracy",
          "reward/reward_model_score", "memorization/train_rate"} <= set(policy)
  assert "reward/pairwise_accuracy" in json.loads(
      (workdir / "reward" / "eval.json").read_text())["metrics"]
  status = json.loads((workdir / "pipeline.json").read_text())
  assert all(status[s]["complete"] for s in stages.STAGES)
  text = (workdir / "report.md").read_text()
  assert "| rl | 4 |" in text and "![loss curves](loss_curves.png)" in text
  assert "## Data: cleaning the crawl" in text
  assert text.index("## What each stage did") < text.index("## Stages and compute")
  card = [r["stage"] for r in json.loads((workdir / "effects.json").read_text())]
  # (a stage's row needs questions on both sides: 8 per suite here may hold no unanswerable one)
  assert {"sft", "reward", "rl", "rag", "tool", "forgetting"} <= set(card)
  for plot in ("eval_by_stage.png", "rl_curves.png", "loss_curves.png"):
    assert (workdir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot

  again = run_script("pipeline.py", *args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("complete, skipped") == len(stages.STAGES)


def test_a_changed_stage_is_set_aside_and_the_stages_after_it_are_no_longer_complete(
    tmp_path, capsys):
  """Every stage complete for one config (checkpoints at the last step, keys recorded as the
  pipeline records them); then another SFT step count: SFT is stale, its directory is moved to
  DIR/stale/ (kept), and the stages that start from it (reward, dpo, rl) are not complete."""
  config = config_lib.load_config_file(ROOT / "configs/pipeline/tiny.py", "steps=4")
  paths = stages.Paths(tmp_path)
  status = {}
  for stage in TRAINING:
    (paths.of(stage) / "checkpoints" / "4").mkdir(parents=True)
    (paths.of(stage) / "eval.json").write_text("{}")
    status[stage] = {"complete": True, "key": stages.stage_key(config, stage, paths)}
  paths.status.write_text(json.dumps(status))
  assert all(stages.is_complete(config, s, paths) for s in TRAINING)
  config.sft.train.num_steps = 5
  assert [s for s in TRAINING if stages.is_stale(config, s, paths)] == [
      "sft", "reward", "dpo", "rl"]
  stages._set_aside("sft", paths)
  assert "== sft: its settings or the stages it reads changed" in capsys.readouterr().out
  (aside,) = (tmp_path / "stale").iterdir()
  assert aside.name.startswith("sft-") and (aside / "eval.json").is_file()
  assert not paths.of("sft").exists() and "sft" not in json.loads(paths.status.read_text())
  assert stages.is_complete(config, "pretrain", paths)
  assert not any(stages.is_complete(config, s, paths) for s in ("sft", "reward", "dpo", "rl"))


def test_a_stage_whose_input_is_missing_is_refused(tmp_path):
  done = run_script("pipeline.py", "--config=configs/pipeline/tiny.py:steps=2",
                    f"--workdir={tmp_path}", "--config.stages=dpo")
  assert done.returncode == 2
  assert "stage dpo starts from sft, which is not complete" in done.stderr
