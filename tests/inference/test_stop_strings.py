"""Stop strings in the decode loop: the token automaton against a plain substring search, token
bytes against decoding, and the sampler ending each row at the first token whose text holds a
stop string (checked against the same generation run without stop strings)."""

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.data.tokenizer import train_tokenizer
from jaxllm.errors import UserError
from jaxllm.inference import sampler as sampler_lib
from jaxllm.inference import stop_strings
from jaxllm.models import config as model_config
from jaxllm.models import transformer
from jaxllm.models.params import unbox

TEXTS = ["The baker opened the shop at dawn, and the town came for bread.",
         "Question: what is two and two?\nAnswer: four.\n\nQuestion: and three?",
         "Greta Park works as a pilot; café ☕ at 7:45 in 2024."] * 8


def _first_match(bytes_by_id, table, ids):
  """(index of the token at which the table says "found", by walking it on the host)."""
  states = np.zeros(table.shape[0], np.int64)
  for i, token in enumerate(ids):
    states = table[np.arange(table.shape[0]), token, states]
    if (states == table.shape[2] - 1).any():
      return i
  return None


def test_the_automaton_finds_a_string_where_a_substring_search_does():
  rng = random.Random(0)
  vocab = [bytes(rng.choice(b"ab\n") for _ in range(rng.randint(0, 5))) for _ in range(80)]
  strings = ["\n\n", "aab", "b\na", "ababb"]  # overlapping with themselves: KMP's fallbacks
  table = stop_strings.table(vocab, strings)
  assert table.shape == (4, 80, 8)  # padded: 4 strings, 8 states
  for _ in range(3000):
    ids = [rng.randrange(len(vocab)) for _ in range(rng.randint(1, 14))]
    text, expected = b"", None
    for i, token in enumerate(ids):
      text += vocab[token]
      if any(s.encode() in text for s in strings):
        expected = i
        break
    assert _first_match(vocab, table, ids) == expected, ids


def test_limits_are_errors_and_padding_never_matches():
  table = stop_strings.table([b"a", b"b"], ["a"])
  assert table.shape[0] == 1 and (table[0, 0, 0] == table.shape[2] - 1)
  padded = stop_strings.table([b"a", b"b"], ["a", "b", "ab"])
  assert padded.shape[0] == 4 and not (padded[3] == padded.shape[2] - 1).any()
  with pytest.raises(UserError, match="at most 8"):
    stop_strings.table([b"a"], [str(i) for i in range(9)])
  with pytest.raises(UserError, match="length"):
    stop_strings.table([b"a"], ["x" * 300])
  assert stop_strings.cut("one. two\nthree", ["\n", "."]) == "one"
  assert stop_strings.cut("one", ["."]) == "one"


def test_token_bytes_concatenate_to_the_decoded_text():
  tokenizer = train_tokenizer(TEXTS, vocab_size=400)
  by_id = stop_strings.token_bytes(tokenizer)
  assert len(by_id) == tokenizer.vocab_size
  ids = tokenizer.encode(" ".join(TEXTS[:3]))
  assert b"".join(by_id[i] for i in ids).decode() == tokenizer.decode(ids)
  assert by_id[tokenizer.eos_id] == b""  # special tokens are left out of the text
  rng = np.random.default_rng(0)
  for _ in range(20):
    ids = [int(i) for i in rng.integers(0, tokenizer.vocab_size, 12)
           if int(i) not in tokenizer.special_ids]
    assert b"".join(by_id[i] for i in ids).decode("utf-8", "replace") == tokenizer.decode(ids)


def test_the_sampler_ends_each_row_at_its_first_stop_string():
  tokenizer = train_tokenizer(TEXTS, vocab_size=400)
  cfg = model_config.get_size("tiny", vocab_size=tokenizer.vocab_size)
  model = transformer.Transformer(cfg)
  params = unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  params = jax.tree.map(lambda x: x * 4.0, params)  # a peaked, varied next-token distribution
  sampler = sampler_lib.Sampler(model, params, tokenizer.pad_id,
                                vocab_limit=tokenizer.vocab_size)
  prompts = [tokenizer.encode_prompt(t) for t in ("The baker", "Question:", "Greta", "a")]
  free = sampler.generate(prompts, 40, temperature=0.0)
  by_id = stop_strings.token_bytes(tokenizer)
  texts = [b"".join(by_id[t] for t in ids) for ids in free.completions()]
  # stop strings taken from the free generations: two characters astride a token boundary, and
  # one character inside a token, so that some rows stop mid-token and some never
  first = free.completions()[0]
  cut = len(by_id[first[0]]) + len(by_id[first[1]])
  strings = [texts[0][cut - 1:cut + 1].decode(errors="ignore") or "e",
             texts[1][5:6].decode(errors="ignore") or "a"]
  table = stop_strings.table(by_id, strings)
  stopped = sampler.generate(prompts, 40, temperature=0.0, stop_table=table)
  ended = 0
  for row, ids in enumerate(free.completions()):
    end = _first_match(by_id, table, ids)
    expected = ids if end is None else ids[:end + 1]
    assert stopped.completions()[row] == expected, row
    assert bool(stopped.stopped[row]) == (end is not None)
    ended += end is not None and end < len(ids) - 1
    if end is not None:  # the string is in the text only from that token on
      text = b"".join(by_id[t] for t in expected).decode("utf-8", "replace")
      before = b"".join(by_id[t] for t in expected[:-1]).decode("utf-8", "replace")
      assert any(s in text for s in strings) and not any(s in before for s in strings)
  assert ended >= 2
