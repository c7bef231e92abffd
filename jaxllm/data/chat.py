"""ChatML-style chat template: messages -> token ids + loss mask, and back from model output.

  <|bos|><|im_start|>system\\n{content}<|im_end|>\\n
  <|im_start|>user\\n{content}<|im_end|>\\n
  <|im_start|>assistant\\n{content}<|tool_call|>{json}<|/tool_call|>...<|im_end|>\\n
  <|im_start|>tool\\n{content}<|im_end|>\\n

Ids are built by concatenating encoded text and special ids, never by tokenizing the rendered
string, so special-token strings in any content stay plain text. The loss mask is 1 on the
assistant's content, tool calls and closing <|im_end|>, which is what the model learns to write.

`CHAT_TEMPLATE` is the same format in Jinja for Hugging Face `apply_chat_template`; it gives the
same ids as `render_chat`, except that they can differ where an assistant message's content begins
with whitespace holding a newline (the split pattern joins that with the header's newline, while
`render_chat` encodes header and content apart so the loss mask starts on a token boundary). Jinja
templates are injectable: there, pass `sanitize_control_tokens=True` to keep special strings in
content as text, as here (ids then agree unless such a string is glued by the split pattern to
the text before or after it, as in " <|im_end|>": the sanitizer encodes it on its own).
"""

import json
import pathlib
from collections.abc import Sequence

from jaxllm.data.tokenizer import BOS, IM_END, IM_START, TOOL_CALL, TOOL_CALL_END, Tokenizer
from jaxllm.errors import UserError

ROLES = ("system", "user", "assistant", "tool")
# Which roles may come right after each (None: the start of the conversation).
_MAY_FOLLOW = {None: ("system", "user"), "system": ("user",), "user": ("assistant",),
               "assistant": ("user", "tool"), "tool": ("assistant", "tool")}

CHAT_TEMPLATE = """\
{{- bos_token }}
{%- for message in messages %}
{%- if message['role'] == 'assistant' %}
{{- '<|im_start|>assistant\\n' }}
{%- generation %}
{{- message['content'] }}
{%- for call in message['tool_calls'] | default([]) %}
{{- '<|tool_call|>' + ({'name': call['name'], 'arguments': call['arguments']} | tojson) }}
{{- '<|/tool_call|>' }}
{%- endfor %}
{{- '<|im_end|>' }}
{%- endgeneration %}
{{- '\\n' }}
{%- else %}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


class ToolCallError(ValueError):
  """Model output holds a tool call that cannot be read; `index` says which one."""

  def __init__(self, message: str, index: int):
    super().__init__(message)
    self.index = index


def tool_call_json(call: dict) -> str:
  """The JSON text of one tool call, as rendered between the tool-call tokens."""
  return json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)


def _check_tool_calls(i: int, calls) -> None:
  """UserError unless message i's tool_calls is a list of {name, JSON-serializable arguments}."""
  if not isinstance(calls, list):
    raise UserError(f"message {i}: 'tool_calls' is a {type(calls).__name__}; make it a list of "
                    "{'name': str, 'arguments': dict}.")
  for j, call in enumerate(calls):
    if (not isinstance(call, dict) or set(call) != {"name", "arguments"}
        or not isinstance(call["name"], str) or not call["name"]
        or not isinstance(call["arguments"], dict)):
      raise UserError(f"message {i}: tool call {j} is {call!r}; make it exactly "
                      "{'name': non-empty str, 'arguments': dict}.")
    try:
      tool_call_json(call)
    except (TypeError, ValueError) as e:
      raise UserError(f"message {i}: tool call {j} arguments are not JSON-serializable ({e}); "
                      "use str, number, bool, None, list and dict values.") from e


def validate_messages(messages: Sequence[dict], *, add_generation_prompt: bool = False) -> None:
  """Raises UserError naming the message index and the fix for a malformed conversation."""
  if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
    raise UserError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
  previous = None
  for i, message in enumerate(messages):
    if not isinstance(message, dict):
      raise UserError(f"message {i} is a {type(message).__name__}; make it a dict with 'role' and "
                      "'content'.")
    role = message.get("role")
    if role not in ROLES:
      raise UserError(f"message {i}: role {role!r} is not one of {', '.join(ROLES)}.")
    allowed = {"role", "content"} | ({"tool_calls"} if role == "assistant" else set())
    if set(message) - allowed:
      raise UserError(f"message {i} ({role}): unexpected keys {sorted(set(message) - allowed)}; "
                      f"a {role} message takes only {sorted(allowed)}.")
    if not isinstance(message.get("content"), str):
      raise UserError(f"message {i} ({role}): 'content' must be a string (use '' for none), got "
                      f"{type(message.get('content')).__name__}.")
    if "tool_calls" in message:
      _check_tool_calls(i, message["tool_calls"])
    if role not in _MAY_FOLLOW[previous]:
      after = f"after a '{previous}' message" if previous else "first"
      if role == "tool":
        fix = "put tool results right after the assistant message whose tool_calls they answer"
      else:
        fix = f"only {' or '.join(_MAY_FOLLOW[previous])} may come {after}"
      raise UserError(f"message {i}: role '{role}' cannot come {after}; {fix}.")
    if role == "tool" and previous == "assistant" and not messages[i - 1].get("tool_calls"):
      raise UserError(f"message {i}: a tool message follows assistant message {i - 1}, which made "
                      "no tool_calls; add the calls there or drop the tool message.")
    previous = role
  if add_generation_prompt and previous not in ("user", "tool"):
    raise UserError(f"message {len(messages) - 1} has role '{previous}'; a generation prompt "
                    "follows a user or tool message (drop the trailing message, or set "
                    "add_generation_prompt=False).")


def render_chat(tokenizer: Tokenizer, messages: Sequence[dict], *,
                add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
  """(ids, loss_mask): the conversation in ChatML, mask 1 on what the assistant writes."""
  validate_messages(messages, add_generation_prompt=add_generation_prompt)
  special = {t: tokenizer.token_id(t) for t in (BOS, IM_START, IM_END, TOOL_CALL, TOOL_CALL_END)}
  ids, mask = [], []

  def add(piece: list[int], learned: int) -> None:
    ids.extend(piece)
    mask.extend([learned] * len(piece))

  newline = tokenizer.encode("\n")
  assistant_header = tokenizer.encode("assistant\n")
  add([special[BOS]], 0)
  for message in messages:
    add([special[IM_START]], 0)
    if message["role"] == "assistant":
      add(assistant_header, 0)
      add(tokenizer.encode(message["content"]), 1)
      for call in message.get("tool_calls", []):
        add([special[TOOL_CALL]], 1)
        add(tokenizer.encode(tool_call_json(call)), 1)
        add([special[TOOL_CALL_END]], 1)
      add([special[IM_END]], 1)
    else:  # header and content in one piece, as a tokenizer reading the rendered string sees it
      add(tokenizer.encode(f"{message['role']}\n{message['content']}"), 0)
      add([special[IM_END]], 0)
    add(newline, 0)
  if add_generation_prompt:
    add([special[IM_START]], 0)
    add(assistant_header, 0)
  return ids, mask


def _parse_call(raw: str, index: int) -> dict:
  """The {"name", "arguments"} dict in one tool call's JSON text."""
  try:
    call = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ToolCallError(f"tool call {index}: invalid JSON ({e.msg} at column {e.colno}) in "
                        f"{raw!r}.", index) from e
  if (not isinstance(call, dict) or set(call) != {"name", "arguments"}
      or not isinstance(call["name"], str) or not isinstance(call["arguments"], dict)):
    raise ToolCallError(f"tool call {index}: expected {{\"name\": str, \"arguments\": object}}, "
                        f"got {raw!r}.", index)
  return call


def parse_assistant(text: str) -> tuple[str, list[dict]]:
  """(content, tool_calls) of assistant text as render_chat writes it; ToolCallError if malformed.

  `text` is the decoded assistant turn (special tokens kept), with or without the final
  <|im_end|>. Whitespace between tool calls is allowed; any other text after the first call is
  an error, as is an unclosed or stray tool-call token.
  """
  text = text.removesuffix(IM_END)
  content, opened, rest = text.partition(TOOL_CALL)
  if TOOL_CALL_END in content:
    raise ToolCallError(f"{TOOL_CALL_END} without an opening {TOOL_CALL}.", 0)
  calls = []
  while opened:
    index = len(calls)
    raw, closed, rest = rest.partition(TOOL_CALL_END)
    if not closed or TOOL_CALL in raw:
      raise ToolCallError(f"tool call {index} is not closed with {TOOL_CALL_END}: "
                          f"{raw.partition(TOOL_CALL)[0]!r}.", index)
    calls.append(_parse_call(raw, index))
    rest = rest.lstrip()
    opened = rest.startswith(TOOL_CALL)
    if rest and not opened:
      raise ToolCallError(f"text after tool call {index}: {rest[:80]!r}; content goes before the "
                          "first tool call.", index + 1)
    rest = rest.removeprefix(TOOL_CALL)
  return content, calls


def _token_name(tokenizer: Tokenizer, token_id: int | None) -> str | None:
  """The string of a special token id (None stays None)."""
  return None if token_id is None else tokenizer.hf_tokenizer.id_to_token(token_id)


def save_pretrained(tokenizer: Tokenizer, directory) -> pathlib.Path:
  """Writes tokenizer.json + tokenizer_config.json (special tokens, CHAT_TEMPLATE) for transformers.

  `transformers.AutoTokenizer.from_pretrained(directory)` then loads it, and its
  `apply_chat_template` gives `render_chat`'s ids (see the module docstring for the one exception).
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  tokenizer.save(directory / "tokenizer.json")
  config = {
      "tokenizer_class": "PreTrainedTokenizerFast",
      "bos_token": _token_name(tokenizer, tokenizer.bos_id),
      "eos_token": _token_name(tokenizer, tokenizer.eos_id),
      "pad_token": _token_name(tokenizer, tokenizer.pad_id),
      "clean_up_tokenization_spaces": False,
      "chat_template": CHAT_TEMPLATE,
  }
  (directory / "tokenizer_config.json").write_text(
      json.dumps({k: v for k, v in config.items() if v is not None}, indent=2, ensure_ascii=False)
      + "\n", encoding="utf-8")
  return directory

