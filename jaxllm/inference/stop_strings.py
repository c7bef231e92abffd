"""Stop strings matched inside the compiled decode loop.

A stop string ends a completion as soon as the decoded text contains it, wherever the token
boundaries fall: "\\n\\n" may come as one token, as two, or inside "\\n\\n\\n". Decoded text is
the concatenation of the tokens' bytes (special tokens left out), so searching it for a string is
a finite automaton over bytes (Knuth-Morris-Pratt: the state is how much of the string the text
ends with). Run over each token's bytes from each state, the automaton becomes a table
[token, state] -> state, which the sampler applies once per generated token; the last state
means "found" and stays.

    table = stop_strings.table(stop_strings.token_bytes(tokenizer), ["\\n\\n", "Question:"])
    sampler.generate(prompts, 64, stop_table=table)   # rows end at the first stop string

The text after the stop string inside its last token is cut on the host (`cut`).
"""

import functools
from collections.abc import Sequence

import numpy as np

from jaxllm.data import tokenizer as tokenizer_lib
from jaxllm.errors import UserError

MAX_STRINGS = 8  # a table holds this many strings at most (lm-eval tasks give one to four)
STRING_BUCKETS = (1, 2, 4, 8)
STATE_BUCKETS = (8, 16, 32, 64, 128, 256)  # states per string (its length + 1, padded)


def _byte_level(tokenizer) -> bool:
  decoder = tokenizer.hf_tokenizer.decoder
  return decoder is not None and "ByteLevel" in type(decoder).__name__ + repr(decoder)


@functools.lru_cache(maxsize=4)
def _token_bytes_cached(tokenizer) -> tuple[bytes, ...]:
  hf, specials = tokenizer.hf_tokenizer, tokenizer.special_ids
  byte_level = _byte_level(tokenizer)
  out = []
  for token_id in range(tokenizer.vocab_size):
    piece = hf.id_to_token(token_id)
    if token_id in specials or piece is None:
      out.append(b"")  # decoding leaves special tokens out of the text
      continue
    raw = tokenizer_lib._byte_level_bytes(piece) if byte_level else None
    if raw is None:  # SentencePiece-style: "▁" is a space, <0xNN> a byte
      if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        raw = bytes([int(piece[3:5], 16)])
      else:
        raw = piece.replace("\u2581", " ").encode("utf-8")
    out.append(raw)
  return tuple(out)


def token_bytes(tokenizer) -> tuple[bytes, ...]:
  """The bytes each id adds to the decoded text (b"" for special tokens), ids 0..vocab_size-1.
  Exact for byte-level BPE; for SentencePiece vocabularies "▁" counts as a space everywhere."""
  return _token_bytes_cached(tokenizer)


def _kmp_automaton(pattern: bytes) -> np.ndarray:
  """[len, 256]: the state after reading a byte in each state 0..len-1 (state k: the text ends
  with the first k bytes of `pattern`; len: it contains `pattern`)."""
  n = len(pattern)
  delta = np.zeros((n, 256), np.int32)
  delta[0, pattern[0]] = 1
  fallback = 0  # the state the text would be in had it started one byte later
  for state in range(1, n):
    delta[state] = delta[fallback]
    delta[state, pattern[state]] = state + 1
    fallback = delta[fallback, pattern[state]]
  return delta


def _bucket(n: int, buckets: Sequence[int], what: str) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise UserError(f"{what} is {n}; at most {buckets[-1]}.")


def table(bytes_by_id: Sequence[bytes], strings: Sequence[str]) -> np.ndarray:
  """[M, V, Q] uint8: the state after each token from each state, one automaton per string
  (M, Q padded to buckets so that a few shapes compile; padding rows never match). Q - 1 is the
  found state of every string."""
  strings = [s for s in dict.fromkeys(strings) if s]
  if len(strings) > MAX_STRINGS:
    raise UserError(f"{len(strings)} stop strings; at most {MAX_STRINGS}.")
  num = _bucket(max(len(strings), 1), STRING_BUCKETS, "the number of stop strings")
  longest = max((len(s.encode("utf-8")) for s in strings), default=1)
  states = _bucket(longest + 1, STATE_BUCKETS, "a stop string's length in bytes + 1")
  width = max(max((len(b) for b in bytes_by_id), default=1), 1)
  by_id = np.zeros((len(bytes_by_id), width), np.int32)
  lengths = np.zeros((len(bytes_by_id),), np.int32)
  for i, raw in enumerate(bytes_by_id):
    by_id[i, :len(raw)] = np.frombuffer(raw, np.uint8)
    lengths[i] = len(raw)
  out = np.zeros((num, len(bytes_by_id), states), np.uint8)
  for m, text in enumerate(strings):
    pattern = text.encode("utf-8")
    found = len(pattern)
    delta = _kmp_automaton(pattern)
    delta = np.where(delta == found, states - 1, delta)  # found: the table's last state
    # every (token, start state) pair at once, one byte position at a time
    state = np.broadcast_to(np.arange(found), (len(bytes_by_id), found)).copy()
    for j in range(width):
      live = (j < lengths)[:, None] & (state != states - 1)
      moved = delta[np.minimum(state, found - 1), by_id[:, j:j + 1]]
      state = np.where(live, moved, state)
    out[m, :, :found] = state
    out[m, :, found:] = states - 1  # found stays found (the states between are unreachable)
  return out


def cut(text: str, strings: Sequence[str]) -> str:
  """`text` up to its first stop string (as lm-eval cuts a generation)."""
  end = min((i for i in (text.find(s) for s in strings if s) if i >= 0), default=len(text))
  return text[:end]
