"""KV-cache sampler: equal to recomputation and to teacher forcing, filters, stops, buckets; the
sampling distribution at temperatures 0.7 and 1.5 with top-k and top-p against Hugging Face's
warpers (temperature, top-k, top-p) written out in numpy; stop tokens end rows exactly there."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.errors import UserError
from jaxllm.inference import sampler as sampler_lib
from jaxllm.models import config as model_config
from jaxllm.models import transformer
from jaxllm.models.params import unbox
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib

PAD = 2
PROMPTS = [[0, 5, 6, 7], [0, 9], [0, *range(11, 27)]]


def _model(**overrides):
  cfg = model_config.get_size("tiny", vocab_size=128, **overrides)
  model = transformer.Transformer(cfg)
  params = unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  # Larger weights than the init's make the next-token distribution far from uniform.
  params = jax.tree.map(lambda x: x * 4.0, params)
  return model, params


def _teacher_forced_logprobs(model, params, prompt, completion):
  """log_softmax of a full forward pass over prompt + completion, at each completion token."""
  seq = jnp.asarray([list(prompt) + list(completion)])
  logits = model.apply({"params": params}, seq)[0]
  start = len(prompt) - 1
  return np.asarray(jax.nn.log_softmax(logits[start:start + len(completion)], axis=-1))


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, {"scan_layers": True},
                                       dict(model_config.SIZES["gpt2-124m"], num_layers=2,
                                            d_model=64, num_heads=4, num_kv_heads=4, mlp_dim=128,
                                            max_seq_len=128)])
def test_cache_decoding_equals_recomputation_and_teacher_forcing(overrides):
  overrides = {k: v for k, v in overrides.items() if k != "vocab_size"}
  model, params = _model(**overrides)
  cached = sampler_lib.Sampler(model, params, PAD)
  uncached = sampler_lib.Sampler(model, params, PAD, use_cache=False)
  greedy = cached.generate(PROMPTS, 24, temperature=0.0)
  assert (greedy.tokens == uncached.generate(PROMPTS, 24, temperature=0.0).tokens).all()
  assert (greedy.logprobs == 0).all()  # greedy: the sampling distribution is a point mass

  sampled = cached.generate(PROMPTS, 24, temperature=0.8, top_k=40, top_p=0.9, seed=3)
  assert (sampled.lengths == 24).all()
  for b, prompt in enumerate(PROMPTS):
    completion = sampled.completions()[b]
    full_bnv = _teacher_forced_logprobs(model, params, prompt, completion)
    raw = full_bnv[np.arange(len(completion)), completion]
    np.testing.assert_allclose(sampled.raw_logprobs[b], raw, atol=1e-5)
    # The sampling log-probs are those of the filtered, tempered teacher-forced logits.
    logits_nv = jnp.asarray(full_bnv) / 0.8
    filtered = sampler_lib.filter_logits(logits_nv, jnp.int32(40), jnp.float32(0.9))
    expected = np.asarray(jax.nn.log_softmax(filtered, axis=-1))[np.arange(len(completion)),
                                                                  completion]
    np.testing.assert_allclose(sampled.logprobs[b], expected, atol=1e-4)


def _reference_filter(logits, top_k, top_p):
  """Hugging Face's order: top-k, then top-p on the renormalised rest (numpy, one row)."""
  keep = np.ones_like(logits, bool)
  if top_k:
    keep &= logits >= np.sort(logits)[::-1][top_k - 1]
  order = np.argsort(-np.where(keep, logits, -np.inf), kind="stable")
  probs = np.exp(logits[order] - logits[order][0]) * keep[order]
  probs /= probs.sum()
  before = np.cumsum(probs) - probs
  kept_sorted = (before < top_p) | (np.arange(len(order)) == 0)
  out = np.zeros_like(keep)
  out[order[kept_sorted & keep[order]]] = True
  return out


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (0, 0.5), (12, 0.8), (1, 1.0), (0, 1.0)])
def test_top_k_top_p_never_sample_outside_the_kept_set(top_k, top_p):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(40,)).astype(np.float32) * 2.0
  kept = _reference_filter(logits, top_k, top_p)
  rows = 4000
  tokens, logp, raw = sampler_lib._pick(
      jnp.broadcast_to(jnp.asarray(logits), (rows, 40)), jax.random.key(7), jnp.arange(rows), 3,
      jnp.float32(1.0), jnp.int32(top_k), jnp.float32(top_p))
  tokens = np.asarray(tokens)
  assert kept[tokens].all(), (np.unique(tokens), np.flatnonzero(kept))
  # Frequencies follow the renormalised kept probabilities (about 4 standard errors).
  probs = np.where(kept, np.exp(logits - logits.max()), 0.0)
  probs /= probs.sum()
  freq = np.bincount(tokens, minlength=40) / rows
  assert np.all(np.abs(freq - probs) <= 4 * np.sqrt(probs * (1 - probs) / rows) + 1e-9)
  np.testing.assert_allclose(np.asarray(logp), np.log(probs[tokens]), atol=1e-5)
  raw_expected = np.asarray(jax.nn.log_softmax(jnp.asarray(logits)))[tokens]
  np.testing.assert_allclose(np.asarray(raw), raw_expected, atol=1e-6)


def _hf_logprobs(logits, temperature, top_k, top_p):
  """log-probs of Hugging Face's sampling distribution for one row, in float64 numpy: the
  TemperatureLogitsWarper (divide), TopKLogitsWarper (drop scores below the k-th largest) and
  TopPLogitsWarper (sort ascending, drop the tokens whose cumulative probability is <= 1 - top_p,
  always keep the most likely) in that order; -inf where a token is filtered out. Also the
  smallest distance of a cumulative probability from 1 - top_p (to avoid knife edges)."""
  scores = np.asarray(logits, np.float64) / temperature
  if top_k > 0:
    kth = np.sort(scores)[::-1][min(top_k, len(scores)) - 1]
    scores = np.where(scores < kth, -np.inf, scores)
  margin = np.inf
  if top_p < 1.0:
    ascending = np.argsort(scores, kind="stable")
    probs = np.exp(scores[ascending] - scores.max())
    cumulative = np.cumsum(probs / probs.sum())
    remove = cumulative <= 1.0 - top_p
    remove[-1] = False
    margin = np.min(np.abs(cumulative - (1.0 - top_p)))
    scores[ascending[remove]] = -np.inf
  kept = np.isfinite(scores)
  top = scores[kept].max()
  logp = np.where(kept, scores - top - np.log(np.sum(np.exp(scores[kept] - top))), -np.inf)
  return logp, margin


FILTERS = [(0, 0.6), (10, 0.9), (5, 1.0), (0, 0.95), (25, 0.3)]


@pytest.mark.parametrize("temperature", [0.7, 1.5])
@pytest.mark.parametrize("top_k,top_p", FILTERS)
def test_sampling_distribution_matches_hugging_face_warpers_at_temperature(temperature, top_k,
                                                                           top_p):
  rng = np.random.default_rng(1)
  logits = (rng.normal(size=(6, 48)) * 2.5).astype(np.float32)
  got = np.asarray(jax.nn.log_softmax(sampler_lib.sampling_logits(
      jnp.asarray(logits), jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p)),
      axis=-1))
  for row in range(len(logits)):
    want, margin = _hf_logprobs(logits[row], temperature, top_k, top_p)
    assert margin > 1e-4  # no cumulative probability within float32 rounding of 1 - top_p
    kept = np.isfinite(want)
    np.testing.assert_array_equal(got[row] > -1e20, kept, err_msg=f"row {row}")
    np.testing.assert_allclose(got[row][kept], want[kept], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 0.6), (1.5, 12, 0.8)])
def test_sampled_tokens_follow_the_tempered_filtered_distribution(temperature, top_k, top_p):
  rng = np.random.default_rng(2)
  logits = (rng.normal(size=(40,)) * 2.0).astype(np.float32)
  want, margin = _hf_logprobs(logits, temperature, top_k, top_p)
  assert margin > 1e-4
  rows = 4000
  tokens, logp, raw = sampler_lib._pick(
      jnp.broadcast_to(jnp.asarray(logits), (rows, 40)), jax.random.key(11), jnp.arange(rows), 2,
      jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p))
  tokens = np.asarray(tokens)
  assert np.isfinite(want[tokens]).all()  # nothing outside the kept set
  np.testing.assert_allclose(np.asarray(logp), want[tokens], rtol=1e-5, atol=1e-5)
  probs = np.exp(want)
  freq = np.bincount(tokens, minlength=40) / rows  # within about 4.5 standard errors
  assert np.all(np.abs(freq - probs) <= 4.5 * np.sqrt(probs * (1 - probs) / rows) + 1e-9)
  raw_want = logits.astype(np.float64) - logits.max()
  raw_want -= np.log(np.sum(np.exp(raw_want)))  # the model's own distribution: no temperature
  np.testing.assert_allclose(np.asarray(raw), raw_want[tokens], rtol=1e-5, atol=1e-5)


def test_stop_tokens_end_rows_exactly_there_and_max_new_tokens_per_row():
  model, params = _model()
  smp = sampler_lib.Sampler(model, params, PAD)
  free = smp.generate(PROMPTS, 12, temperature=0.0)
  # Greedy decoding with stop tokens repeats the free run token for token until a stop, so
  # stop tokens taken from that run are certain to come: row 0 stops by step 4, row 2 by step 6,
  # and row 1, which holds neither, runs to max_new_tokens.
  stops = [int(free.tokens[0, 4]), int(free.tokens[2, 6])]
  out = smp.generate(PROMPTS, 12, temperature=0.0, stop_tokens=stops)
  hits = [np.flatnonzero(np.isin(free.tokens[b], stops)) for b in range(len(PROMPTS))]
  assert [len(h) > 0 for h in hits] == [True, False, True]  # the case covers both outcomes
  assert hits[0][0] <= 4 and hits[2][0] <= 6
  for b in range(len(PROMPTS)):
    n = int(hits[b][0]) + 1 if len(hits[b]) else 12  # the stop token counts in the length
    assert out.lengths[b] == n and out.stopped[b] == bool(len(hits[b])), b
    np.testing.assert_array_equal(out.tokens[b, :n], free.tokens[b, :n])
    assert (out.tokens[b, n:] == PAD).all() and (out.raw_logprobs[b, n:] == 0).all()
    np.testing.assert_allclose(out.raw_logprobs[b, :n], free.raw_logprobs[b, :n], atol=1e-6)
  assert out.tokens[0, out.lengths[0] - 1] in stops and out.tokens[2, out.lengths[2] - 1] in stops
  per_row = smp.generate(PROMPTS, [3, 0, 7], temperature=0.0)
  assert per_row.lengths.tolist() == [3, 0, 7] and per_row.tokens.shape == (3, 7)
  assert (per_row.tokens[0, :3] == free.tokens[0, :3]).all()
  assert (per_row.tokens[1] == PAD).all() and (per_row.tokens[0, 3:] == PAD).all()


def test_seeded_rows_are_reproducible_and_independent_of_the_batch():
  model, params = _model()
  smp = sampler_lib.Sampler(model, params, PAD)
  a = smp.generate(PROMPTS, 16, seed=5)
  b = smp.generate(PROMPTS, 16, seed=5)
  assert (a.tokens == b.tokens).all()
  assert not (smp.generate(PROMPTS, 16, seed=6).tokens == a.tokens).all()
  # A row is the same alone (a smaller batch bucket) as in the batch, at the same index.
  alone = smp.generate(PROMPTS[:1], 16, seed=5)
  assert (alone.tokens[0] == a.tokens[0]).all()
  np.testing.assert_allclose(alone.raw_logprobs[0], a.raw_logprobs[0], atol=1e-5)


def test_bucketed_shapes_compile_a_handful_of_times():
  model, params = _model()
  smp = sampler_lib.Sampler(model, params, PAD)
  rng = np.random.default_rng(0)
  for _ in range(6):  # batches of 1-4 prompts of 1-16 tokens, 5-16 new: one bucket each
    n = int(rng.integers(3, 5))
    prompts = [[0] + rng.integers(3, 100, size=rng.integers(0, 15)).tolist() for _ in range(n)]
    smp.generate(prompts, int(rng.integers(5, 17)), temperature=float(rng.uniform(0, 1.5)),
                 top_k=int(rng.integers(0, 10)), top_p=float(rng.uniform(0.5, 1.0)),
                 stop_tokens=[int(rng.integers(3, 100))], seed=int(rng.integers(100)))
  assert smp.num_compiles == 1
  smp.generate([[0] * 20], 5)  # a longer prompt: the next length bucket
  smp.generate([[0]] * 5, 5)  # more prompts: the next batch bucket
  assert smp.num_compiles == 3


@pytest.mark.slow
def test_sharded_model_on_a_mesh_samples_the_same():
  model, params = _model()
  expected = sampler_lib.Sampler(model, params, PAD).generate(PROMPTS, 10, temperature=0.0)
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=2, tensor=2), jax.devices()[:8])
  rules = sharding_lib.DEFAULT_RULES
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                            jnp.zeros((1, 8), jnp.int32))["params"])
  shardings = sharding_lib.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules)
  sharded = jax.device_put(params, shardings)
  assert len(sharded["layer_0"]["mlp"]["up"]["kernel"].sharding.device_set) == 8
  smp = sampler_lib.Sampler(model, sharded, PAD, mesh=mesh, rules=rules)
  got = smp.generate(PROMPTS, 10, temperature=0.0)
  assert (got.tokens == expected.tokens).all()
  np.testing.assert_allclose(got.raw_logprobs, expected.raw_logprobs, atol=1e-5)


def test_bad_requests_name_the_argument():
  model, params = _model()
  smp = sampler_lib.Sampler(model, params, PAD)
  with pytest.raises(UserError, match="prompt 1 is empty"):
    smp.generate([[0], []], 4)
  with pytest.raises(UserError, match="top_p=1.5"):
    smp.generate([[0]], 4, top_p=1.5)
  with pytest.raises(UserError, match="max_new_tokens"):
    smp.generate([[0], [0]], [4])


def test_bucket():
  assert sampler_lib.bucket(1, (16, 32)) == 16
  assert sampler_lib.bucket(17, (16, 32)) == 32
  assert sampler_lib.bucket(33, (16, 32)) == 64
  assert dataclasses.is_dataclass(sampler_lib.SampleOutput)


@pytest.mark.slow
def test_vocab_limit_keeps_padded_ids_out_and_raw_logprobs_full():
  model, params = _model()
  out = sampler_lib.Sampler(model, params, PAD, vocab_limit=50).generate(
      PROMPTS, 16, temperature=1.5, seed=2)
  assert (out.tokens < 50).all()
  free = sampler_lib.Sampler(model, params, PAD).generate(PROMPTS, 16, temperature=1.5, seed=2)
  assert (free.tokens >= 50).any()  # without the limit these ids do come up
  for b, prompt in enumerate(PROMPTS):
    completion = out.completions()[b]
    full = _teacher_forced_logprobs(model, params, prompt, completion)
    # float32 rounding of two differently compiled programs (2e-5: the tests' low-optimisation
    # compile reaches 1.2e-5 here)
    np.testing.assert_allclose(out.raw_logprobs[b], full[np.arange(len(completion)), completion],
                               atol=2e-5)
