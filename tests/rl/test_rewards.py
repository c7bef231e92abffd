"""Verifiable rewards: number parsing, final-answer extraction in both styles, format and tool-use
checks, weighted composition, and agreement with the world's own scorer."""

import numpy as np
import pytest

from jaxllm.data import world
from jaxllm.errors import ConfigError
from jaxllm.rl import rewards


@pytest.mark.parametrize("text,value", [
    ("1,234", 1234.0), ("-5", -5.0), ("+3", 3.0), ("3.50", 3.5), (".5", 0.5), ("$12", 12.0),
    ("-$4", -4.0), ("$-4", -4.0), ("\u22127", -7.0), ("12 apples", 12.0), ("12.", 12.0),
    (" 1,200.75 ", 1200.75), ("- 5", -5.0), ("1,23", None), ("1.2.3", None), ("abc", None),
    ("", None), ("12,34,567", None), ("five", None)])
def test_parse_number(text, value):
  assert rewards.parse_number(text) == value


def test_final_answer_reads_the_last_answer_line_or_tag():
  reply = "Cost: 3 * 4 = 12.\nThe answer is 1,200.\n"
  assert rewards.final_answer(reply) == "1,200"
  assert rewards.final_answer("the answer is: $4.50. Done") == "$4.50"
  assert rewards.final_answer("The answer is 3.\nNo wait. The answer is 5.") == "5"
  assert rewards.final_answer("I think 12.") is None
  assert rewards.final_answer("<answer> 7 </answer>", "tag") == "7"
  assert rewards.final_answer("<answer>1</answer> then <answer>2</answer>", "tag") == "2"
  assert rewards.final_answer("The answer is 7.", "tag") is None
  with pytest.raises(ValueError, match="boxed"):
    rewards.final_answer("x", "boxed")


def test_correct_compares_numbers_by_value_and_handles_refusals():
  assert rewards.correct("Total: 1200.\nThe answer is 1,200.", "1200") == 1.0
  assert rewards.correct("The answer is 1200.0.", "1,200") == 1.0
  assert rewards.correct("The answer is -3.", "3") == 0.0
  assert rewards.correct("The answer is Oslo.", "oslo") == 1.0
  assert rewards.correct("12", "12") == 0.0  # no final answer line
  assert rewards.correct("I don't know.", "I don't know") == 1.0
  assert rewards.correct("I don't know.", "4") == 0.0
  assert rewards.correct("The answer is 4.", "I don't know") == 0.0
  assert rewards.correct("<answer>4</answer>", "4", style="tag") == 1.0


def test_correct_agrees_with_the_world_scorer_on_world_replies():
  data = world.generate(0)
  for record in data["train"]["sft"][:300]:
    reply, answer = record["messages"][-1]["content"], record["meta"]["answer"]
    assert rewards.correct(reply, answer) == world.score(reply, answer) == 1.0
    wrong = reply.replace(f"The answer is {answer}", "The answer is 987654")
    assert rewards.correct(wrong, answer) == world.score(wrong, answer)


def test_format_reward():
  assert rewards.well_formatted("a = 1 + 2 = 3.\nThe answer is 3.") == 1.0
  assert rewards.well_formatted("I don't know.") == 1.0
  assert rewards.well_formatted("The answer is 3. And more text") == 0.0
  assert rewards.well_formatted("The answer is 3.\nThe answer is 4.") == 0.0
  assert rewards.well_formatted("The answer is .") == 0.0
  assert rewards.well_formatted("") == 0.0
  assert rewards.well_formatted("work\n<answer>3</answer>", "tag") == 1.0
  assert rewards.well_formatted("<answer>3</answer> trailing", "tag") == 0.0


def test_tool_use_reward():
  registry = rewards.tools_lib.default_registry()
  call = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "6 * 7"}}<|/tool_call|>'
  assert rewards.tool_use("Let me compute." + call, {"tool_result": "42"}, registry) == 1.0
  assert rewards.tool_use("Let me compute." + call, {"tool_result": "41"}, registry) == 0.0
  assert rewards.tool_use("No call.", {"tool_result": "42"}, registry) == 0.0
  assert rewards.tool_use("No call.", {}, registry) == 1.0
  broken = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "6 *"}}<|/tool_call|>'
  assert rewards.tool_use(broken, {}, registry) == 0.0  # the tool reports an error
  assert rewards.tool_use('<|tool_call|>{"name": "web"}<|/tool_call|>', {}, registry) == 0.0
  assert rewards.tool_use("<|tool_call|>not json", {}, registry) == 0.0


def test_weighted_sum_and_logged_components():
  records = [{"prompt": "q", "answer": "4"}] * 3
  replies = ["The answer is 4.", "so 4\nThe answer is 5.", "4"]
  r = rewards.make_rewards({"correct": 1.0, "format": 0.5})
  total, parts = r.evaluate(records, replies)
  np.testing.assert_allclose(parts["correct"], [1, 0, 0])
  np.testing.assert_allclose(parts["format"], [1, 1, 0])
  np.testing.assert_allclose(total, [1.5, 0.5, 0.0])
  only_format = rewards.make_rewards({"correct": 0.0, "format": 1.0})
  total, parts = only_format.evaluate(records, replies)
  assert set(parts) == {"correct", "format"}  # accuracy logged, not optimised
  np.testing.assert_allclose(total, [1, 1, 0])
  learned = rewards.Rewards({"reward_model": lambda recs, reps: np.array([len(x) for x in reps])},
                            {"reward_model": 0.1})
  np.testing.assert_allclose(learned.evaluate(records, replies)[0], [1.6, 2.1, 0.1], rtol=1e-6)
  with pytest.raises(ConfigError, match="every reward weight is 0"):
    rewards.make_rewards({"correct": 0.0})
  with pytest.raises(ConfigError, match="reward_model"):
    rewards.make_rewards({"reward_model": 1.0})
  with pytest.raises(ConfigError, match="lenght"):
    rewards.make_rewards({"lenght": 1.0})


def test_learned_reward_scores_prompt_and_reply_conversations():
  seen = []

  def scorer(params, conversations):
    seen.extend(conversations)
    return [float(params) * len(c) for c in conversations]

  fn = rewards.learned(scorer, 2.0)
  out = fn([{"prompt": "hi"}, {"messages": [{"role": "system", "content": "s"},
                                            {"role": "user", "content": "u"}]}], ["a", "b"])
  np.testing.assert_allclose(out, [4.0, 6.0])
  assert seen[0] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
  assert seen[1][-1] == {"role": "assistant", "content": "b"} and len(seen[1]) == 3
