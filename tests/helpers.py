"""Shared test helpers."""

import functools
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def load_script(name: str):
  """Imports experiments/<name>.py as a module (the scripts are not a package); once, since a
  script defines absl flags."""
  spec = importlib.util.spec_from_file_location(f"experiments_{name}",
                                                ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def read_metrics(workdir) -> list[dict]:
  return [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(workdir) -> dict[int, float]:
  return {m["step"]: m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m}
