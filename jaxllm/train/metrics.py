"""Metric logging (metrics.jsonl, TensorBoard, console) and the FLOPs / MFU accounting."""

import json
import math
import time
from typing import Any

from jaxllm import rundir, storage
from jaxllm.errors import UserError
from jaxllm.models.config import ModelConfig
from jaxllm.parallel import target

# Dense bf16 peak FLOP/s per chip (vendor datasheets). MFU is reported against these; pass
# config.train.peak_flops_per_device for other chips or for float32 compute.
PEAK_FLOPS_BF16 = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; PCIe is 756e12
    "A100": 312e12,
    "L4": 121e12,
    **{kind: spec.peak_flops for kind, spec in target.CHIPS.items()},  # the TPUs
}


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float | None:
  """Peak bf16 FLOP/s for a jax device_kind string, or None if unknown (e.g. CPU); `override`
  (config.train.peak_flops_per_device) wins when positive."""
  if override:
    return override
  for key, value in PEAK_FLOPS_BF16.items():  # ordered so that longer names match first
    if key in device_kind:
      return value
  return None


def matmul_params(cfg: ModelConfig) -> int:
  """Parameters that take part in a matmul per token (all but embedding lookups, norms, biases)."""
  d, h = cfg.d_model, cfg.resolved_head_dim
  attn = d * cfg.num_heads * h * 2 + d * cfg.num_kv_heads * h * 2
  mlp = (3 if cfg.mlp == "swiglu" else 2) * d * cfg.mlp_dim
  return cfg.num_layers * (attn + mlp) + d * cfg.vocab_size  # the last term is the LM head


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """6 N + 12 L T (heads x head_dim): forward + backward, attention counted over the full T x T
  score matrix as in the PaLM paper (appendix B); N from matmul_params."""
  attention = 12 * cfg.num_layers * seq_len * cfg.num_heads * cfg.resolved_head_dim
  return 6 * matmul_params(cfg) + attention


def add_std(values: dict[str, float]) -> dict[str, float]:
  """Objectives report a spread as mean squares (`x_sq` next to the mean `x`, both averaged by
  the loop); this replaces each pair with the standard deviation `x_std`."""
  out = dict(values)
  for key in [k for k in values if k.endswith("_sq")]:
    mean = values.get(key[:-3])
    if mean is not None:
      out[key[:-3] + "_std"] = math.sqrt(max(out.pop(key) - mean * mean, 0.0))
  return out


def read_metrics(workdir, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
  """WORKDIR/metrics.jsonl (or `name`: "perf.jsonl") as the MetricWriter wrote it, one dict per
  line ([] when absent).

  A last line cut off by a killed run is left out; any other unreadable line is an error.
  """
  path = storage.path(workdir) / name
  if not path.is_file():
    return []
  lines = path.read_text().splitlines()
  out = []
  for n, line in enumerate(lines, 1):
    try:
      out.append(json.loads(line))
    except ValueError:
      if n < len(lines):
        raise UserError(f"{path}:{n} is not a JSON object; the file was edited or damaged "
                        "(delete the line, or the run directory to start over).") from None
  return out


TIMING_PREFIXES = ("perf/", "time/")


class MetricWriter:
  """Appends one JSON object per call to WORKDIR/metrics.jsonl and writes TensorBoard scalars.

  Timings ("perf/...", "time/...": step seconds, tokens/s, MFU, rollout phases) go to
  WORKDIR/perf.jsonl instead, so that metrics.jsonl holds only what the seed decides: two runs
  with the same config and seed write byte-identical metrics.jsonl files on CPU.

  On a gs:// run directory the three are written in a local copy (jaxllm/storage.py Mirror)
  and uploaded whole at most every UPLOAD_SECONDS, at every `flush` (each checkpoint) and at
  `close`. `wandb_run` (jaxllm/train/wandb_logging.py), when given, gets every value too and is
  finished at `close`.
  """

  UPLOAD_SECONDS = 30.0

  def __init__(self, workdir, enabled: bool = True, wandb_run=None):
    self.enabled = enabled
    self._wandb = wandb_run
    self._mirror = self._tb = None
    self._uploaded = time.monotonic()
    if enabled:
      self._mirror = storage.Mirror(workdir, ("metrics.jsonl", "perf.jsonl", "tensorboard"))
      self.path = self._mirror.local / "metrics.jsonl"
      self.perf_path = self._mirror.local / "perf.jsonl"
      from tensorboardX import SummaryWriter  # lazy: heavy import
      self._tb = SummaryWriter(str(self._mirror.local / "tensorboard"))

  def truncate_after(self, step: int) -> int:
    """Drops lines logged after `step` (they belong to steps a resume will redo); returns how
    many metrics.jsonl lines went."""
    if not self.enabled:
      return 0
    dropped = 0
    for path in (self.path, self.perf_path):
      if path.exists():
        lines = path.read_text().splitlines()
        kept = [ln for ln in lines if _step_of(ln) is not None and _step_of(ln) <= step]
        if len(kept) < len(lines):  # a new file renamed over the old: a kill keeps one whole
          rundir.write_text(path, "".join(ln + "\n" for ln in kept))
        if path == self.path:
          dropped = len(lines) - len(kept)
    return dropped

  def write(self, step: int, values: dict[str, Any]) -> None:
    if not self.enabled:
      return
    records = {self.path: {"step": int(step)}, self.perf_path: {"step": int(step)}}
    for k, v in values.items():
      v = float(v)
      path = self.perf_path if k.startswith(TIMING_PREFIXES) else self.path
      records[path][k] = v if math.isfinite(v) else str(v)
    for path, record in records.items():
      if len(record) > 1 or (path == self.path and not values):
        with path.open("a") as f:
          f.write(json.dumps(record) + "\n")
    for k, v in values.items():
      self._tb.add_scalar(k, float(v), int(step))
    if self._wandb is not None:
      self._wandb.log(step, {k: float(v) for k, v in values.items()})
    if time.monotonic() - self._uploaded > self.UPLOAD_SECONDS:
      self.flush()

  def flush(self) -> None:
    """Makes everything written so far visible in the run directory (uploads it when gs://)."""
    if self._tb is not None:
      self._tb.flush()
      self._mirror.sync()
      self._uploaded = time.monotonic()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._mirror.close()
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None


def _step_of(line: str) -> int | None:
  """The step of a metrics line, or None for a blank or half-written one."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None
