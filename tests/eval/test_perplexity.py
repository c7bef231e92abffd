"""Perplexity and bits per byte equal a direct full-sequence computation; windows cover once."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.data.tokenizer import train_tokenizer
from jaxllm.eval import perplexity
from jaxllm.models import config as model_config
from jaxllm.models import transformer
from jaxllm.models.params import unbox


def test_windows_predict_every_token_once():
  ids = list(range(100, 123))  # 23 ids: 22 targets
  pieces = list(perplexity.windows(ids, 5))
  targets = [t for _, t in pieces]
  assert sum(targets, []) == ids[1:]
  for inputs, t in pieces:  # inputs are the tokens right before each target
    assert [ids[ids.index(x) + 1] for x in inputs] == t
  assert list(perplexity.windows([7], 5)) == []


@pytest.mark.slow
def test_perplexity_equals_a_direct_computation():
  texts = ["The quick brown fox jumps over the lazy dog. " * 3, "Short one.",
           "Numbers 1234 and ünïcödé text, too. " * 5]
  tok = train_tokenizer(texts * 5, vocab_size=300)
  cfg = model_config.get_size("tiny", vocab_size=384)
  model = transformer.Transformer(cfg)
  params = unbox(model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"])
  got = perplexity.evaluate_perplexity(model, params, tok, texts, seq_len=16, batch_size=3)
  nll, count = 0.0, 0
  for text in texts:  # one forward pass over the whole text: no windows
    ids = [tok.bos_id] + tok.encode(text)
    logp = jax.nn.log_softmax(model.apply({"params": params}, jnp.asarray([ids]))[0], axis=-1)
    nll -= float(np.sum(np.asarray(logp)[np.arange(len(ids) - 1), ids[1:]]))
    count += len(ids) - 1
  num_bytes = sum(len(t.encode()) for t in texts)
  assert got["tokens"] == count and got["bytes"] == num_bytes and got["texts"] == 3
  # Windows lose context, so allow a small difference; with a window covering all it is exact.
  full = perplexity.evaluate_perplexity(model, params, tok, texts, seq_len=512, batch_size=2)
  assert math.isclose(full["nll_per_token"], nll / count, rel_tol=1e-5)
  assert math.isclose(full["perplexity"], math.exp(nll / count), rel_tol=1e-5)
  assert math.isclose(full["bits_per_byte"], nll / math.log(2) / num_bytes, rel_tol=1e-5)
  assert abs(got["nll_per_token"] - full["nll_per_token"]) < 0.05
