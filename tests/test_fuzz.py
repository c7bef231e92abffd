"""Property tests (hypothesis) of what reads untrusted text: the chat template and the parser of
model tool calls, the calculator tool, the config argument parser and the command-line override
check. Each either gives its result or its documented error, never anything else."""


import ml_collections
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.data import chat
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.errors import ConfigError, UserError
from jaxllm.inference import tools

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
MARKERS = [chat.TOOL_CALL, chat.TOOL_CALL_END, chat.IM_END, chat.IM_START]
# Text that mixes arbitrary characters with the special markers a model may emit.
marked_text = st.lists(st.one_of(st.text(max_size=20), st.sampled_from(MARKERS)),
                       max_size=8).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3), max_leaves=8)
calls = st.lists(st.fixed_dictionaries({
    "name": st.text(min_size=1, max_size=12),
    "arguments": st.dictionaries(st.text(max_size=8), json_values, max_size=3)}), max_size=3)


@pytest.fixture(scope="module")
def byte_tok():
  return train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)


@FUZZ
@given(text=marked_text)
def test_parse_assistant_returns_or_raises_tool_call_error(text):
  try:
    content, parsed = chat.parse_assistant(text)
  except chat.ToolCallError as e:
    assert e.index >= 0
    return
  assert isinstance(content, str) and chat.TOOL_CALL not in content
  assert all(set(c) == {"name", "arguments"} for c in parsed)


@FUZZ
@given(content=st.text(), tool_calls=calls)
def test_tool_calls_rendered_as_the_template_writes_them_parse_back(content, tool_calls):
  assume(not any(m in content for m in MARKERS))
  text = content + "".join(chat.TOOL_CALL + chat.tool_call_json(c) + chat.TOOL_CALL_END
                           for c in tool_calls) + chat.IM_END
  assert chat.parse_assistant(text) == (content, tool_calls)


roles = st.one_of(st.sampled_from(chat.ROLES), st.text(max_size=6))
messages = st.lists(st.fixed_dictionaries(
    {"role": roles, "content": st.one_of(marked_text, st.integers())},
    optional={"tool_calls": st.one_of(calls, st.text(max_size=5))}), max_size=5)


@FUZZ
@given(conversation=messages, generation_prompt=st.booleans())
def test_chat_template_renders_or_names_the_bad_message(byte_tok, conversation, generation_prompt):
  try:
    ids, mask = chat.render_chat(byte_tok, conversation, add_generation_prompt=generation_prompt)
  except UserError as e:
    assert str(e).startswith(("message", "messages"))
    return
  assert len(ids) == len(mask) and set(mask) <= {0, 1}
  assert all(0 <= i < byte_tok.vocab_size for i in ids)
  # The loss is on assistant turns only: each ends with an end token the model must learn.
  assert (sum(mask) > 0) == any(m["role"] == "assistant" for m in conversation)
  # Contents are text, never control: a user who types <|im_end|> or <|im_start|> gets it back
  # as text, and the conversation keeps exactly one start and one end token per message.
  decoded = byte_tok.decode(ids)
  for m in conversation:
    assert m["content"] in decoded
  n = len(conversation)
  assert ids.count(byte_tok.token_id(chat.IM_END)) == n
  assert ids.count(byte_tok.token_id(chat.IM_START)) == n + generation_prompt
  tool_calls = sum(len(m.get("tool_calls", [])) for m in conversation)
  assert ids.count(byte_tok.token_id(chat.TOOL_CALL)) == tool_calls


@FUZZ
@given(expression=st.one_of(st.text(max_size=60), st.from_regex(
    r"[0-9 +\-*/%().^x×÷,e]{1,60}", fullmatch=True)))
def test_calculator_answers_or_refuses_and_never_runs_code(expression):
  try:
    result = tools.calculate(expression)
  except tools.ToolError:
    result = None
  else:
    float(result)  # a number, as text
  answer = tools.default_registry().run({"name": "calculator",
                                         "arguments": {"expression": expression}})
  assert answer == result if result is not None else answer.startswith("error: ")
  assert " failed (" not in answer  # refused as input, never a crash inside the tool


@FUZZ
@given(call=st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=3),
                      st.fixed_dictionaries({"name": st.sampled_from(["calculator", "nope"]),
                                             "arguments": json_values})))
def test_the_tool_registry_answers_any_call_with_text(call):
  answer = tools.default_registry().run(call)
  assert isinstance(answer, str) and " failed (" not in answer


@FUZZ
@given(arg=st.text(max_size=40))
def test_config_argument_parser_gives_a_config_or_a_config_error(arg):
  try:
    out = config_lib.parse_arg(arg, steps=100, batch=8, lr=1e-3, name="tiny", packed=True)
  except ConfigError as e:
    assert "config argument" in str(e)
    return
  assert isinstance(out.steps, int) and isinstance(out.lr, float)
  assert isinstance(out.packed, bool) and isinstance(out.name, str)


@FUZZ
@given(path=st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
                     min_size=1, max_size=4))
def test_command_line_override_check_finds_exactly_the_missing_fields(path):
  config = config_lib.base_config("tiny")
  arg = "--config." + ".".join(path) + "=1"
  node, exists = config, True
  for key in path:
    if isinstance(node, ml_collections.ConfigDict) and key in node:
      node = node[key]
    else:
      exists = False
      break
  found = cli.unknown_override(config, [arg])
  assert (found is None) == exists
  if found:
    assert found.startswith(arg.split("=")[0]) and "has no field" in found
