"""Shared test helpers."""

from pathlib import Path

import jax

from jaxllm.train.metrics import read_metrics  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]


def scaled_gradients(loss_fn, factor: float):
  """`loss_fn` whose loss and metrics are unchanged but whose gradients are `factor` times
  larger: a deliberate break for tests that claim two ways of computing gradients agree."""
  def scaled(params, batch, rng, model, **kwargs):
    loss, metrics = loss_fn(params, batch, rng, model, **kwargs)
    return loss + (factor - 1.0) * (loss - jax.lax.stop_gradient(loss)), metrics
  return scaled


def train_losses(workdir) -> dict[int, float]:
  return {m["step"]: m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m}
