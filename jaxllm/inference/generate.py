"""Batched generation: many prompts through one Sampler, a batch at a time, as token ids or
decoded text. The QA eval, the memorisation probe, compression checks and the labeling page's
responses all generate through here.

Batch i (prompts i * batch_size ...) samples with seed + i, so a given seed gives the same
completions whatever else runs; a stop token that ends a completion is removed.
"""

from collections.abc import Callable, Sequence

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
