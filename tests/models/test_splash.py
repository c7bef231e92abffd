"""TPU splash attention: which implementation 'auto' picks per backend, and the kernel wrapper
(run in Pallas interpret mode on CPU) against XLA attention, values and gradients."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.models import Transformer, get_size, splash, transformer

TINY = get_size("tiny")


@pytest.mark.parametrize("backend,dtype,seq_len,expected", [
    ("tpu", "bfloat16", 2048, "splash"),
    ("tpu", "float32", 384, "splash"),  # 3 x 128
    ("tpu", "bfloat16", 100, "xla"),  # the kernel tiles 128 positions at a time
    ("gpu", "bfloat16", 2048, "cudnn"),
    ("gpu", "float32", 2048, "xla"),  # cuDNN flash attention is 16-bit only
    ("cpu", "bfloat16", 2048, "xla"),
])
def test_auto_attention_picks_the_kernel_for_the_backend(monkeypatch, backend, dtype, seq_len,
                                                        expected):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  cfg = dataclasses.replace(TINY, attention_impl="auto", dtype=dtype)
  assert transformer.attention_implementation(cfg, seq_len) == expected
  fixed = dataclasses.replace(cfg, attention_impl="xla")
  assert transformer.attention_implementation(fixed, seq_len) == "xla"


def _qkv(b=2, t=128, n=4, k=2, h=16):
  keys = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(keys[0], (b, t, n, h)), jax.random.normal(keys[1], (b, t, k, h)),
          jax.random.normal(keys[2], (b, t, k, h)))


def _xla(q, k, v, seg, causal=True, window=0):
  mask = None if seg is None else seg[:, None, :, None] == seg[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                      local_window_size=(window - 1, 0) if window else None)


@pytest.mark.parametrize("causal,window,packed", [(True, 0, True), (True, 32, False),
                                                  (False, 0, True)])
def test_splash_equals_xla_attention_with_gqa_packing_and_windows(causal, window, packed):
  q, k, v = _qkv()
  seg = jnp.asarray(np.repeat([[1] * 50 + [2] * 70 + [0] * 8], 2, 0)) if packed else None
  ours = functools.partial(splash.splash_attention, segment_ids_bt=seg, causal=causal,
                           sliding_window=window, interpret=True)
  ref = functools.partial(_xla, seg=seg, causal=causal, window=window)
  np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), atol=2e-6)
  loss = lambda f: lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))
  grads = [jax.grad(loss(f), (0, 1, 2))(q, k, v) for f in (ours, ref)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_model_with_splash_attention_equals_xla(monkeypatch):
  monkeypatch.setattr(splash, "splash_attention",
                      functools.partial(splash.splash_attention, interpret=True))
  tokens = jax.random.randint(jax.random.key(1), (2, 128), 0, TINY.vocab_size)
  segments = jnp.asarray([[1] * 64 + [2] * 64, [1] * 128])
  model = Transformer(TINY)
  params = model.init(jax.random.key(0), tokens)["params"]
  expected = model.apply(params_of := {"params": params}, tokens, segment_ids_bt=segments)
  splashed = Transformer(dataclasses.replace(TINY, attention_impl="splash"))
  np.testing.assert_allclose(splashed.apply(params_of, tokens, segment_ids_bt=segments),
                             expected, atol=2e-5)


def test_splash_refuses_lengths_it_cannot_tile():
  q, k, v = _qkv(t=96)
  with pytest.raises(ValueError, match="divisible by 128"):
    splash.splash_attention(q, k, v, None, interpret=True)


def test_splash_under_a_mesh_runs_per_shard_and_matches():
  """Batch over data x fsdp and heads over tensor: shard_map gives each device its block."""
  import flax.linen as nn

  from jaxllm.config import DEFAULT_RULES
  from jaxllm.parallel import make_mesh, rules_from_config
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  q, k, v = _qkv(b=4)
  seg = jnp.asarray(np.repeat([[1] * 60 + [2] * 68], 4, 0))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_from_config(DEFAULT_RULES)):
    out = jax.jit(lambda q, k, v, s: splash.splash_attention(q, k, v, s, interpret=True))(
        q, k, v, seg)
  np.testing.assert_allclose(out, _xla(q, k, v, seg), atol=2e-6)
