"""The report card: what each stage of the pipeline did to its held-out measure.

`stage_effects(root)` reads the eval.json of each stage under a pipeline directory and returns
one row per stage, {"stage", "metric", "before", "after", "delta", "n", "p_value", ...}:

  sft         exact match on held-out questions: the base model (plain text, few-shot) -> SFT
  reward      pairwise accuracy on held-out pairs whose flaw the text shows: chance (0.5) -> RM
  dpo         share of greedy replies to held-out word problems that show their working (a step
              `x op y = r`): SFT -> DPO, the behaviour of the pairs whose rejected reply skips
              the steps (guard: exact match on the same problems; the refusal set's rates are
              under "also": DPO's other pairs move them too)
  rl          greedy accuracy on held-out word problems: the run RL started from -> RL
  rag         accuracy on questions about people only the knowledge base describes: the final
              policy without retrieval -> with it
  tool        accuracy on big-number problems: the final policy without the calculator -> with it
  forgetting  bits per byte on held-out pretraining text: the base model -> SFT (delta is the
              change; lower is better)

p_value is the paired sign test on the same questions (jaxllm/eval/significance.py), or for the
reward model the exact binomial test against chance. Hard cases are reported apart in
"subsets" (hidden reward flaws, hard RL templates), never dropped; "guard" holds what a stage
must not make worse, and "also" what else it moved (DPO's refusal rates, look-alike names among
them). A stage without its eval.json has no row.
"""

import json
from typing import Any

from jaxllm import rundir, storage
from jaxllm.eval import significance

POLICY_ORDER = ("rl", "dpo", "sft")  # the final policy: the last of these with an eval.json


def _eval(root, stage: str) -> dict | None:
  path = root / stage / "eval.json"
  return json.loads(path.read_text()) if path.is_file() else None


def _suite(result: dict | None, suite: str) -> dict:
  return (result or {}).get("suites", {}).get(suite) or {}


def _paired(stage: str, metric: str, before: dict, after: dict, key: str = "outcomes",
            before_key: str | None = None, value: str = "accuracy",
            before_value: str | None = None, **extra) -> dict | None:
  """A row from per-question outcomes of the same questions before and after."""
  b, a = before.get(before_key or key), after.get(key)
  if b is None or a is None or len(a) != len(b) or not a:
    return None
  p, better, worse = significance.sign_test(b, a)
  before_v, after_v = before.get(before_value or value), after.get(value)
  return {"stage": stage, "metric": metric, "before": before_v, "after": after_v,
          "delta": after_v - before_v, "n": len(a), "p_value": p, "improved": better,
          "worsened": worse, **extra}


def _mean(outcomes) -> float | None:
  return sum(outcomes) / len(outcomes) if outcomes else None


def stage_effects(root, init_from: dict[str, str] | None = None) -> list[dict[str, Any]]:
  """The report-card rows of the pipeline directory `root` (see the module docstring)."""
  root = storage.path(root)
  if init_from is None:
    config = root / "config.json"
    init_from = (json.loads(config.read_text()).get("init_from") if config.is_file() else None)
    init_from = init_from or {"rl": "dpo"}
  evals = {s: _eval(root, s) for s in ("pretrain", "sft", "reward", "dpo", "rl")}
  rows: list[dict | None] = []

  base, sft = _suite(evals["pretrain"], "qa"), _suite(evals["sft"], "qa")
  rows.append(_paired("sft", "exact match, held-out questions (base: few-shot plain text)",
                      base, sft))

  rm = _suite(evals["reward"], "reward")
  if rm.get("outcomes"):
    k, n = sum(rm["outcomes"]), len(rm["outcomes"])
    subsets = {"hidden flaws (need facts or exact arithmetic)": {
        "accuracy": rm.get("pairwise_accuracy_hidden"), "n": rm.get("pairs_hidden")}}
    rows.append({"stage": "reward", "metric": "pairwise accuracy, held-out visible flaws",
                 "before": 0.5, "after": k / n, "delta": k / n - 0.5, "n": n,
                 "p_value": significance.binomial_test(k, n, 0.5), "subsets": subsets})

  before, after = _suite(evals["sft"], "math"), _suite(evals["dpo"], "math")
  right_b, right_a = before.get("outcomes_all"), after.get("outcomes_all")
  guard = {"exact match, the same problems": {
      "before": _mean(right_b), "after": _mean(right_a), "n": len(right_a or ())}}
  refused_b, refused_a = _suite(evals["sft"], "refusal"), _suite(evals["dpo"], "refusal")
  also = {name: {"before": refused_b.get(key), "after": refused_a.get(key),
                 "n": refused_a.get(n)} for name, key, n in (
      ("refusal rate, held-out unanswerable questions", "refusal_rate", "unanswerable"),
      ("refusal rate, look-alike names", "refusal_rate_lookalike", "unanswerable_lookalike"),
      ("over-refusal rate, held-out answerable questions", "over_refusal_rate", "answerable"))
      if refused_a.get(key) is not None}
  rows.append(_paired("dpo", "replies that show their working, held-out word problems", before,
                      after, key="outcomes_steps", value="steps_shown", guard=guard,
                      **({"also": also} if also else {})))

  start = init_from.get("rl", "dpo")
  before, after = _suite(evals.get(start), "math"), _suite(evals["rl"], "math")
  rows.append(_paired("rl", f"greedy accuracy, held-out word problems (from {start})", before,
                      after, subsets={"hard templates": {
                          "before": before.get("accuracy_hard"),
                          "after": after.get("accuracy_hard"),
                          "n": after.get("questions_hard")}}))

  final = next((s for s in POLICY_ORDER if evals.get(s)), None)
  rag = _suite(evals.get(final), "rag")
  rows.append(_paired("rag", f"accuracy, knowledge-base questions: without -> with retrieval "
                      f"({final})", rag, rag, before_key="outcomes_without_retrieval",
                      value="accuracy_with_retrieval",
                      before_value="accuracy_without_retrieval"))
  tool = _suite(evals.get(final), "tool")
  rows.append(_paired("tool", f"accuracy, big-number problems: without -> with the calculator "
                      f"({final})", tool, tool, before_key="outcomes_without_tool",
                      before_value="accuracy_without_tool"))

  base, sft_lm = _suite(evals["pretrain"], "lm"), _suite(evals["sft"], "lm")
  b, a = base.get("bits_per_byte_by_text"), sft_lm.get("bits_per_byte_by_text")
  if b and a and len(a) == len(b):
    p, better, worse = significance.sign_test([-x for x in b], [-x for x in a])
    rows.append({"stage": "forgetting", "metric": "bits per byte, held-out pretraining text "
                 "(base -> SFT; lower is better)", "before": base["bits_per_byte"],
                 "after": sft_lm["bits_per_byte"],
                 "delta": sft_lm["bits_per_byte"] - base["bits_per_byte"], "n": len(a),
                 "p_value": p, "improved": better, "worsened": worse})
  return [r for r in rows if r is not None]


def write(root, rows: list[dict]):
  path = storage.path(root) / "effects.json"
  rundir.write_text(path, json.dumps(rows, indent=1) + "\n")
  return path
