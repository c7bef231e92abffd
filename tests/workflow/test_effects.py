"""The report card from fixed eval.json files: every row's before, after, n and p-value worked
out by hand, hard cases reported apart, and the table that opens report.md."""

import json
import math

import pytest

from jaxllm.workflow import effects, report


def _eval(root, stage, suites):
  path = root / stage / "eval.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"step": 1, "metrics": {}, "skipped": {}, "suites": suites}))


def _two_sided(k, n):
  """The exact two-sided sign-test p-value of k improvements among n changed questions."""
  tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
  return min(1.0, 2 * tail)


@pytest.fixture
def root(tmp_path):
  # sft: 10 questions; the base gets 1 right, SFT 7 (6 improved, 0 worse)
  base_qa = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
  sft_qa = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
  _eval(tmp_path, "pretrain", {
      "qa": {"accuracy": 0.1, "outcomes": base_qa},
      "lm": {"bits_per_byte": 0.5, "bits_per_byte_by_text": [0.5, 0.4, 0.6, 0.5]}})
  _eval(tmp_path, "sft", {
      "qa": {"accuracy": 0.7, "outcomes": sft_qa, "accuracy_answerable": 0.8},
      "refusal": {"refusal_rate": 0.25, "outcomes": [1, 0, 0, 0], "refusal_rate_lookalike": 0.0,
                  "unanswerable_lookalike": 2, "over_refusal_rate": 0.2, "unanswerable": 4,
                  "accuracy_answerable": 0.6, "answerable": 5},
      # the working shown on 1 of 5 word problems (2 right: accuracy counts 4, the 5th is hard)
      "math": {"accuracy": 0.25, "outcomes": [1, 0, 0, 0], "outcomes_all": [1, 0, 0, 0, 1],
               "steps_shown": 0.2, "outcomes_steps": [0, 0, 1, 0, 0]},
      "lm": {"bits_per_byte": 0.55, "bits_per_byte_by_text": [0.6, 0.5, 0.6, 0.5]}})
  _eval(tmp_path, "reward", {"reward": {
      "outcomes": [1] * 18 + [0] * 2, "pairwise_accuracy_hidden": 0.5, "pairs_hidden": 6}})
  _eval(tmp_path, "dpo", {
      "qa": {"accuracy": 0.7, "outcomes": sft_qa, "accuracy_answerable": 0.78},
      "refusal": {"refusal_rate": 0.0, "outcomes": [0, 0, 0, 0], "refusal_rate_lookalike": 0.5,
                  "unanswerable_lookalike": 2, "over_refusal_rate": 0.0, "unanswerable": 4,
                  "accuracy_answerable": 0.4, "answerable": 5},
      # the working shown on 4 of the same 5 (3 improved, 0 worse); 1 right of 5
      "math": {"accuracy": 0.2, "outcomes": [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
               "accuracy_hard": 0.0, "questions_hard": 3, "outcomes_all": [0, 0, 0, 0, 1],
               "steps_shown": 0.8, "outcomes_steps": [1, 1, 1, 0, 1]}})
  _eval(tmp_path, "rl", {
      "math": {"accuracy": 0.5, "outcomes": [1, 0, 1, 1, 1, 1, 0, 0, 0, 0],
               "accuracy_hard": 1 / 3, "questions_hard": 3},
      "rag": {"accuracy_without_retrieval": 0.0, "accuracy_with_retrieval": 0.75,
              "outcomes": [1, 1, 1, 0], "outcomes_without_retrieval": [0, 0, 0, 0]},
      "tool": {"accuracy": 0.5, "accuracy_without_tool": 0.25, "outcomes": [1, 1, 0, 0],
               "outcomes_without_tool": [0, 1, 0, 0]}})
  (tmp_path / "config.json").write_text(json.dumps({"init_from": {"rl": "dpo"}}))
  return tmp_path


def test_every_row_by_hand(root):
  rows = {r["stage"]: r for r in effects.stage_effects(root)}
  assert list(rows) == ["sft", "reward", "dpo", "rl", "rag", "tool", "forgetting"]
  for r in rows.values():
    assert {"stage", "metric", "before", "after", "delta", "n", "p_value"} <= set(r)
  sft = rows["sft"]
  assert (sft["before"], sft["after"], sft["n"]) == (0.1, 0.7, 10)
  assert sft["delta"] == pytest.approx(0.6) and sft["p_value"] == pytest.approx(_two_sided(6, 6))
  reward = rows["reward"]
  assert (reward["before"], reward["after"], reward["n"]) == (0.5, 0.9, 20)
  assert reward["p_value"] == pytest.approx(2 * sum(math.comb(20, i) for i in range(3)) / 2**20)
  assert reward["subsets"]["hidden flaws (need facts or exact arithmetic)"]["n"] == 6
  dpo = rows["dpo"]
  assert (dpo["before"], dpo["after"], dpo["n"], dpo["improved"]) == (0.2, 0.8, 5, 3)
  assert dpo["p_value"] == pytest.approx(_two_sided(3, 3))
  # the guard: exact match on every one of the same problems (the hard one too)
  assert dpo["guard"]["exact match, the same problems"] == {"before": 0.4, "after": 0.2, "n": 5}
  assert dpo["also"] == {  # what DPO's other pairs did to refusals, reported beside it
      "refusal rate, held-out unanswerable questions": {"before": 0.25, "after": 0.0, "n": 4},
      "refusal rate, look-alike names": {"before": 0.0, "after": 0.5, "n": 2},
      "over-refusal rate, held-out answerable questions": {"before": 0.2, "after": 0.0, "n": 5}}
  rl = rows["rl"]  # from dpo: 0.2 -> 0.5; improved 4 (questions 3, 4, 5, 6), worse 1 (q 2)
  assert (rl["before"], rl["after"], rl["improved"], rl["worsened"]) == (0.2, 0.5, 4, 1)
  assert rl["p_value"] == pytest.approx(_two_sided(4, 5))
  assert rl["subsets"]["hard templates"] == {"before": 0.0, "after": 1 / 3, "n": 3}
  rag, tool = rows["rag"], rows["tool"]
  assert (rag["before"], rag["after"], rag["improved"]) == (0.0, 0.75, 3)
  assert "(rl)" in rag["metric"]  # the final policy is measured
  assert (tool["before"], tool["after"], tool["improved"], tool["worsened"]) == (0.25, 0.5, 1, 0)
  forgetting = rows["forgetting"]
  assert forgetting["delta"] == pytest.approx(0.05)
  assert (forgetting["improved"], forgetting["worsened"]) == (0, 2)  # two texts got worse


def test_rows_need_the_same_questions_on_both_sides(root):
  path = root / "rl" / "eval.json"
  result = json.loads(path.read_text())
  result["suites"]["math"]["outcomes"] = [1, 0]  # another question set
  path.write_text(json.dumps(result))
  assert "rl" not in {r["stage"] for r in effects.stage_effects(root)}


def test_rl_starts_from_the_stage_the_pipeline_says(root):
  (root / "config.json").write_text(json.dumps({"init_from": {"rl": "sft"}}))
  _eval(root, "sft", {"math": {"accuracy": 0.5, "outcomes": [1, 0, 1, 1, 1, 1, 0, 0, 0, 0]}})
  rl = next(r for r in effects.stage_effects(root) if r["stage"] == "rl")
  assert rl["before"] == 0.5 and rl["delta"] == 0 and "from sft" in rl["metric"]


def test_the_report_opens_with_the_card_and_writes_effects_json(root):
  text = report.write(root).read_text()
  assert text.index("## What each stage did") < text.index("## Stages and compute")
  assert "| sft | exact match, held-out questions (base: few-shot plain text) | 0.1 | 0.7 | " \
         "0.6 | 10 |" in text
  assert "- dpo, exact match, the same problems: before 0.4, after 0.2, n 5" in text
  assert "- dpo, refusal rate, look-alike names: before 0, after 0.5, n 2" in text
  rows = json.loads((root / "effects.json").read_text())
  assert [r["stage"] for r in rows] == ["sft", "reward", "dpo", "rl", "rag", "tool",
                                        "forgetting"]
  assert (root / "effects.png").stat().st_size > 1000
