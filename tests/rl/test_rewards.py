"""Verifiable rewards: the tool-use check, weighted composition and the logged components (the
answer checks themselves: tests/data/test_answers.py)."""

import numpy as np
import pytest

from jaxllm.errors import ConfigError
from jaxllm.rl import rewards


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
