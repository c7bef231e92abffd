"""Reward model: the score reads the last real token whatever the padding side; params from an
LM checkpoint; the Transformer's hidden-state output."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.models import Transformer, get_size, reward
from jaxllm.models.params import unbox

CFG = dataclasses.replace(get_size("tiny"), vocab_size=64, tie_embeddings=False)


def _params(seed=0):
  tokens = jnp.zeros((1, 8), jnp.int32)
  return unbox(jax.jit(reward.RewardModel(CFG).init)(jax.random.key(seed), tokens)["params"])


def _apply(params, tokens, valid):
  return reward.RewardModel(CFG).apply({"params": params}, jnp.asarray(tokens),
                                       jnp.asarray(valid))


def test_last_token_index():
  valid = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(reward.last_token_index(jnp.asarray(valid)), [2, 4, 4, 0])


@pytest.mark.slow
def test_reward_reads_the_last_real_token_under_left_and_right_padding():
  params = _params()
  seq = np.array([5, 9, 17, 3, 40, 22, 8])
  n, length = len(seq), 12
  right, left = np.full((2, length), 63), np.full((2, length), 63)
  right[0, :n], left[0, length - n:] = seq, seq
  right_valid = (np.arange(length) < n).astype(np.int32)[None]
  left_valid = (np.arange(length) >= length - n).astype(np.int32)[None]
  alone = _apply(params, seq[None], np.ones((1, n), np.int32))[0]
  r_right = _apply(params, right[:1], right_valid)[0]
  r_left = _apply(params, left[:1], left_valid)[0]
  np.testing.assert_allclose([r_right, r_left], [alone, alone], atol=1e-5)
  # Padding ids do not matter; the last real token does.
  other_pad = np.where(right_valid, right[:1], 1)
  np.testing.assert_allclose(_apply(params, other_pad, right_valid)[0], alone, atol=1e-5)
  changed = right[:1].copy()
  changed[0, n - 1] = 11
  assert abs(float(_apply(params, changed, right_valid)[0]) - float(alone)) > 1e-4
  # Reading the token after the last real one (a padding token) would give another value.
  one_more = right_valid.copy()
  one_more[0, n] = 1
  assert abs(float(_apply(params, right[:1], one_more)[0]) - float(alone)) > 1e-4


@pytest.mark.slow
def test_params_from_lm_drop_the_lm_head_and_fit_the_reward_model():
  tokens = jnp.zeros((1, 8), jnp.int32)
  lm_params = unbox(jax.jit(Transformer(CFG).init)(jax.random.key(0), tokens)["params"])
  assert "lm_head" in lm_params
  params = reward.params_from_lm(lm_params, CFG, jax.random.key(1))
  expected = jax.tree.map(lambda x: (x.shape, x.dtype), _params())
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == expected
  assert params["backbone"]["embed"] is lm_params["embed"]
  # The backbone's hidden state is the LM's final hidden state.
  hidden = Transformer(CFG, output="hidden").apply({"params": params["backbone"]}, tokens + 3)
  _, lm_hidden = Transformer(CFG).apply({"params": lm_params}, tokens + 3, return_hidden=True)
  np.testing.assert_allclose(hidden, lm_hidden, atol=1e-6)
  expected_reward = hidden[:, -1] @ params["score"]["kernel"][:, 0] + params["score"]["bias"][0]
  np.testing.assert_allclose(
      reward.RewardModel(CFG).apply({"params": params}, tokens + 3), expected_reward, atol=1e-5)


def test_a_kept_lm_head_gives_the_lm_logits_and_the_same_reward():
  tokens = jnp.arange(8, dtype=jnp.int32)[None] + 3
  lm_params = unbox(jax.jit(Transformer(CFG).init)(jax.random.key(0), tokens)["params"])
  params = reward.params_from_lm(lm_params, CFG, jax.random.key(1), keep_lm_head=True)
  assert params["backbone"]["lm_head"] is lm_params["lm_head"]
  model = reward.RewardModel(CFG, lm_head=True)
  r, logits = model.apply({"params": params}, tokens, return_logits=True)
  np.testing.assert_allclose(logits, Transformer(CFG).apply({"params": lm_params}, tokens),
                             atol=1e-6)
  without = {k: v for k, v in params["backbone"].items() if k != "lm_head"}
  plain = reward.RewardModel(CFG).apply({"params": {**params, "backbone": without}}, tokens)
  np.testing.assert_allclose(r, plain, atol=1e-6)
  np.testing.assert_allclose(model.apply({"params": params}, tokens), plain, atol=1e-6)
  with pytest.raises(ValueError, match="lm_head=True"):
    reward.RewardModel(CFG).apply({"params": params}, tokens, return_logits=True)
