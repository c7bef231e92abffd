"""The eval harness: which suites apply to which run, and the qa-derived numbers on fixed
replies."""

import ml_collections
import pytest

from jaxllm import config as config_lib
from jaxllm.errors import ConfigError
from jaxllm.eval import suites


def _record(question, answer, kind):
  return {"messages": [{"role": "user", "content": question},
                       {"role": "assistant", "content": "..."}],
          "meta": {"kind": kind, "answer": answer}}


@pytest.fixture
def ctx():
  records = [_record("What is 2 + 3?", "5", "arithmetic"),
             _record("Where does Ada live?", "Riga", "fact"),
             _record("What is Bo's birth month?", "I don't know", "unknown"),
             _record("Where does Cy live?", "Lima", "fact")]
  config = suites.default_config()
  run = ml_collections.ConfigDict()
  c = suites.Context(run=run, config=config, stage="sft",
                     data={"eval": {"sft": records}}, shared={})
  c.cache["qa"] = ["2 + 3 = 5.\nThe answer is 5.",  # right, well formed
                   "Ada lives in the town of Riga. The answer is Riga",  # right, no final period
                   "I don't know.",  # right refusal
                   "I don't know."]  # over-refusal
  return c


def test_qa_format_and_refusal_from_fixed_replies(ctx):
  qa = suites.qa_suite(ctx)
  assert qa["accuracy"] == pytest.approx(3 / 4)
  assert qa["accuracy_fact"] == pytest.approx(1 / 2)
  assert qa["accuracy_unknown"] == 1.0 and qa["accuracy_arithmetic"] == 1.0
  # Extracted answers: "5", "Riga", none, none -> SQuAD EM against 5 / Riga / I don't know / Lima.
  assert qa["exact_match"] == pytest.approx(2 / 4)
  assert suites.format_suite(ctx)["compliance"] == pytest.approx(3 / 4)
  refusal = suites.refusal_suite(ctx)
  assert refusal == {"refusal_rate": 1.0, "over_refusal_rate": pytest.approx(1 / 3),
                     "unanswerable": 1}


def test_stage_of_and_which_suites_apply():
  pre = config_lib.pretrain_config("tiny")
  assert suites.stage_of(pre) == "pretrain"
  assert suites.stage_of(config_lib.sft_config("tiny")) == "sft"
  assert suites.stage_of(config_lib.dpo_config("tiny")) == "dpo"
  assert suites.stage_of(config_lib.rl_config("tiny")) == "rl"
  assert suites.stage_of(config_lib.reward_config("tiny")) == "reward"
  c = suites.default_config()
  assert suites.applies("qa", "pretrain", c) is None
  assert "chat template" in suites.applies("math", "pretrain", c)
  assert "does not generate" in suites.applies("qa", "reward", c)
  assert suites.applies("reward", "reward", c) is None
  assert "config.reward.model" in suites.applies("reward", "sft", c)
  c.reward.model = "/some/rm"
  assert suites.applies("reward", "dpo", c) is None


def test_suites_from_a_comma_separated_override():
  c = suites.default_config()
  c.suites = ("qa,format", "lm")
  assert suites.selected(c) == ["qa", "format", "lm"]


def test_validate_names_the_field():
  c = suites.default_config()
  c.suites = ("qa", "vibes")
  with pytest.raises(ConfigError, match=r"config.suites has \['vibes'\]"):
    suites.validate(c)
  c = suites.default_config()
  c.math.pass_k = 16
  with pytest.raises(ConfigError, match="config.math.pass_k=16"):
    suites.validate(c)


def test_table_lists_metrics_and_skips():
  text = suites.table({"stage": "sft", "step": 7, "metrics": {"qa/accuracy": 0.25, "qa/n": 4},
                       "skipped": {"tool": "why"}})
  assert "sft run, step 7" in text and "qa/accuracy  0.25" in text and "skipped tool: why" in text
