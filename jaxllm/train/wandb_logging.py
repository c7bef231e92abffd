"""Weights & Biases logging (config.logging.wandb), beside metrics.jsonl, perf.jsonl and
TensorBoard.

    --config.logging.wandb.enabled=True --config.logging.wandb.project=my-project \\
    --config.logging.wandb.tags=baseline,tiny      # WANDB_MODE=offline on a machine offline

Every value the loop writes (train/*, eval/*, rollout/*, and the timings perf/*, time/*) is
logged against the loop's own step (the `step` metric is every chart's x-axis), and the run's
resolved config is the W&B run's config. A run directory keeps its W&B run: the id is written
to RUN/wandb.json when the run first starts, and running the same command again (a resume)
continues that W&B run; the steps redone after the checkpoint are logged again at their own
steps. Only process 0 logs. W&B keeps its files in the run directory's local folder
(RUN/wandb/; for a gs:// run, storage.local_folder's), where offline runs wait for `wandb sync`.

wandb is an optional extra (pip install 'jaxllm[wandb]'); it is imported only when enabled.
"""

import json
import pathlib
import secrets
import string
import tempfile
from collections.abc import Iterable
from typing import Any

import ml_collections

from jaxllm import storage
from jaxllm.errors import ConfigError

ID_FILE = "wandb.json"


def enabled(config) -> bool:
  """Whether `config` (a stage's config, or a pipeline's) asks for W&B logging."""
  return bool(config.get("logging", {}).get("wandb", {}).get("enabled", False))


def _wandb():
  try:
    import wandb
  except ImportError as e:
    raise ConfigError("config.logging.wandb.enabled=True needs the wandb package: pip install "
                      "'jaxllm[wandb]' (or pip install wandb).") from e
  return wandb


class WandbRun:
  """One W&B run bound to a directory (its id kept in DIR/wandb.json): `log` values at a step,
  `log_images`, `summarize`, `finish`."""

  def __init__(self, directory, settings: ml_collections.ConfigDict, config: dict[str, Any],
               *, job_type: str = "train"):
    wandb = _wandb()
    root = storage.path(directory)
    id_file = root / ID_FILE
    saved = json.loads(id_file.read_text()) if id_file.is_file() else {}
    run_id = saved.get("id") or "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    local = storage.local_folder(directory)
    local.mkdir(parents=True, exist_ok=True)
    tags = [t.strip() for t in str(settings.tags).split(",") if t.strip()]
    self.run = wandb.init(
        project=settings.project or None, entity=settings.entity or None,
        name=settings.name or root.name, group=settings.group or None, tags=tags or None,
        job_type=job_type, id=run_id, resume="allow", dir=str(local), config=config,
        allow_val_change=True, mode=settings.mode or None, reinit="finish_previous")
    self.run.define_metric("step")
    self.run.define_metric("*", step_metric="step")
    if not saved:
      root.mkdir(parents=True, exist_ok=True)
      storage.write_text(id_file, json.dumps(
          {"id": run_id, "project": self.run.project, "entity": settings.entity,
           "url": self.run.url}, indent=1) + "\n")

  def log(self, step: int, values: dict[str, float]) -> None:
    self.run.log({**values, "step": int(step)})

  def log_images(self, files: Iterable) -> None:
    """Uploads image files (local or gs://) under their names without the extension."""
    wandb = _wandb()
    with tempfile.TemporaryDirectory() as tmp:
      images = {}
      for file in files:
        file = storage.path(file)
        local = pathlib.Path(tmp) / file.name
        local.write_bytes(file.read_bytes())  # W&B reads local files
        images[file.stem] = wandb.Image(str(local))
      if images:
        self.run.log(images)

  def summarize(self, values: dict[str, Any]) -> None:
    """Values shown on the run's page and in the runs table (not charted against steps)."""
    self.run.summary.update(values)

  def finish(self) -> None:
    self.run.finish()
