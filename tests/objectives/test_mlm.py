"""Masked LM: which positions are chosen and how they are corrupted, the loss on them only,
bidirectional attention, deterministic eval masking, and the checks that refuse misuse."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.errors import ConfigError, UserError
from jaxllm.inference.sampler import Sampler
from jaxllm.models import Transformer, get_size
from jaxllm.objectives import mlm
from jaxllm.recipes import pretrain

SPECIALS = (0, 1, 2, 3, 4, 5, 6, 7)  # bos, eos, pad, chat markers, mask = 7
MASKING = mlm.Masking(mask_id=7, special_ids=SPECIALS, vocab_size=1024)


def _rows(b, t, vocab=1024, seed=0):
  """Tokens with specials sprinkled in, and segment ids with padding (0) at each row's end."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (b, t))
  special = rng.random((b, t)) < 0.1
  tokens[special] = rng.choice(SPECIALS, special.sum())
  lengths = rng.integers(t // 2, t + 1, b)
  segments = np.where(np.arange(t)[None] < lengths[:, None],
                      1 + (np.arange(t)[None] >= lengths[:, None] // 2), 0)
  return jnp.asarray(tokens, jnp.int32), jnp.asarray(segments, jnp.int32)


def _eligible(tokens, segments):
  return ~np.isin(np.asarray(tokens), SPECIALS) & (np.asarray(segments) > 0)


@functools.partial(jax.jit, static_argnums=2)
def _mask(tokens, rng, masking, segments):
  return mlm.mask_tokens(tokens, rng, masking, segments)


class _FixedLogits:
  """A stand-in model: its logits are params["logits"], whatever the input."""

  def apply(self, variables, tokens_bt, **kwargs):
    del tokens_bt, kwargs
    return variables["params"]["logits"]


def test_loss_is_cross_entropy_of_the_original_tokens_at_chosen_positions_only():
  masking = dataclasses.replace(MASKING, mask_rate=0.4)
  tokens, segments = _rows(2, 24, seed=1)
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(2, 24, 1024)) * 3, jnp.float32)
  batch = {"inputs": tokens, "targets": jnp.roll(tokens, -1, 1), "segment_ids": segments,
           "loss_mask": jnp.ones((2, 24), jnp.float32)}
  eval_loss = jax.jit(lambda p, b: mlm.mlm_loss(p, b, None, _FixedLogits(), masking))
  loss, metrics = eval_loss({"logits": logits}, batch)

  corrupted, chosen = _mask(tokens, jax.random.key(masking.eval_seed), masking,
                            segments)  # evaluation masks with this key
  chosen = np.asarray(chosen)
  assert 4 <= chosen.sum() < _eligible(tokens, segments).sum()  # some, not all
  logp = np.asarray(logits, np.float64)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  picked = np.take_along_axis(logp, np.asarray(tokens)[..., None], -1)[..., 0]  # the originals
  np.testing.assert_allclose(loss, -picked[chosen].sum(), rtol=1e-5)
  assert metrics["weight"] == chosen.sum() and metrics["nll"] == loss
  assert metrics["accuracy"] == (logp.argmax(-1) == np.asarray(tokens))[chosen].sum()
  assert (np.asarray(corrupted)[chosen] != np.asarray(tokens)[chosen]).any()

  # Anything at unchosen positions, and the shifted targets and loss mask, do not count.
  other = ~chosen
  noise = jnp.asarray(rng.normal(size=logits.shape) * 5 * other[..., None], jnp.float32)
  swapped = jnp.where(other & _eligible(tokens, segments), 8 + (tokens + 1) % 1000, tokens)
  changed = {**batch, "inputs": swapped, "targets": batch["targets"][:, ::-1],
             "loss_mask": jnp.zeros((2, 24), jnp.float32)}
  loss2, metrics2 = eval_loss({"logits": logits + noise}, changed)
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  assert metrics2["weight"] == metrics["weight"]
  # ... while a change at a chosen position does.
  bumped = logits + 5 * chosen[..., None] * np.eye(1024, dtype=np.float32)[np.asarray(tokens)]
  assert eval_loss({"logits": bumped}, batch)[0] < loss - 1


@pytest.mark.parametrize("rate,to_mask,to_random", [(0.15, 0.8, 0.1), (0.4, 0.5, 0.3)])
def test_choice_rate_and_replacement_split_hold_statistically(rate, to_mask, to_random):
  masking = dataclasses.replace(MASKING, mask_rate=rate, mask_token_prob=to_mask,
                                random_token_prob=to_random)
  tokens, segments = _rows(256, 2048, seed=3)
  corrupted, chosen = map(np.asarray, _mask(tokens, jax.random.key(4), masking, segments))
  tokens = np.asarray(tokens)

  def within(count, n, p):  # a binomial count within 5 standard deviations of its mean
    sd = np.sqrt(n * p * (1 - p))
    assert 5 * sd < 0.1 * n * p, "too few samples for a meaningful bound"
    assert abs(count - n * p) <= 5 * sd, (count, n * p, sd)

  eligible = _eligible(tokens, segments)
  assert not (chosen & ~eligible).any()  # never a special token or padding
  within(chosen.sum(), eligible.sum(), rate)
  n = chosen.sum()
  masked = corrupted[chosen] == masking.mask_id
  same = corrupted[chosen] == tokens[chosen]
  random = ~masked & ~same
  n_regular = masking.vocab_size - len(SPECIALS)  # a random draw may repeat the original
  within(masked.sum(), n, to_mask)
  within(random.sum(), n, to_random * (1 - 1 / n_regular))
  within(same.sum(), n, 1 - to_mask - to_random + to_random / n_regular)
  # Random replacements are regular tokens, spread over the vocabulary.
  drawn = corrupted[chosen][random]
  assert not np.isin(drawn, SPECIALS).any() and drawn.max() < masking.vocab_size
  assert len(np.unique(drawn)) > 0.5 * min(len(drawn), n_regular)
  assert (corrupted[~chosen] == tokens[~chosen]).all()


def test_special_and_padding_tokens_are_never_chosen():
  tokens, segments = _rows(64, 128, seed=5)
  eligible = _eligible(tokens, segments)
  assert eligible.mean() < 0.8  # plenty of specials and padding to avoid
  every = dataclasses.replace(MASKING, mask_rate=1.0, mask_token_prob=0.0,
                              random_token_prob=1.0)
  corrupted, chosen = map(np.asarray, _mask(tokens, jax.random.key(6), every, segments))
  np.testing.assert_array_equal(chosen, eligible)  # all eligible ones, and nothing else
  assert not np.isin(corrupted[chosen], SPECIALS).any()
  # Without segment ids (a token stream) only the special ids are excluded.
  _, chosen = _mask(tokens, jax.random.key(7), every, None)
  np.testing.assert_array_equal(chosen, ~np.isin(np.asarray(tokens), SPECIALS))


def test_bidirectional_model_sees_later_tokens_within_its_segment_only():
  cfg = dataclasses.replace(get_size("tiny"), vocab_size=64, d_model=32, mlp_dim=64)
  shapes = nn.meta.unbox(jax.eval_shape(Transformer(cfg).init, jax.random.key(0),
                                        jnp.zeros((1, 16), jnp.int32))["params"])
  rng = np.random.default_rng(0)  # random params (no init to compile), causal or not
  params = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), jnp.float32),
                        shapes)
  tokens = jnp.asarray(np.random.default_rng(1).integers(8, 64, (2, 16)), jnp.int32)
  segments = jnp.asarray([[1] * 8 + [2] * 8] * 2)
  positions = jnp.asarray([list(range(8)) * 2] * 2)
  changed = tokens.at[:, 12].set(tokens[:, 12] % 50 + 9)

  def logits_change(packed=True, **overrides):
    model = Transformer(dataclasses.replace(cfg, **overrides))
    run = jax.jit(lambda x: model.apply({"params": params}, x, *((positions, segments)
                                                                 if packed else ())))
    return np.abs(np.asarray(run(changed) - run(tokens))).max(axis=(0, 2))  # per position

  for causal in (False, True):
    diff = logits_change(causal=causal)
    assert diff[:8].max() < 1e-6  # the other document, either way
    assert diff[8:12].min() > 1e-4 if not causal else diff[8:12].max() < 1e-6, (causal, diff)
    assert diff[12:].min() > 1e-4
  # A sliding window reaches both ways when bidirectional: window 2 sees 1 on each side per
  # layer, so over the two layers positions 12 - 2 .. 12 + 2 change.
  diff = logits_change(packed=False, causal=False, sliding_window=2)
  np.testing.assert_array_equal(np.nonzero(diff > 1e-6)[0], np.arange(10, 15))


def test_eval_masking_is_fixed_and_training_masking_fresh_each_step():
  tokens, segments = _rows(4, 32, seed=8)
  batch = {"inputs": tokens, "segment_ids": segments}
  params = {"logits": jnp.asarray(np.random.default_rng(9).normal(size=(4, 32, 1024)),
                                  jnp.float32)}
  loss = jax.jit(lambda p, r: mlm.mlm_loss(p, batch, r, _FixedLogits(), MASKING))
  eval_a, eval_b = loss(params, None), loss(params, None)
  assert eval_a[0] == eval_b[0] and eval_a[1]["weight"] == eval_b[1]["weight"] > 0
  # Training: a fresh choice from each step's key.
  chosen = [np.asarray(_mask(tokens, jax.random.key(s), MASKING, segments)[1]) for s in (1, 2)]
  assert (chosen[0] != chosen[1]).any()
  assert loss(params, jax.random.key(1))[0] != loss(params, jax.random.key(2))[0]


def test_masking_from_a_tokenizer_finds_its_special_tokens():
  from jaxllm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  tok = tokenizer_lib.train_tokenizer(["the cat sat on the mat"] * 20, vocab_size=300)
  tok.add_special_tokens([mlm.MASK_TOKEN])
  masking = mlm.masking(pretrain.mlm_config("tiny").mlm, tok)
  assert masking.mask_id == tok.vocab_size - 1 and masking.vocab_size == tok.vocab_size
  assert set(masking.special_ids) == {tok.bos_id, tok.eos_id, tok.pad_id, masking.mask_id,
                                      *range(len(tokenizer_lib.SPECIAL_TOKENS))}


def test_sampler_refuses_a_bidirectional_model():
  with pytest.raises(UserError, match="causal=False"):
    Sampler(Transformer(dataclasses.replace(get_size("tiny"), causal=False)), None, 0)


@pytest.mark.parametrize("field,value,match", [
    ("model.causal", True, "config.mlm .*needs config.model.causal=False"),
    ("mlm", None, "config.model.causal=False .*needs a config.mlm section"),
    ("mlm.mask_rate", 1.5, r"config.mlm.mask_rate=1.5 must be in \[0, 1\]"),
    ("mlm.mask_rate", 0.0, "config.mlm.mask_rate=0.0 chooses no token"),
    ("mlm.random_token_prob", 0.3, "mask_token_prob=0.8 \\+ config.mlm.random_token_prob=0.3"),
])
def test_validate_names_bad_mlm_fields(field, value, match):
  c = pretrain.mlm_config("tiny")
  assert pretrain.validate(c).causal is False
  section, _, name = field.rpartition(".")
  if section:
    c[section][name] = value
  else:
    del c[name]
  with pytest.raises(ConfigError, match=match):
    pretrain.validate(c)
