"""One assistant turn with tool calls: sample, run the tool, feed its result back, continue.

    messages + generation prompt --sample until the end token or the tool-call end-->
      tool call? -> assistant message with the call, tool message with the result -> again
      else       -> the final assistant message

Markers and end token are the tokenizer's chat format's (jaxllm/data/chat.py). Where the
tool-call end is text, not one token (Llama 3), sampling runs to the end token and a turn whose
text ends with a call asks for it. A call that cannot be read, or names an unknown tool, becomes a
tool message starting with "error:" that the model sees on its next round; nothing raises.
"""

import dataclasses
from collections.abc import Sequence

from jaxllm.data import chat
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError
from jaxllm.inference.sampler import Sampler
from jaxllm.inference.tools import ToolRegistry

INVALID_CALL = "invalid_tool_call"  # name recorded for a call the model wrote but we cannot read


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  """Per-turn sampling: temperature 0 is greedy."""
  max_new_tokens: int = 256
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0


def fit_history(tokenizer: Tokenizer, messages: Sequence[dict], max_new_tokens: int,
                context: int) -> tuple[list[dict], int]:
  """(the messages, the number of turns dropped): the conversation with its oldest turns after
  the system message left out until it fits the model's context with max_new_tokens after it.
  UserError when the last user message alone does not fit."""
  messages = list(messages)
  system = messages[:1] if messages and messages[0]["role"] == "system" else []
  rest, dropped = messages[len(system):], 0
  while True:
    ids, _ = chat.render_chat(tokenizer, system + rest, add_generation_prompt=True)
    if len(ids) + max_new_tokens <= context:
      return system + rest, dropped
    later = next((i for i in range(1, len(rest)) if rest[i]["role"] == "user"), None)
    if later is None:
      raise UserError(f"the message is {len(ids):,} tokens in the chat template; with "
                      f"max_new_tokens={max_new_tokens} it does not fit the model's context of "
                      f"{context} tokens: shorten it (or lower --max_new_tokens).")
    rest, dropped = rest[later:], dropped + 1


def respond(sampler: Sampler, tokenizer: Tokenizer, messages: Sequence[dict],
            tools: ToolRegistry | None = None, settings: SamplingSettings = SamplingSettings(),
            max_tool_rounds: int = 4) -> list[dict]:
  """The messages this turn adds: zero or more (assistant call, tool result) pairs, then the
  assistant's answer. After max_tool_rounds calls, tool calls are no longer run."""
  history = list(messages)
  added: list[dict] = []
  fmt = chat.format_of(tokenizer)
  ends = chat.stop_ids(tokenizer)  # the end token, and EOS: a base model may end with it instead
  # A tool-call end that is one token stops sampling; one written as text ends the turn instead.
  call_end = tokenizer.hf_tokenizer.token_to_id(fmt.tool_call_end)
  for round_ in range(max_tool_rounds + 1):
    ids, _ = chat.render_chat(tokenizer, history, add_generation_prompt=True)
    use_tools = tools is not None and round_ < max_tool_rounds
    out = sampler.generate([ids], settings.max_new_tokens, temperature=settings.temperature,
                           top_k=settings.top_k, top_p=settings.top_p,
                           stop_tokens=ends + [call_end] if use_tools and call_end is not None
                           else ends, seed=settings.seed + round_)
    completion = out.completions()[0]
    called = use_tools and bool(completion) and completion[-1] == call_end
    if completion and completion[-1] in ends:
      completion = completion[:-1]
    text = tokenizer.decode(completion)  # special tokens written out
    if use_tools and call_end is None:
      text = text.rstrip()
      called = text.endswith(fmt.tool_call_end)
    if not called:
      try:  # a finished turn: keep readable calls out of the content, drop unreadable ones
        content, _ = chat.parse_assistant(text, fmt)
      except chat.ToolCallError:
        content = text.partition(fmt.tool_call)[0]
      message = {"role": "assistant", "content": content.strip()}
      return added + [message]
    try:
      content, calls = chat.parse_assistant(text, fmt)
      call = calls[0]
      result = tools.run(call)
    except chat.ToolCallError as e:
      content = text.partition(fmt.tool_call)[0]
      call = {"name": INVALID_CALL, "arguments": {"text": text.partition(fmt.tool_call)[2]
                                                  .removesuffix(fmt.tool_call_end)}}
      result = (f"error: could not read the tool call ({e}); write {fmt.tool_call}"
                f'{{"name": ..., "arguments": {{...}}}}{fmt.tool_call_end}.')
    turn = [{"role": "assistant", "content": content.strip(), "tool_calls": [call]},
            {"role": "tool", "content": result}]
    history += turn
    added += turn
  raise AssertionError("unreachable: the last round runs without tools")
