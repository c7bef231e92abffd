"""The pipeline report from fixed files: tables with the right numbers, and every plot."""

import json

import pytest

from jaxllm import config as config_lib
from jaxllm import storage
from jaxllm.models.config import ModelConfig
from jaxllm.recipes import reward_model, rl
from jaxllm.train import metrics as metrics_lib
from jaxllm.workflow import report


def _write(path, obj):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj) if not isinstance(obj, list)
                  else "".join(json.dumps(o) + "\n" for o in obj))


@pytest.fixture
def root(tmp_path):
  _write(tmp_path / "pipeline.json", {"data": {"seconds": 1.5, "complete": True},
                                      "pretrain": {"seconds": 30.0, "complete": True},
                                      "reward": {"seconds": 9.0, "complete": True},
                                      "rl": {"seconds": 12.0, "complete": True}})
  _write(tmp_path / "data" / "stats.json", {"steps": [
      {"name": "read", "docs_in": 10, "kept": 10, "dropped": 0, "modified": 0, "reasons": {}},
      {"name": "language", "docs_in": 10, "kept": 7, "dropped": 3, "modified": 0,
       "reasons": {"language_score": 2, "too_short": 1}}]})
  _write(tmp_path / "data" / "crawl_check.json",
         {"page": {"in": 8, "kept": 7, "kept_fraction": 0.875},
          "spam": {"in": 2, "kept": 0, "kept_fraction": 0.0},
          "content_kept": 0.875, "junk_removed": 1.0})
  pre = config_lib.base_config("tiny")
  pre.train.batch_size, pre.data.seq_len = 4, 32
  (tmp_path / "pretrain").mkdir()
  (tmp_path / "pretrain" / "config.json").write_text(pre.to_json())
  _write(tmp_path / "pretrain" / "metrics.jsonl",
         [{"step": 10, "train/loss": 3.0}, {"step": 20, "train/loss": 2.0},
          {"step": 20, "eval/loss": 2.5}])
  _write(tmp_path / "pretrain" / "eval.json",
         {"step": 20, "metrics": {"lm/bits_per_byte": 1.25, "qa/accuracy": 0.0},
          "skipped": {"tool": "a base model"}})
  rm = reward_model.default_config("tiny")
  (tmp_path / "reward").mkdir()
  (tmp_path / "reward" / "config.json").write_text(rm.to_json())
  _write(tmp_path / "reward" / "metrics.jsonl",
         [{"step": 5, "train/loss": 0.6}, {"step": 5, "eval/accuracy": 0.7, "eval/margin": 0.3}])
  _write(tmp_path / "reward" / "eval.json",
         {"step": 5, "metrics": {"reward/pairwise_accuracy": 0.75}, "skipped": {}})
  rl_config = rl.default_config("tiny")
  (tmp_path / "rl").mkdir()
  (tmp_path / "rl" / "config.json").write_text(rl_config.to_json())
  _write(tmp_path / "rl" / "metrics.jsonl",
         [{"step": 0, "eval/qa_accuracy": 0.1},
          {"step": 1, "train/loss": 0.0, "rollout/reward_mean": 0.2, "rollout/accuracy": 0.2},
          {"step": 2, "train/loss": 0.0, "rollout/reward_mean": 0.4, "rollout/accuracy": 0.4},
          {"step": 2, "eval/qa_accuracy": 0.15}])
  _write(tmp_path / "rl" / "eval.json",
         {"step": 2, "metrics": {"qa/accuracy": 0.3, "math/accuracy": 0.2}, "skipped": {}})
  return tmp_path


def test_report_tables_and_plots(root):
  text = report.write(root).read_text()
  pre = config_lib.base_config("tiny")
  positions = 20 * 4 * 32  # steps x batch x seq_len
  flops = positions * metrics_lib.train_flops_per_token(ModelConfig(**pre.model.to_dict()), 32)
  assert f"| pretrain | 20 | {positions} | {flops:.3g} | 30 | True |" in text
  assert "Total wall time 52 s" in text
  assert "| language | 10 | 7 | 3 | 0 | language_score (2) |" in text
  assert "World content kept: 87.5%; planted junk removed: 100.0%." in text
  assert "| metric | pretrain (step 20) | reward (step 5) | rl (step 2) |" in text
  assert "| qa/accuracy | 0 | - | 0.3 |" in text
  assert "| reward/pairwise_accuracy | - | 0.75 | - |" in text
  assert "- pretrain: a base model (tool)" in text
  for png in ("compute", "loss_curves", "reward_model", "rl_curves", "eval_by_stage"):
    assert (root / f"{png}.png").stat().st_size > 1000, png
    assert f"({png}.png)" in text


def test_report_of_an_empty_directory(tmp_path):
  text = report.write(tmp_path).read_text()
  assert text.startswith("# Pipeline report") and not list(tmp_path.glob("*.png"))


def test_plots_a_reader_trusts_at_a_glance(root, monkeypatch):
  """Axes from zero (a change of 0.005 does not fill the panel), every panel labelled, n/a
  instead of empty bars, no curve drawn twice, no FLOPs bars for stages that do not train."""
  saved = {}
  monkeypatch.setattr(storage, "save_figure",
                      lambda fig, path, **kwargs: saved.__setitem__(path.stem, fig))
  _write(root / "reward" / "metrics.jsonl",  # a held-out accuracy that moves by 0.005
         [{"step": 5, "eval/accuracy": 0.700, "eval/margin": 0.3},
          {"step": 10, "eval/accuracy": 0.705, "eval/margin": 0.31}])
  report.write(root)
  rm_axes = saved["reward_model"].axes
  assert [ax.get_ylim()[0] for ax in rm_axes] == [0, 0]
  assert [ax.get_ylabel() for ax in rm_axes] == ["eval/accuracy", "eval/margin"]
  # rollout reward == rollout accuracy here: one panel for the two.
  assert [ax.get_title() for ax in saved["rl_curves"].axes] == [
      "rollout reward", "held-out accuracy"]
  losses = {ax.get_title(): ax for ax in saved["loss_curves"].axes}
  assert losses["pretrain"].get_ylim()[0] == 0 and all(
      ax.get_ylabel() == "loss" for ax in losses.values())
  (bars,) = saved["eval_by_stage"].axes
  labels = [t.get_text() for t in bars.texts]
  assert labels == ["n/a"]  # pretrain has no math/accuracy; its qa/accuracy of 0 is a bar
  hidden = [p for p in bars.patches if not p.get_visible()]
  assert len(hidden) == labels.count("n/a")
  flops_ax, _ = saved["compute"].axes
  trained = [t.get_text() for t in flops_ax.get_xticklabels()]
  assert "pretrain" in trained and "data" not in trained  # data trains nothing: no empty bar
