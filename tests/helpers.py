"""Shared test helpers."""

import functools
from pathlib import Path

from jaxllm import config as config_lib
from jaxllm.train.metrics import read_metrics  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def load_script(name: str):
  """Imports experiments/<name>.py as a module (the scripts are not a package); once, since a
  script defines absl flags."""
  return config_lib.import_file(ROOT / "experiments" / f"{name}.py")


def train_losses(workdir) -> dict[int, float]:
  return {m["step"]: m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m}
