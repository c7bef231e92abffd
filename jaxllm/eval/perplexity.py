"""Exact perplexity and bits per byte of a model on held-out texts.

Each text is encoded as [BOS] + tokens and every token after BOS is predicted exactly once:
texts longer than the window are cut into windows of seq_len targets, each window's input
starting with the previous window's last token (no token is scored twice or skipped).

  perplexity    = exp(sum of NLL over all predicted tokens / number of those tokens)
  bits per byte = sum of NLL / ln 2 / UTF-8 bytes of the texts

Bits per byte compares models with different tokenizers; perplexity depends on the tokenizer.
"""

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.data.tokenizer import Tokenizer
from jaxllm.parallel import sharding as sharding_lib


def windows(ids: Sequence[int], seq_len: int) -> Iterator[tuple[list[int], list[int]]]:
  """(inputs, targets) pieces of one encoded text: targets ids[1:] in runs of seq_len."""
  for start in range(0, len(ids) - 1, seq_len):
    inputs = list(ids[start:start + seq_len])
    targets = list(ids[start + 1:start + seq_len + 1])
    yield inputs[:len(targets)], targets


def _batches(pieces: Iterable[tuple[int, list[int], list[int]]], batch_size: int, seq_len: int,
             pad_id: int) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
  """(text index of each row, batch) from (text index, inputs, targets) pieces."""
  rows = []
  for piece in pieces:
    rows.append(piece)
    if len(rows) == batch_size:
      yield [i for i, _, _ in rows], _pack([r[1:] for r in rows], batch_size, seq_len, pad_id)
      rows = []
  if rows:
    yield [i for i, _, _ in rows], _pack([r[1:] for r in rows], batch_size, seq_len, pad_id)


def _pack(rows, batch_size, seq_len, pad_id):
  inputs = np.full((batch_size, seq_len), pad_id, np.int32)
  targets = np.full((batch_size, seq_len), pad_id, np.int32)
  mask = np.zeros((batch_size, seq_len), np.float32)
  for i, (x, y) in enumerate(rows):
    inputs[i, :len(x)] = x
    targets[i, :len(y)] = y
    mask[i, :len(y)] = 1.0
  return {"inputs": inputs, "targets": targets, "mask": mask}


def evaluate_perplexity(model, params: Any, tokenizer: Tokenizer, texts: Iterable[str],
                        seq_len: int = 256, batch_size: int = 8) -> dict[str, float]:
  """{"perplexity", "bits_per_byte", "nll_per_token", "tokens", "bytes", "texts",
  "bits_per_byte_by_text"} (float64 sums; the last is a list, one value per text, for paired
  comparisons of two models on the same texts).

  The model must have been trained with BOS starting each document (as data/batching.py does).
  """
  @jax.jit
  def nll_sum(params, batch):
    logits = model.apply({"params": params}, batch["inputs"])
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
    return jnp.sum(nll * batch["mask"], axis=-1)  # per row, summed on the host in float64

  total_tokens = 0
  text_bytes: list[int] = []

  def pieces():
    for text in texts:
      text_bytes.append(len(text.encode("utf-8")))
      for piece in windows(tokenizer.bos_ids + tokenizer.encode(text), seq_len):
        yield (len(text_bytes) - 1, *piece)

  nll_by_text: dict[int, float] = {}
  for owners, batch in _batches(pieces(), batch_size, seq_len, tokenizer.pad_id):
    rows = np.asarray(sharding_lib.fetch(nll_sum(params, batch)), np.float64)
    for owner, nll in zip(owners, rows):
      nll_by_text[owner] = nll_by_text.get(owner, 0.0) + float(nll)
    total_tokens += int(batch["mask"].sum())
  if not total_tokens:
    raise ValueError("no tokens to score: the texts are empty.")
  total_nll, total_bytes = math.fsum(nll_by_text.values()), sum(text_bytes)
  nll_per_token = total_nll / total_tokens
  return {"perplexity": math.exp(nll_per_token), "nll_per_token": nll_per_token,
          "bits_per_byte": total_nll / math.log(2) / total_bytes, "tokens": total_tokens,
          "bytes": total_bytes, "texts": len(text_bytes),
          "bits_per_byte_by_text": [nll_by_text.get(i, 0.0) / math.log(2) / max(n, 1)
                                    for i, n in enumerate(text_bytes)]}
