"""The pipeline's report: DIR/report.md with PNG plots, from the files the stages wrote.

Reads DIR/pipeline.json (wall time per stage), DIR/data/stats.json and crawl_check.json,
DIR/tokenizer/stats.json, and for each training stage its config.json, metrics.jsonl and
eval.json. Writes:
- effects.json and effects.png: what each stage did to its held-out measure, before and after,
  with a paired p-value (jaxllm/workflow/effects.py); report.md opens with this table;
- loss_curves.png: train (and eval) loss against step, one panel per training stage;
- eval_by_stage.png: eval accuracies per stage as grouped bars;
- rl_curves.png: RL reward, rollout and held-out accuracy, KL to the reference when logged;
- reward_model.png: the reward model's held-out pairwise accuracy and margin against step;
- compute.png: training FLOPs and wall time per stage;
and report.md with the tables: stages and compute, cleaning, tokenizer, every eval metric.
Training FLOPs per stage = (6 N + 12 L T d_attn) per token (jaxllm/train/metrics.py) x the
positions trained on (steps x batch x seq_len x sequences per row x updates per step); sampling,
reference passes and evaluation are not counted.
"""

import json
import math
from typing import Any

from jaxllm import rundir, runs, storage
from jaxllm.models.config import ModelConfig
from jaxllm.train import metrics as metrics_lib
from jaxllm.workflow import effects as effects_lib

TRAINING = ("pretrain", "sft", "reward", "dpo", "rl")
BAR_METRICS = ("qa/accuracy", "qa/f1", "format/compliance", "refusal/refusal_rate",
               "math/accuracy", "rag/accuracy_without_retrieval", "rag/accuracy_with_retrieval",
               "tool/accuracy", "reward/pairwise_accuracy")
RL_CURVES = (("rollout/reward_mean", "rollout reward"), ("rollout/accuracy", "rollout accuracy"),
             ("eval/qa_accuracy", "held-out accuracy"), ("train/kl", "KL to reference"))


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
  points = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
  return [s for s, _ in points], [v for _, v in points]


def _json(path) -> Any:
  return json.loads(path.read_text()) if path.is_file() else None


def compute(stage: str, workdir) -> dict | None:
  """Positions trained on and training FLOPs of one training stage (from its config)."""
  config_path = workdir / "config.json"
  if not config_path.is_file():
    return None
  config = runs.read_config(workdir)
  cfg = ModelConfig(**config.model.to_dict())
  seq_len = config.data.seq_len
  per_row = 2 if stage in ("reward", "dpo") else 1
  updates = config.rl.epochs if stage == "rl" else 1  # minibatches split the batch
  rows = metrics_lib.read_metrics(workdir)
  steps = max((r["step"] for r in rows if "train/loss" in r), default=0)
  positions = steps * config.train.batch_size * seq_len * per_row * updates
  return {"steps": steps, "positions": positions,
          "flops": positions * metrics_lib.train_flops_per_token(cfg, seq_len),
          "params": metrics_lib.matmul_params(cfg)}


def _plt():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _y_from_zero(ax, values: list[float]) -> None:
  """The y axis starts at 0 so that a small change does not fill the panel; where values go
  below 0 (an RL or DPO loss), the panel says why it does not."""
  finite = [v for v in values if v is not None and math.isfinite(v)]
  if finite and min(finite) >= 0:
    ax.set_ylim(bottom=0)
  elif finite:
    ax.set_title(ax.get_title() + " (below 0: axis not from 0)", fontsize=8)


def plot_losses(root, path) -> bool:
  stages = [s for s in TRAINING if metrics_lib.read_metrics(root / s)]
  if not stages:
    return False
  plt = _plt()
  fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3), squeeze=False)
  for ax, stage in zip(axes[0], stages):
    rows = metrics_lib.read_metrics(root / stage)
    shown = []
    for key, style in (("train/loss", "-"), ("eval/loss", "o--")):
      x, y = series(rows, key)
      if x:
        ax.plot(x, y, style, label=key.split("/")[0], markersize=3)
        shown += y
    ax.set_title(stage)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    _y_from_zero(ax, shown)
    ax.legend(fontsize=7)
  fig.tight_layout()
  storage.save_figure(fig, path)
  plt.close(fig)
  return True


def plot_eval_bars(evals: dict[str, dict], path) -> bool:
  keys = [k for k in BAR_METRICS if any(k in e["metrics"] for e in evals.values())]
  if not keys:
    return False
  plt = _plt()
  fig, ax = plt.subplots(figsize=(min(14, max(6, 1.2 * len(keys))), 3.6))
  width = 0.8 / len(evals)
  for i, (stage, result) in enumerate(evals.items()):
    bar = ax.bar([j + i * width for j in range(len(keys))],
                 [result["metrics"].get(k) or 0.0 for k in keys], width, label=stage)
    for j, key in enumerate(keys):
      if result["metrics"].get(key) is None:  # the suite does not apply to this stage
        bar[j].set_visible(False)
        ax.text(j + i * width, 0.01, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
  ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
  ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=7)
  ax.set_ylabel("fraction")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7)
  ax.set_title("held-out evaluation by stage")
  fig.tight_layout()
  storage.save_figure(fig, path)
  plt.close(fig)
  return True


def plot_keys(rows: list[dict], curves, title: str, path) -> bool:
  kept, seen = [], []
  for key, label in curves:  # a curve equal to one already shown (the reward when it is the
    points = series(rows, key)  # accuracy) is left out, not drawn twice
    if points[0] and points not in seen:
      kept.append((key, label))
      seen.append(points)
  curves = kept
  if not curves:
    return False
  plt = _plt()
  fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), squeeze=False)
  for ax, (key, label) in zip(axes[0], curves):
    x, y = series(rows, key)
    ax.plot(x, y, "o-" if len(x) < 20 else "-", markersize=3)
    ax.set_title(label, fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel(key, fontsize=7)
    _y_from_zero(ax, y)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  storage.save_figure(fig, path)
  plt.close(fig)
  return True


def plot_compute(table: dict[str, dict], path) -> bool:
  stages = [s for s in table if table[s].get("seconds") is not None]
  if not stages:
    return False
  plt = _plt()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
  trained = [s for s in stages if table[s].get("flops")]  # data, tokenizer, eval: no bars
  ax1.bar(trained, [table[s]["flops"] for s in trained])
  ax1.set_yscale("log")
  ax1.set_title("training FLOPs (log scale)", fontsize=9)
  ax2.bar(stages, [table[s]["seconds"] for s in stages])
  ax2.set_title("wall seconds", fontsize=9)
  for ax in (ax1, ax2):
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
  fig.tight_layout()
  storage.save_figure(fig, path)
  plt.close(fig)
  return True


def plot_effects(rows: list[dict], path) -> bool:
  """Before and after bars per stage (fractions), and the forgetting change in bits per byte."""
  fractions = [r for r in rows if r["stage"] != "forgetting"]
  forgetting = [r for r in rows if r["stage"] == "forgetting"]
  if not rows:
    return False
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [5, 1]})
  ax = axes[0]
  x = range(len(fractions))
  ax.bar([i - 0.2 for i in x], [r["before"] for r in fractions], 0.4, label="before",
         color="#bbbbbb")
  ax.bar([i + 0.2 for i in x], [r["after"] for r in fractions], 0.4, label="after",
         color="#3b75af")
  ax.set_xticks(list(x))
  ax.set_xticklabels([r["stage"] for r in fractions])
  ax.set_ylim(0, 1)
  ax.set_ylabel("held-out accuracy / rate")
  ax.legend(fontsize=7)
  ax.set_title("what each stage did (held-out)", fontsize=9)
  ax = axes[1]
  if forgetting:
    r = forgetting[0]
    ax.bar([0, 1], [r["before"], r["after"]], color=["#bbbbbb", "#3b75af"])
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["base", "SFT"])
  ax.set_title("bits per byte", fontsize=9)
  fig.tight_layout()
  storage.save_figure(fig, path)
  plt.close(fig)
  return True


def effects_section(root) -> list[str]:
  """report.md's opening section, from the rows it writes to effects.json."""
  rows = effects_lib.stage_effects(root)
  if not rows:
    return []
  effects_lib.write(root, rows)
  lines = ["## What each stage did", "",
           "Held-out measures only (jaxllm/workflow/effects.py); p-value: paired sign test on the "
           "same questions (reward: exact binomial test against chance). Also in effects.json.",
           ""]
  lines += _table(["stage", "metric", "before", "after", "change", "questions", "p-value"],
                  [[r["stage"], r["metric"], r["before"], r["after"], r["delta"], r["n"],
                    "< 1e-12" if r["p_value"] < 1e-12 else r["p_value"]] for r in rows])
  notes = []
  for r in rows:
    for name, sub in {**r.get("subsets", {}), **r.get("guard", {}), **r.get("also", {})}.items():
      parts = ", ".join(f"{k} {_fmt(v)}" for k, v in sub.items())
      notes.append(f"- {r['stage']}, {name}: {parts}")
  if notes:
    lines += ["", "Reported apart (hard cases, guards and side effects):", ""] + notes
  lines.append("")
  if plot_effects(rows, root / "effects.png"):
    lines += ["![what each stage did](effects.png)", ""]
  return lines


def _fmt(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
      return f"{value:.3g}"
    return f"{value:.4g}" if not math.isnan(value) else "nan"
  if isinstance(value, int) and abs(value) >= 1e9:
    return f"{value:.3g}"
  if isinstance(value, int) and abs(value) >= 10_000:
    return f"{value:,}"
  return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
  return lines


def write(root, data_dir=None):
  """Writes root/report.md and its plots (root local or gs://); returns the report's path.
  `data_dir`: the data stage's folder when it is not root/data (a gs:// root keeps it in its
  local folder, jaxllm/workflow/pipeline.py Paths)."""
  root = storage.path(root)
  data_dir = storage.path(data_dir) if data_dir is not None else root / "data"
  status = _json(root / "pipeline.json") or {}
  lines = ["# Pipeline report", "",
           f"Run directory `{root}`. Each stage's own files are in its folder; numbers below "
           "are read from them.", ""]
  lines += effects_section(root)

  # Stages and compute.
  table = {}
  for stage in ("data", "tokenizer") + TRAINING + ("eval",):
    entry = dict(status.get(stage, {}))
    if stage in TRAINING:
      entry.update(compute(stage, root / stage) or {})
    if entry:
      table[stage] = entry
  lines += ["## Stages and compute", ""]
  lines += _table(["stage", "steps", "positions trained", "training FLOPs", "wall seconds",
                   "complete"],
                  [[s, e.get("steps"), e.get("positions"), e.get("flops"), e.get("seconds"),
                    e.get("complete")] for s, e in table.items()])
  total = sum(e.get("seconds") or 0 for e in table.values())
  lines += ["", f"Total wall time {total:.0f} s. FLOPs count training only (6N + attention per "
            "position); sampling, reference passes and evaluation are not counted.", ""]
  if plot_compute(table, root / "compute.png"):
    lines += ["![compute](compute.png)", ""]

  # Data.
  stats, check = _json(data_dir / "stats.json"), _json(data_dir / "crawl_check.json")
  if stats:
    lines += ["## Data: cleaning the crawl", ""]
    lines += _table(["step", "docs in", "kept", "dropped", "modified", "top drop reason"],
                    [[s["name"], s["docs_in"], s["kept"], s["dropped"], s.get("modified", 0),
                      _top_reason(s)] for s in stats["steps"]])
    lines.append("")
  if check:
    lines += ["Planted pages kept (jaxllm/data/crawl.py):", ""]
    lines += _table(["kind", "in", "kept", "kept fraction"],
                    [[k, v["in"], v["kept"], v["kept_fraction"]] for k, v in check.items()
                     if isinstance(v, dict)])
    lines += ["", f"World content kept: {check['content_kept']:.1%}; planted junk removed: "
              f"{check['junk_removed']:.1%}.", ""]
  tok = _json(root / "tokenizer" / "stats.json")
  if tok:
    lines += ["## Tokenizer", "",
              f"{tok['kind']} with {tok['vocab_size']} ids, trained on {tok['train']['documents']}"
              f" cleaned pages; held-out compression "
              f"{_fmt(tok['heldout']['bytes_per_token'])} bytes per token.", ""]

  # Training curves.
  lines += ["## Training", ""]
  if plot_losses(root, root / "loss_curves.png"):
    lines += ["![loss curves](loss_curves.png)", ""]
  rm_rows = metrics_lib.read_metrics(root / "reward")
  if plot_keys(rm_rows, (("eval/accuracy", "held-out pairwise accuracy"),
                         ("eval/margin", "held-out reward margin")),
               "reward model", root / "reward_model.png"):
    lines += ["![reward model](reward_model.png)", ""]
  rl_rows = metrics_lib.read_metrics(root / "rl")
  if plot_keys(rl_rows, RL_CURVES, "RL (GRPO)", root / "rl_curves.png"):
    lines += ["![RL curves](rl_curves.png)", ""]

  # Evaluation.
  evals = {s: e for s in TRAINING if (e := _json(root / s / "eval.json"))}
  if evals:
    lines += ["## Evaluation (held-out, jaxllm/eval/suites.py)", ""]
    if plot_eval_bars({s: e for s, e in evals.items() if s != "reward"},
                      root / "eval_by_stage.png"):
      lines += ["![eval by stage](eval_by_stage.png)", ""]
    keys = list(dict.fromkeys(k for e in evals.values() for k in e["metrics"]))
    lines += _table(["metric"] + [f"{s} (step {e['step']})" for s, e in evals.items()],
                    [[k] + [e["metrics"].get(k) for e in evals.values()] for k in keys])
    lines.append("")
    skipped: dict[str, list[str]] = {}
    for stage, e in evals.items():
      for suite, why in e.get("skipped", {}).items():
        skipped.setdefault(f"{stage}: {why}", []).append(suite)
    if skipped:
      lines += ["Suites not run where they do not apply:", ""]
      lines += [f"- {where} ({', '.join(suites)})" for where, suites in skipped.items()]
      lines.append("")
  path = root / "report.md"
  rundir.write_text(path, "\n".join(lines))
  print(f"wrote {path}")
  return path


def _top_reason(step: dict) -> str:
  reasons = step.get("reasons") or {}
  if not reasons:
    return ""
  reason, count = max(reasons.items(), key=lambda kv: kv[1])
  return f"{reason} ({count})"
