"""Model properties: causality, packing, GQA, rotary, parameter counts, scan/remat equivalence."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.errors import ConfigError
from jaxllm.models import Transformer, get_size, rope, transformer
from jaxllm.models.config import ModelConfig

LLAMA = get_size("tiny")
GPT2 = dataclasses.replace(get_size("gpt2-124m"), vocab_size=97, num_layers=2, d_model=32,
                           num_heads=4, num_kv_heads=4, mlp_dim=64, max_seq_len=64)


def _init(cfg, t=16, seed=0):
  model = Transformer(cfg)
  params = model.init(jax.random.key(seed), jnp.zeros((1, t), jnp.int32))["params"]
  return model, nn.meta.unbox(params)


def _tokens(shape, vocab, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


@pytest.mark.parametrize("cfg", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_causal_changing_token_t_never_changes_earlier_logits(cfg):
  model, params = _init(cfg)
  tokens = _tokens((2, 16), cfg.vocab_size)
  logits = model.apply({"params": params}, tokens)
  for t in (0, 7, 15):
    changed = tokens.at[:, t].set((tokens[:, t] + 1) % cfg.vocab_size)
    logits2 = model.apply({"params": params}, changed)
    np.testing.assert_allclose(logits2[:, :t], logits[:, :t], atol=1e-6)
    assert np.abs(logits2[:, t:] - logits[:, t:]).max() > 1e-4  # and later logits do change


@pytest.mark.parametrize("cfg", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_packed_documents_equal_each_document_alone(cfg):
  model, params = _init(cfg)
  a, b = _tokens((1, 9), cfg.vocab_size, 2), _tokens((1, 7), cfg.vocab_size, 3)
  packed = jnp.concatenate([a, b], axis=1)
  segment_ids = jnp.array([[1] * 9 + [2] * 7])
  positions = jnp.array([list(range(9)) + list(range(7))])
  out = model.apply({"params": params}, packed, positions, segment_ids)
  alone_a = model.apply({"params": params}, a)
  alone_b = model.apply({"params": params}, b)
  np.testing.assert_allclose(out[:, :9], alone_a, atol=1e-5)
  np.testing.assert_allclose(out[:, 9:], alone_b, atol=1e-5)
  # Without segment ids the second document would see the first: the test can fail.
  leaky = model.apply({"params": params}, packed, positions)
  assert np.abs(leaky[:, 9:] - alone_b).max() > 1e-3


def test_grouped_query_attention_equals_mha_with_repeated_kv_heads():
  gqa_cfg = dataclasses.replace(LLAMA, num_heads=4, num_kv_heads=2)
  mha_cfg = dataclasses.replace(LLAMA, num_heads=4, num_kv_heads=4)
  model, params = _init(gqa_cfg)
  mha_params = jax.tree.map(lambda x: x, params)
  group = gqa_cfg.num_heads // gqa_cfg.num_kv_heads
  for i in range(gqa_cfg.num_layers):
    attn = dict(mha_params[f"layer_{i}"]["attn"])
    for name in ("k", "v"):
      kernel = attn[name]["kernel"]  # [D, K, H] -> [D, N, H], query head n uses kv head n // group
      attn[name] = {"kernel": jnp.repeat(kernel, group, axis=1)}
    mha_params[f"layer_{i}"] = dict(mha_params[f"layer_{i}"], attn=attn)
  tokens = _tokens((2, 16), LLAMA.vocab_size)
  gqa = model.apply({"params": params}, tokens)
  mha = Transformer(mha_cfg).apply({"params": mha_params}, tokens)
  np.testing.assert_allclose(gqa, mha, atol=1e-5)


def test_rotary_scores_depend_only_on_position_offset():
  cfg = dataclasses.replace(LLAMA, head_dim=16)
  inv_freq = rope.inverse_frequencies(cfg)
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

  def score(pq, pk):
    rq = rope.apply_rope(q, jnp.array([[pq]]), inv_freq)
    rk = rope.apply_rope(k, jnp.array([[pk]]), inv_freq)
    return float(jnp.sum(rq * rk))

  for offset in (0, 3, 17):
    ref = score(offset, 0)
    for start in (5, 40, 301):
      assert abs(score(start + offset, start) - ref) < 1e-4
  assert abs(score(3, 0) - score(17, 0)) > 1e-3  # different offsets give different scores


def test_llama3_rope_scaling_matches_reference_formula():
  cfg = get_size("llama-1b")  # factor 32, low 1, high 4, original 8192
  base = 1.0 / (cfg.rope_theta ** (np.arange(0, 64, 2) / 64))
  scaled = rope.inverse_frequencies(cfg)
  wavelen = 2 * np.pi / base
  assert np.allclose(scaled[wavelen < 8192 / 4], base[wavelen < 8192 / 4])  # high freq kept
  assert np.allclose(scaled[wavelen > 8192], base[wavelen > 8192] / 32)  # low freq / factor
  mid = (wavelen >= 2048) & (wavelen <= 8192)
  smooth = (8192 / wavelen[mid] - 1) / (4 - 1)
  assert np.allclose(scaled[mid], (1 - smooth) * base[mid] / 32 + smooth * base[mid])


@pytest.mark.parametrize("name,expected", [
    ("gpt2-124m", 124_439_808),  # GPT-2 small, tied embeddings (Hugging Face count)
    ("llama-1b", 1_235_814_400),  # Llama 3.2 1B
    ("llama3-8b", 8_030_261_248),  # Llama 3 8B
])
def test_parameter_counts(name, expected):
  for scan in (False, True):
    cfg = get_size(name, scan_layers=scan)
    shapes = jax.eval_shape(
        lambda r, cfg=cfg: Transformer(cfg).init(r, jnp.zeros((1, 8), jnp.int32)),
        jax.random.key(0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == expected


def test_every_parameter_has_logical_axis_names():
  for cfg in (LLAMA, GPT2, dataclasses.replace(LLAMA, scan_layers=True, tie_embeddings=False)):
    boxed = jax.eval_shape(
        lambda r, cfg=cfg: Transformer(cfg).init(r, jnp.zeros((1, 8), jnp.int32)),
        jax.random.key(0))
    for leaf in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata)):
      assert isinstance(leaf, nn.LogicallyPartitioned)
      assert len(leaf.names) == leaf.value.ndim


def _stack_layers(params, num_layers):
  layers = [params.pop(f"layer_{i}") for i in range(num_layers)]
  params["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return params


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["none", "full", "save_dots"])
def test_scan_and_remat_match_the_plain_loop(remat):
  model, params = _init(LLAMA)
  tokens = _tokens((2, 16), LLAMA.vocab_size)
  cfg = dataclasses.replace(LLAMA, scan_layers=True, remat=remat)
  scanned = _stack_layers(dict(params), LLAMA.num_layers)
  loss = lambda m, p: jnp.mean(m.apply({"params": p}, tokens) ** 2)
  np.testing.assert_allclose(loss(Transformer(cfg), scanned), loss(model, params), rtol=1e-5)
  g_scan = jax.grad(lambda p: loss(Transformer(cfg), p))(scanned)
  g_loop = _stack_layers(dict(jax.grad(lambda p: loss(model, p))(params)), LLAMA.num_layers)
  for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_loop)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
  cfg = dataclasses.replace(LLAMA, dtype="bfloat16")
  model, params = _init(cfg)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  logits = model.apply({"params": params}, _tokens((1, 8), cfg.vocab_size))
  assert logits.dtype == jnp.float32  # the LM head accumulates and returns float32
  ref = Transformer(LLAMA).apply({"params": params}, _tokens((1, 8), cfg.vocab_size))
  np.testing.assert_allclose(np.float32(logits), ref, atol=5e-2)


def test_config_errors_name_the_fields():
  with pytest.raises(ConfigError, match="num_heads=6.*num_kv_heads=4"):
    ModelConfig.from_dict(dict(num_heads=6, num_kv_heads=4, d_model=48))
  with pytest.raises(ConfigError, match="config.model.norm"):
    ModelConfig.from_dict(dict(norm="batch"))
  with pytest.raises(ConfigError, match="unknown field.*num_layer"):
    ModelConfig.from_dict(dict(num_layer=2))


@pytest.mark.parametrize("x_shape,k_shape,in_dims", [
    ((3, 5, 8), (8, 16), 1),  # wider output: the kernel gradient contracts x's transpose
    ((3, 5, 16), (16, 8), 1),  # wider input: it contracts the output gradient's transpose
    ((3, 5, 4, 6), (4, 6, 8), 2),  # attention output projection: two input dims
    ((3, 5, 8), (8, 2, 6), 1),  # q projection: two output dims
])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_equals_tensordot_in_value_and_gradient(x_shape, k_shape, in_dims, dtype):
  kx, kk = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, x_shape).astype(dtype)
  kernel = jax.random.normal(kk, k_shape).astype(dtype)
  out_dtype = jnp.float32  # like the logits: float32 out of 16-bit inputs
  plain = lambda x, k: jnp.sum(jnp.sin(jax.lax.dot_general(
      x, k, ((tuple(range(x.ndim - in_dims, x.ndim)), tuple(range(in_dims))), ((), ())),
      preferred_element_type=out_dtype)))
  ours = lambda x, k: jnp.sum(jnp.sin(transformer.dense(x, k, in_dims, out_dtype)))
  # float32: XLA's CPU code may sum a contraction over two dims in another order than the same
  # contraction reshaped to one (seen on a CPU without AVX2: 1e-6 relative), so within rounding;
  # bfloat16 rounds such differences away and is compared exactly.
  tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == jnp.float32 else {"rtol": 0, "atol": 0}
  np.testing.assert_allclose(ours(x, kernel), plain(x, kernel), **tol)
  for g_plain, g_ours in zip(jax.grad(plain, (0, 1))(x, kernel), jax.grad(ours, (0, 1))(x, kernel)):
    assert g_ours.dtype == g_plain.dtype == dtype
    np.testing.assert_allclose(np.asarray(g_ours, np.float32), np.asarray(g_plain, np.float32),
                               **tol)


@pytest.mark.slow
def test_save_dots_remat_saves_what_it_saves_with_plain_matmuls(monkeypatch):
  """dense() is a custom-gradient call, not a dot, to remat policies: its "dense" name keeps
  save_dots saving the projection outputs, exactly as with jnp.tensordot."""
  from jax._src.ad_checkpoint import saved_residuals

  def saved(remat):
    cfg = dataclasses.replace(LLAMA, remat=remat, scan_layers=True)
    model, params = _init(cfg)
    tokens = _tokens((2, 16), cfg.vocab_size)
    return sorted(r[0].shape for r in saved_residuals(
        lambda p: jnp.sum(model.apply({"params": p}, tokens)), params))

  ours = {remat: saved(remat) for remat in ("full", "save_dots")}
  monkeypatch.setattr(transformer, "dense", lambda x, k, in_dims=1, out_dtype=None: (
      jnp.tensordot(x, k, in_dims, preferred_element_type=out_dtype)))
  plain = {remat: saved(remat) for remat in ("full", "save_dots")}
  assert ours == plain
  assert len(ours["save_dots"]) > len(ours["full"])
