"""Weights & Biases logging, offline (WANDB_MODE=offline): the run's W&B files hold every value
metrics.jsonl and perf.jsonl hold and the resolved config; a resume continues the same W&B run;
the pipeline groups its stages and uploads the report's plots and eval numbers."""

import json

import ml_collections
import pytest

from jaxllm import config as config_lib
from jaxllm.errors import ConfigError
from jaxllm.recipes import pretrain
from jaxllm.train import wandb_logging
from jaxllm.workflow import pipeline
from tests.helpers import read_metrics, wandb_offline_runs


@pytest.fixture
def offline(monkeypatch, tmp_path):
  for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                      "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
                      "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                      "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
    monkeypatch.setenv(name, str(value))


def _logged(run):
  """{step: {key: value}} of a W&B run's history rows (W&B's own _keys left out)."""
  rows = {}
  for row in run["history"]:
    if "step" in row:
      rows.setdefault(int(row["step"]), {}).update(
          {k: v for k, v in row.items() if not k.startswith("_") and k != "step"})
  return rows


@pytest.mark.slow
def test_a_run_logs_metrics_timings_and_config_and_a_resume_continues_it(tiny_config, tmp_path,
                                                                        offline):
  config = tiny_config
  config.train.num_steps = 4
  config.train.checkpoint_every = 2
  config.train.eval_every = 2
  config.logging.wandb.enabled = True
  config.logging.wandb.tags = "tiny, test"
  run_dir = tmp_path / "run"
  pretrain.run(config, run_dir)
  config.train.num_steps = 6  # the same command again, for more steps: a resume
  pretrain.run(config, run_dir)

  saved = json.loads((run_dir / "wandb.json").read_text())
  first, second = wandb_offline_runs(run_dir)
  assert first["id"] == second["id"] == saved["id"]
  assert first["config"]["train"]["num_steps"] == 4 and second["config"]["train"]["num_steps"] == 6
  assert first["config"]["model"]["d_model"] == config.model.d_model
  assert first["config"]["logging"]["wandb"]["tags"] == "tiny, test"
  logged = {**_logged(first), **_logged(second)}
  assert sorted(_logged(first)) == [1, 2, 3, 4] and sorted(_logged(second)) == [5, 6]
  written = {}
  for name in ("metrics.jsonl", "perf.jsonl"):
    for row in read_metrics(run_dir, name):
      written.setdefault(row.pop("step"), {}).update(row)
  assert logged.keys() == written.keys()
  for step, values in written.items():
    assert logged[step] == pytest.approx(values, rel=1e-6), step
  assert "eval/loss" in logged[6] and "perf/tokens_per_second" in logged[6]
  assert second["summary"]["train/loss"] == pytest.approx(written[6]["train/loss"])


def test_off_by_default_and_a_clear_error_without_the_package(tiny_config, monkeypatch):
  assert not wandb_logging.enabled(tiny_config)
  assert not wandb_logging.enabled(ml_collections.ConfigDict({"a": 1}))
  monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if not installed
  with pytest.raises(ConfigError, match=r"pip install 'jaxllm\[wandb\]'"):
    wandb_logging._wandb()


def test_the_pipeline_groups_its_stages_and_uploads_the_report(tmp_path, offline):
  config = config_lib.load_config_file("configs/pipeline/tiny.py")
  config.logging.wandb.enabled = True
  paths = pipeline.Paths(tmp_path / "pipe")
  sft = pipeline.stage_config(config, "sft", paths)
  assert (sft.logging.wandb.group, sft.logging.wandb.name) == ("pipe", "pipe-sft")
  assert sft.logging.wandb.enabled
  config.logging.wandb.group = "ablation-3"
  assert pipeline.stage_config(config, "rl", paths).logging.wandb.name == "ablation-3-rl"

  import matplotlib.pyplot as plt
  (tmp_path / "pipe" / "sft").mkdir(parents=True)
  for name in ("loss_curves", "eval_by_stage"):
    fig = plt.figure(figsize=(2, 2))
    fig.savefig(tmp_path / "pipe" / f"{name}.png")
    plt.close(fig)
  (tmp_path / "pipe" / "sft" / "eval.json").write_text(json.dumps(
      {"metrics": {"qa/accuracy": 0.75, "lm/perplexity": 12.5}}))
  pipeline.report_to_wandb(config, paths)
  (report,) = wandb_offline_runs(tmp_path / "pipe")
  (row,) = report["history"]
  images = {k.split("/")[0] for k, v in row.items() if k.endswith("/_type") and v == "image-file"}
  assert images == {"loss_curves", "eval_by_stage"}
  for name in images:  # the image files themselves, in the run's files to upload
    uploaded = report["folder"] / "files" / row[f"{name}/path"]
    assert uploaded.read_bytes() == (tmp_path / "pipe" / f"{name}.png").read_bytes()
  assert report["summary"]["sft/qa/accuracy"] == 0.75
  assert report["summary"]["sft/lm/perplexity"] == 12.5
  assert report["config"]["logging"]["wandb"]["group"] == "ablation-3"
