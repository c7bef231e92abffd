"""The summary of an RL run, from its metrics.jsonl: held-out numbers at the first and last eval,
rollout numbers over the first and last iterations, and a reward-hacking warning.

A learned reward (RLHF) can rise while what it stands for falls: when the reward model's score
of held-out replies goes up between the first and last eval while their verifiable accuracy goes
down by more than one standard error of the difference, sqrt(2 p (1 - p) / n) with n the
questions (or the rollouts' reward rises while their accuracy falls by as much, n the samples
in a window), the report says so.
Written to WORKDIR/rl_report.json and printed at the end of experiments/rl.py.
"""

import json

import numpy as np

from jaxllm import rundir, storage
from jaxllm.train import metrics as metrics_lib

EVAL_KEYS = ("eval/qa_accuracy", "eval/reward_model_score", "eval/format", "eval/sample_accuracy")
ROLLOUT_KEYS = ("rollout/reward_mean", "rollout/accuracy", "rollout/reward_reward_model",
                "rollout/response_length", "rollout/kl_ref")


def summarize(lines: list[dict], window: int = 10) -> dict:
  """{"eval": {key: [first, last]}, "rollout": {key: [mean of first window, of last]},
  "eval_steps", "warnings": [...]}."""
  evals = [m for m in lines if any(k in m for k in EVAL_KEYS)]
  rollouts = [m for m in lines if "rollout/reward_mean" in m]
  out: dict = {"eval_steps": [evals[0]["step"], evals[-1]["step"]] if evals else [],
               "eval": {}, "rollout": {}, "warnings": []}
  for key in EVAL_KEYS:
    seen = [m[key] for m in evals if key in m]
    if seen:
      out["eval"][key] = [seen[0], seen[-1]]
  for key in ROLLOUT_KEYS:
    seen = [m[key] for m in rollouts if key in m]
    if seen:
      n = min(window, max(1, len(seen) // 2))
      out["rollout"][key] = [float(np.mean(seen[:n])), float(np.mean(seen[-n:]))]
  delta = lambda d, k: d[k][1] - d[k][0] if k in d else None
  rm, acc = delta(out["eval"], "eval/reward_model_score"), delta(out["eval"], "eval/qa_accuracy")
  questions = next((m["eval/questions"] for m in evals if "eval/questions" in m), None)
  if (rm is not None and acc is not None and rm > 0
      and acc < -_noise(out["eval"]["eval/qa_accuracy"][0], questions)):
    out["warnings"].append(
        f"reward hacking: the reward model's held-out score rose by {rm:+.3f} while held-out "
        f"accuracy changed by {acc:+.3f}.")
  reward = delta(out["rollout"], "rollout/reward_reward_model")
  sample_acc = delta(out["rollout"], "rollout/accuracy")
  samples = next((m["rollout/samples"] for m in rollouts if "rollout/samples" in m), None)
  n = min(window, max(1, len(rollouts) // 2)) * samples if samples else None
  if (reward is not None and sample_acc is not None and reward > 0
      and sample_acc < -_noise(out["rollout"]["rollout/accuracy"][0], n)):
    out["warnings"].append(
        f"reward hacking: the rollouts' reward-model score rose by {reward:+.3f} while their "
        f"accuracy changed by {sample_acc:+.3f}.")
  return out


def _noise(p: float, n: float | None) -> float:
  """One standard error of the difference of two accuracies near p over n items each (0 when
  n is unknown)."""
  return float(np.sqrt(2 * p * (1 - p) / n)) if n else 0.0


def write(workdir) -> dict:
  """Summarises WORKDIR/metrics.jsonl into WORKDIR/rl_report.json; returns the summary."""
  workdir = storage.path(workdir)
  summary = summarize(metrics_lib.read_metrics(workdir))
  rundir.write_text(workdir / "rl_report.json", json.dumps(summary, indent=1) + "\n")
  return summary


def describe(summary: dict) -> str:
  """A few lines for the console."""
  rows = [f"  {k}: {a:.4f} -> {b:.4f}" for part in ("eval", "rollout")
          for k, (a, b) in summary[part].items()]
  steps = summary["eval_steps"]
  head = (f"RL report (held-out evals at steps {steps[0]} and {steps[-1]}; rollouts over the "
          "first and last iterations):" if steps else "RL report (rollouts, first and last "
          "iterations):")
  return "\n".join([head, *rows, *[f"WARNING: {w}" for w in summary["warnings"]]])
