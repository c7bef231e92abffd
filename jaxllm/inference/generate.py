"""Batched generation: many prompts through one Sampler, a batch at a time, as token ids or
decoded text. The QA eval, the memorisation probe, compression checks and the labeling page's
responses all generate through here.

Batch i (prompts i * batch_size ...) samples with seed + i, so a given seed gives the same
completions whatever else runs; a stop token that ends a completion is removed.
"""

import sys
from collections.abc import Callable, Sequence

from jaxllm.errors import UserError
from jaxllm.inference.sampler import Sampler


def generate(sampler: Sampler, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             batch_size: int = 64, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             stop_tokens: Sequence[int] = (), seed: int = 0,
             on_batch: Callable[[int, int], None] | None = None) -> list[list[int]]:
  """The completion of every prompt (greedy at temperature 0): its generated token ids, without
  the stop token that ended it. `on_batch(done, total)` is called after each batch."""
  stops = set(stop_tokens)
  completions = []
  for index, start in enumerate(range(0, len(prompts), batch_size)):
    out = sampler.generate(list(prompts[start:start + batch_size]), max_new_tokens,
                           temperature=temperature, top_k=top_k, top_p=top_p,
                           stop_tokens=list(stop_tokens), seed=seed + index)
    for ids, stopped in zip(out.completions(), out.stopped):
      completions.append(ids[:-1] if stopped and ids and ids[-1] in stops else ids)
    if on_batch is not None:
      on_batch(len(completions), len(prompts))
  return completions


def generate_text(sampler: Sampler, tokenizer, prompts: Sequence[Sequence[int]],
                  max_new_tokens: int, **kwargs) -> list[str]:
  """`generate`, each completion decoded with `tokenizer`."""
  return [tokenizer.decode(ids) for ids in generate(sampler, prompts, max_new_tokens, **kwargs)]


def fit_to_context(ids: Sequence[int], max_new_tokens: int, context: int, *,
                   truncate: bool = False, keep_first: int = 0, what: str = "the prompt"
                   ) -> list[int]:
  """`ids` when they and `max_new_tokens` fit a model's context of `context` tokens. Otherwise a
  UserError (the KV cache would be sized for them all: a prompt of 14k tokens to a 256-token
  model takes gigabytes and gives noise), or with `truncate` the last tokens that fit after the
  first `keep_first` (a BOS), with a warning."""
  ids = list(ids)
  room = context - max_new_tokens
  if len(ids) <= room:
    return ids
  if room <= keep_first:
    raise UserError(f"max_new_tokens={max_new_tokens} leaves no room for {what} in the model's "
                    f"context of {context} tokens (config.model.max_seq_len); lower it.")
  if not truncate:
    raise UserError(f"{what} is {len(ids):,} tokens; with max_new_tokens={max_new_tokens} that "
                    f"is past the model's context of {context} tokens (config.model.max_seq_len)."
                    f" Shorten it, lower max_new_tokens, or truncate it (--truncate; "
                    f"truncate=True) to its last {room - keep_first} tokens.")
  print(f"warning: {what} is {len(ids):,} tokens; kept its last {room - keep_first} to fit the "
        f"model's context of {context} with {max_new_tokens} new tokens.", file=sys.stderr,
        flush=True)
  return ids[:keep_first] + ids[len(ids) - (room - keep_first):]
