"""Chat formats: messages -> token ids + loss mask, and back from model output.

A `ChatFormat` says how messages are framed; `format_of` reads it off the tokenizer's vocabulary.
ChatML (`CHATML`, with our special tokens; Qwen's tokenizers have it too):

  <|bos|><|im_start|>system\\n{content}<|im_end|>\\n
  <|im_start|>user\\n{content}<|im_end|>\\n
  <|im_start|>assistant\\n{content}<|tool_call|>{json}<|/tool_call|>...<|im_end|>\\n
  <|im_start|>tool\\n{content}<|im_end|>\\n

Header style (Llama 3), no separator between messages:

  <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{content}<|eot_id|>
  <|start_header_id|>user<|end_header_id|>\\n\\n{content}<|eot_id|>
  <|start_header_id|>assistant<|end_header_id|>\\n\\n{content}{tool calls}<|eot_id|>

Ids are built by concatenating encoded text and special ids, never by tokenizing the rendered
string, so special-token strings in any content stay plain text; each text is encoded as it reads
inside the rendered string (`Tokenizer.encode_inside`: SentencePiece-style tokenizers put no "▁"
before it where tokenizing the whole string would not). The loss mask is 1 on the
assistant's content, tool calls and closing end token, which is what the model learns to write.
Tool-call markers are single ids when the vocabulary has them (ours, Qwen's `<tool_call>`);
otherwise (Llama 3) they are text, encoded in one piece with the content and calls around them,
as a tokenizer reading the rendered string sees them.

`chat_template(fmt)` is the same format in Jinja for Hugging Face `apply_chat_template`
(`CHAT_TEMPLATE` for ours); it gives the same ids as `render_chat`, except that they can differ
where an assistant message's content begins with whitespace that the split pattern joins with the
header's newline (`render_chat` encodes header and content apart so the loss mask starts on a
token boundary). Jinja templates are injectable: there, pass `sanitize_control_tokens=True` to
keep special strings in content as text, as here (ids then agree unless such a string is glued by
the split pattern to the text before or after it, as in " <|im_end|>": the sanitizer encodes it
on its own).
"""

import dataclasses
import json
from collections.abc import Sequence

from jaxllm import storage
from jaxllm.data.tokenizer import BOS, IM_END, IM_START, TOOL_CALL, TOOL_CALL_END, Tokenizer
from jaxllm.errors import UserError

ROLES = ("system", "user", "assistant", "tool")
# Which roles may come right after each (None: the start of the conversation).
_MAY_FOLLOW = {None: ("system", "user"), "system": ("user",), "user": ("assistant",),
               "assistant": ("user", "tool"), "tool": ("assistant", "tool")}

START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
HEADER_TOKENS = (START_HEADER, END_HEADER, EOT)  # a vocabulary with all three: header style
CHATML_TOKENS = (IM_START, IM_END)
# Tool-call markers, the first pair the vocabulary holds (else the first, as text): ours, Qwen's.
TOOL_CALL_PAIRS = ((TOOL_CALL, TOOL_CALL_END), ("<tool_call>", "</tool_call>"))


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """How messages are framed: ChatML when `header_end` is None, else header style (Llama 3).

  ChatML message:  start + "{role}{header_sep}{content}" + end + separator
  Header style:    start + "{role}" + header_end + "{header_sep}{content}" + end + separator

  `bos` (None: none) opens the conversation once. An assistant message's content is followed by
  its tool calls, each `tool_call` + JSON + `tool_call_end`. bos, start, header_end and end are
  special tokens; the tool-call markers are tokens or plain text; header_sep and separator text.
  """
  bos: str | None
  start: str
  header_end: str | None
  header_sep: str
  end: str
  separator: str
  tool_call: str
  tool_call_end: str


CHATML = ChatFormat(bos=BOS, start=IM_START, header_end=None, header_sep="\n", end=IM_END,
                    separator="\n", tool_call=TOOL_CALL, tool_call_end=TOOL_CALL_END)
LLAMA3 = ChatFormat(bos="<|begin_of_text|>", start=START_HEADER, header_end=END_HEADER,
                    header_sep="\n\n", end=EOT, separator="", tool_call=TOOL_CALL,
                    tool_call_end=TOOL_CALL_END)


def _jinja_string(text: str) -> str:
  """`text` as a single-quoted Jinja string literal."""
  return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def chat_template(fmt: ChatFormat) -> str:
  """`fmt` as a Jinja chat template for Hugging Face `apply_chat_template`.

  The assistant's content, tool calls and end token sit in `{% generation %}`, so
  `return_assistant_tokens_mask=True` gives render_chat's loss mask. BOS comes from the
  tokenizer's `bos_token` (left out when `fmt.bos` is None).
  """
  def out(expression: str) -> str:
    return "{{- " + expression + " }}"

  if fmt.header_end is None:
    assistant_head = _jinja_string(f"{fmt.start}assistant{fmt.header_sep}")
    role_head = f"{_jinja_string(fmt.start)} + message['role'] + {_jinja_string(fmt.header_sep)}"
  else:
    assistant_head = _jinja_string(f"{fmt.start}assistant{fmt.header_end}{fmt.header_sep}")
    role_head = (f"{_jinja_string(fmt.start)} + message['role'] + "
                 f"{_jinja_string(fmt.header_end + fmt.header_sep)}")
  call = "({'name': call['name'], 'arguments': call['arguments']} | tojson)"
  lines = [out("bos_token")] if fmt.bos is not None else []
  lines += [
      "{%- for message in messages %}",
      "{%- if message['role'] == 'assistant' %}",
      out(assistant_head),
      "{%- generation %}",
      out("message['content']"),
      "{%- for call in message['tool_calls'] | default([]) %}",
      out(f"{_jinja_string(fmt.tool_call)} + {call}"),
      out(_jinja_string(fmt.tool_call_end)),
      "{%- endfor %}",
      out(_jinja_string(fmt.end)),
      "{%- endgeneration %}",
      *([out(_jinja_string(fmt.separator))] if fmt.separator else []),
      "{%- else %}",
      out(f"{role_head} + message['content'] + {_jinja_string(fmt.end + fmt.separator)}"),
      "{%- endif %}",
      "{%- endfor %}",
      "{%- if add_generation_prompt %}",
      out(assistant_head),
      "{%- endif %}",
  ]
  return "\n".join(lines) + "\n"


CHAT_TEMPLATE = chat_template(CHATML)


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


def prompt_messages(prompt) -> list[dict]:
  """The conversation a model is asked to continue: a string is one user message; a list of
  messages, or a record holding "messages" (else "prompt"), loses its final assistant turns
  (the reply to give)."""
  if isinstance(prompt, str):
    return [{"role": "user", "content": prompt}]
  if isinstance(prompt, dict):
    return prompt_messages(prompt["messages"] if "messages" in prompt else prompt["prompt"])
  messages = list(prompt)
  while messages and messages[-1]["role"] == "assistant":
    messages.pop()
  return messages


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


def _token_name(tokenizer: Tokenizer, token_id: int | None) -> str | None:
  """The string of a special token id (None stays None)."""
  return None if token_id is None else tokenizer.hf_tokenizer.id_to_token(token_id)


def _has(tokenizer: Tokenizer, token: str) -> bool:
  """Whether `token` is one token of the vocabulary."""
  return tokenizer.hf_tokenizer.token_to_id(token) is not None


def _detect(tokenizer: Tokenizer) -> ChatFormat | None:
  """The chat format of the tokenizer's vocabulary, None when it supports none."""
  bos = _token_name(tokenizer, tokenizer.bos_id)
  tool_call, tool_call_end = next(
      (pair for pair in TOOL_CALL_PAIRS if all(_has(tokenizer, t) for t in pair)),
      TOOL_CALL_PAIRS[0])
  if all(_has(tokenizer, t) for t in HEADER_TOKENS):
    return dataclasses.replace(LLAMA3, bos=bos, tool_call=tool_call, tool_call_end=tool_call_end)
  if all(_has(tokenizer, t) for t in CHATML_TOKENS):
    return dataclasses.replace(CHATML, bos=bos, tool_call=tool_call, tool_call_end=tool_call_end)
  return None


def format_name(tokenizer: Tokenizer) -> str:
  """"ChatML" or "Llama 3 header" (the format `format_of` gives), or "no chat" when the
  vocabulary has neither."""
  fmt = _detect(tokenizer)
  if fmt is None:
    return "no chat"
  return "ChatML" if fmt.header_end is None else "Llama 3 header"


def format_of(tokenizer: Tokenizer) -> ChatFormat:
  """The chat format of the tokenizer's vocabulary: header style when it has all of
  <|start_header_id|>, <|end_header_id|> and <|eot_id|> (Llama 3), else ChatML.

  BOS is the tokenizer's BOS token (None when it has none, as Qwen's). The tool-call markers are
  the first pair of TOOL_CALL_PAIRS the vocabulary holds, else ours as text.
  """
  fmt = _detect(tokenizer)
  if fmt is None:
    missing = [t for t in CHATML_TOKENS if not _has(tokenizer, t)]
    raise UserError(f"the tokenizer's vocabulary ({tokenizer.vocab_size} ids) lacks "
                    f"{' and '.join(missing)} for ChatML and is not header style (that needs "
                    f"{', '.join(HEADER_TOKENS)}); train it with the default special_tokens, or "
                    "import a Hugging Face tokenizer with "
                    "jaxllm.interop.hf_tokenizer.import_tokenizer, which adds the ChatML tokens.")
  return fmt


def stop_ids(tokenizer: Tokenizer) -> list[int]:
  """The ids that end an assistant turn: the format's end token, then EOS when it differs (a base
  model may end with EOS instead)."""
  end = tokenizer.token_id(format_of(tokenizer).end)
  return [end] + ([tokenizer.eos_id] if tokenizer.eos_id not in (None, end) else [])


def _marker(tokenizer: Tokenizer, marker: str) -> int | str:
  """A tool-call marker's id when it is a token, else its text."""
  token_id = tokenizer.hf_tokenizer.token_to_id(marker)
  return marker if token_id is None else token_id


def _encode_parts(tokenizer: Tokenizer, parts: Sequence[str | int]) -> list[int]:
  """Ids of `parts`, which follow other text: an int is an id; adjacent strings are encoded as
  one text."""
  ids, text, after_special = [], "", False
  for part in [*parts, None]:  # None: the end
    if isinstance(part, str):
      text += part
      continue
    ids += tokenizer.encode_inside(text, after_special=after_special) if text else []
    ids += [] if part is None else [part]
    text, after_special = "", True
  return ids


def render_chat(tokenizer: Tokenizer, messages: Sequence[dict], *,
                add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
  """(ids, loss_mask): the conversation in the tokenizer's chat format (`format_of`), mask 1 on
  what the assistant writes."""
  validate_messages(messages, add_generation_prompt=add_generation_prompt)
  fmt = format_of(tokenizer)
  start, end = tokenizer.token_id(fmt.start), tokenizer.token_id(fmt.end)
  tool_call, tool_call_end = (_marker(tokenizer, m) for m in (fmt.tool_call, fmt.tool_call_end))
  ids, mask = [], []

  def add(piece: list[int], learned: int) -> None:
    ids.extend(piece)
    mask.extend([learned] * len(piece))

  def encode(text: str) -> list[int]:  # every other text follows a special token
    return tokenizer.encode_inside(text, after_special=True)

  def opening(role: str) -> tuple[list[int], str]:
    """The ids opening a `role` message, and the text that goes before its content."""
    if fmt.header_end is None:
      return [start], f"{role}{fmt.header_sep}"
    return [start, *encode(role), tokenizer.token_id(fmt.header_end)], fmt.header_sep

  separator = encode(fmt.separator) if fmt.separator else []
  add([] if fmt.bos is None else [tokenizer.token_id(fmt.bos)], 0)
  for message in messages:
    head, text = opening(message["role"])
    add(head, 0)
    if message["role"] == "assistant":
      add(encode(text), 0)
      body = [message["content"]]
      for call in message.get("tool_calls", []):
        body += [tool_call, tool_call_json(call), tool_call_end]
      add(_encode_parts(tokenizer, body + [end]), 1)
    else:  # header text and content in one piece, as a tokenizer reading the rendered string
      #     sees it
      add(encode(text + message["content"]), 0)
      add([end], 0)
    add(separator, 0)
  if add_generation_prompt:
    head, text = opening("assistant")
    add(head + encode(text), 0)
  return ids, mask


def _parse_call(raw: str, index: int) -> dict:
  """The {"name", "arguments"} dict in one tool call's JSON text."""
  try:
    call = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ToolCallError(f"tool call {index}: invalid JSON ({e.msg}, column {e.colno}) in "
                        f"{raw!r}.", index) from e
  if (not isinstance(call, dict) or set(call) != {"name", "arguments"}
      or not isinstance(call["name"], str) or not isinstance(call["arguments"], dict)):
    raise ToolCallError(f"tool call {index}: expected {{\"name\": str, \"arguments\": object}}, "
                        f"got {raw!r}.", index)
  return call


def parse_assistant(text: str, fmt: ChatFormat = CHATML) -> tuple[str, list[dict]]:
  """(content, tool_calls) of assistant text as render_chat writes it in `fmt`; ToolCallError if
  malformed.

  `text` is the decoded assistant turn (special tokens kept), with or without the final end token
  (<|im_end|> in ChatML). Whitespace between tool calls is allowed; any other text after the
  first call is an error, as is an unclosed or stray tool-call marker.
  """
  opening, closing = fmt.tool_call, fmt.tool_call_end
  text = text.removesuffix(fmt.end)
  content, opened, rest = text.partition(opening)
  if closing in content:
    raise ToolCallError(f"{closing} without an opening {opening}.", 0)
  calls = []
  while opened:
    index = len(calls)
    raw, closed, rest = rest.partition(closing)
    if not closed or opening in raw:
      raise ToolCallError(f"tool call {index} is not closed with {closing}: "
                          f"{raw.partition(opening)[0]!r}.", index)
    calls.append(_parse_call(raw, index))
    rest = rest.lstrip()
    opened = rest.startswith(opening)
    if rest and not opened:
      raise ToolCallError(f"text after tool call {index}: {rest[:80]!r}; content goes before the "
                          "first tool call.", index + 1)
    rest = rest.removeprefix(opening)
  return content, calls


def save_pretrained(tokenizer: Tokenizer, directory):
  """Writes tokenizer.json + tokenizer_config.json (special tokens, the chat template of
  `format_of(tokenizer)`, none when it has no chat tokens) for transformers.

  `transformers.AutoTokenizer.from_pretrained(directory)` then loads it, and its
  `apply_chat_template` gives `render_chat`'s ids (see the module docstring for the one exception).
  """
  directory = storage.path(directory)  # a local path or gs://
  directory.mkdir(parents=True, exist_ok=True)
  tokenizer.save(directory / "tokenizer.json")
  fmt = _detect(tokenizer)
  config = {
      "tokenizer_class": "PreTrainedTokenizerFast",
      "bos_token": _token_name(tokenizer, tokenizer.bos_id),
      "eos_token": _token_name(tokenizer, tokenizer.eos_id),
      "pad_token": _token_name(tokenizer, tokenizer.pad_id),
      "clean_up_tokenization_spaces": False,
      "chat_template": None if fmt is None else chat_template(fmt),
  }
  storage.write_text(directory / "tokenizer_config.json", json.dumps(
      {k: v for k, v in config.items() if v is not None}, indent=2, ensure_ascii=False) + "\n")
  return directory
