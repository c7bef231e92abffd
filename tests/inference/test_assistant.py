"""The tool-call loop, driven by a scripted sampler: calls run, results go back, errors too."""

import json

import numpy as np
import pytest

from jaxllm.data import chat
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.inference import assistant, tools
from jaxllm.inference.sampler import SampleOutput


@pytest.fixture(scope="module")
def tok():
  return train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)


def _encode(tok, text):
  """Ids of text where the special-token strings become their single ids."""
  out, rest = [], text
  specials = [chat.IM_END, chat.TOOL_CALL, chat.TOOL_CALL_END]
  while rest:
    positions = [(rest.find(s), s) for s in specials if s in rest]
    if not positions:
      return out + tok.encode(rest)
    at, special = min(positions)
    out += tok.encode(rest[:at]) + [tok.token_id(special)]
    rest = rest[at + len(special):]
  return out


class Scripted:
  """Plays back assistant texts in order, stopping at the first stop token like the sampler."""

  def __init__(self, tok, replies):
    self.tok, self.replies, self.prompts = tok, list(replies), []

  def generate(self, prompts, max_new_tokens, *, stop_tokens=(), **_):
    self.prompts.append(self.tok.decode(prompts[0]))
    ids = _encode(self.tok, self.replies.pop(0))
    ends = [i for i, t in enumerate(ids) if t in stop_tokens]
    ids = ids[:ends[0] + 1] if ends else ids[:max_new_tokens]
    n = len(ids)
    return SampleOutput(np.array([ids]), np.array([n]), np.zeros((1, n)), np.zeros((1, n)),
                        np.array([bool(ends)]))


def _call(name, **arguments):
  return chat.TOOL_CALL + json.dumps({"name": name, "arguments": arguments}) + chat.TOOL_CALL_END


USER = [{"role": "user", "content": "What is 12 * 7?"}]


def test_a_tool_call_runs_and_its_result_is_fed_back(tok):
  sampler = Scripted(tok, ["Let me compute." + _call("calculator", expression="12 * 7")
                           + "ignored after the call",
                           "The answer is 84." + chat.IM_END])
  added = assistant.respond(sampler, tok, USER, tools.default_registry())
  assert added == [
      {"role": "assistant", "content": "Let me compute.",
       "tool_calls": [{"name": "calculator", "arguments": {"expression": "12 * 7"}}]},
      {"role": "tool", "content": "84"},
      {"role": "assistant", "content": "The answer is 84."}]
  # The second round's prompt holds the call and the tool's answer, then a new assistant turn.
  assert sampler.prompts[1].endswith("<|im_start|>tool\n84<|im_end|>\n<|im_start|>assistant\n")
  chat.validate_messages(USER + added)  # a valid conversation to continue


def test_unknown_tools_and_unreadable_calls_become_error_messages(tok):
  sampler = Scripted(tok, [_call("weather", city="Lyon"),
                           chat.TOOL_CALL + "{not json" + chat.TOOL_CALL_END,
                           "I cannot check that." + chat.IM_END])
  added = assistant.respond(sampler, tok, USER, tools.default_registry())
  assert added[1]["content"].startswith("error: unknown tool 'weather'")
  assert added[2]["tool_calls"][0]["name"] == assistant.INVALID_CALL
  assert added[3]["content"].startswith("error: could not read the tool call")
  assert added[-1] == {"role": "assistant", "content": "I cannot check that."}
  chat.validate_messages(USER + added)


def test_tool_rounds_are_limited_and_plain_answers_pass_through(tok):
  calls = [_call("calculator", expression="1+1")] * 3
  sampler = Scripted(tok, calls + ["Done." + chat.IM_END])
  added = assistant.respond(sampler, tok, USER, tools.default_registry(), max_tool_rounds=2)
  assert [m["role"] for m in added] == ["assistant", "tool"] * 2 + ["assistant"]
  # The last round runs without tools: a call there is not executed and not kept as content.
  assert added[-1] == {"role": "assistant", "content": ""}
  plain = Scripted(tok, ["Hello." + chat.IM_END])
  assert assistant.respond(plain, tok, USER, None) == [{"role": "assistant", "content": "Hello."}]
