"""Chunked cross-entropy: the same loss, metrics and gradients as the whole-logits loss; the
z-loss, whole and chunked, against cross-entropy + c * logsumexp^2 written out with jax.numpy."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.errors import ConfigError
from jaxllm.models import Transformer, get_size
from jaxllm.models import lora as lora_lib
from jaxllm.models.params import unbox
from jaxllm.objectives import lm

CFG = get_size("tiny")


def _batch(cfg, b=4, t=32, seed=0):
  rng = np.random.default_rng(seed)
  return {"inputs": jnp.asarray(rng.integers(0, cfg.vocab_size, (b, t)), jnp.int32),
          "targets": jnp.asarray(rng.integers(0, cfg.vocab_size, (b, t)), jnp.int32),
          "loss_mask": jnp.asarray(rng.integers(0, 2, (b, t)), jnp.float32)}


def _params(model, cfg):
  return unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])


def _assert_same(loss_fn_a, loss_fn_b, params):
  (loss_a, metrics_a), grads_a = jax.value_and_grad(loss_fn_a, has_aux=True)(params)
  (loss_b, metrics_b), grads_b = jax.value_and_grad(loss_fn_b, has_aux=True)(params)
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
  assert metrics_a.keys() == metrics_b.keys()
  for key in metrics_a:
    np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-6, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6),
               grads_a, grads_b)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "lm_head"])
@pytest.mark.parametrize("chunk", [8, 32])
def test_chunked_cross_entropy_equals_full_with_its_gradient(tie, chunk):
  cfg = dataclasses.replace(CFG, tie_embeddings=tie)
  model = Transformer(cfg)
  params, batch = _params(model, cfg), _batch(cfg)
  full = lambda p: lm.lm_loss(p, batch, None, model, z_loss=1e-3)
  chunked = lambda p: lm.lm_loss(p, batch, None, model, z_loss=1e-3, chunk=chunk)
  _assert_same(full, chunked, params)


@pytest.mark.slow
def test_chunked_cross_entropy_with_scan_remat_bf16_and_dropout_rng():
  cfg = dataclasses.replace(CFG, scan_layers=True, remat="save_dots", dtype="bfloat16")
  model = Transformer(cfg)
  params, batch = _params(model, cfg), _batch(cfg)
  rng = jax.random.key(3)
  full = lambda p: lm.lm_loss(p, batch, rng, model)
  chunked = lambda p: lm.lm_loss(p, batch, rng, model, chunk=16)
  (loss_a, _), grads_a = jax.value_and_grad(full, has_aux=True)(params)
  (loss_b, _), grads_b = jax.value_and_grad(chunked, has_aux=True)(params)
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-3)  # bf16 logits matmul per piece
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):  # within bf16 rounding
    np.testing.assert_allclose(b, a, rtol=2 ** -6, atol=2e-3 * float(jnp.max(jnp.abs(a))))


def test_chunked_cross_entropy_trains_lora_adapters_like_the_full_loss():
  lora = lora_lib.LoraConfig(rank=4)
  base = _params(Transformer(CFG), CFG)
  model = lora_lib.LoraModel(Transformer(CFG, lora=lora)).with_frozen(base)
  adapters = unbox(model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"])
  adapters = jax.tree.map(lambda x: x + 0.05, adapters)  # b != 0: the adapters matter
  batch = _batch(CFG)
  _assert_same(lambda a: lm.lm_loss(a, batch, None, model),
               lambda a: lm.lm_loss(a, batch, None, model, chunk=16), adapters)


def test_chunked_cross_entropy_errors_name_the_field():
  model = Transformer(CFG)
  params, batch = _params(model, CFG), _batch(CFG)
  with pytest.raises(ConfigError, match=r"config.train.loss_chunk=12 must divide"):
    lm.lm_loss(params, batch, None, model, chunk=12)
  lora = lora_lib.LoraConfig(rank=4, targets=lora_lib.DEFAULT_TARGETS + "|lm_head")
  lora_model = lora_lib.LoraModel(Transformer(CFG, lora=lora)).with_frozen(params)
  adapters = unbox(lora_model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"])
  with pytest.raises(ConfigError, match=r"LoRA adapter on lm_head"):
    lm.lm_loss(adapters, batch, None, lora_model, chunk=8)


def test_chunked_logits_keep_the_batch_sharding():
  """Pieces run along the sequence: under a data-parallel mesh the loss is unchanged."""
  from jaxllm.config import DEFAULT_RULES
  from jaxllm.parallel import global_batch, make_mesh, rules_from_config
  mesh = make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  rules = rules_from_config(DEFAULT_RULES)
  model = Transformer(CFG)
  params, batch = _params(model, CFG), _batch(CFG, b=8)
  expected = lm.lm_loss(params, batch, None, model)[0]
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sharded = global_batch({k: np.asarray(v) for k, v in batch.items()}, mesh)
    loss = jax.jit(lambda p, b: lm.lm_loss(p, b, None, model, chunk=8)[0])(params, sharded)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def _reference_lm_sums(logits_btv, targets_bt, mask_bt, z_loss):
  """(sum of cross-entropy + z_loss * logsumexp^2, sum of logsumexp^2) over masked tokens, from
  the logits with plain jax.numpy: logsumexp as max + log(sum(exp(logits - max)))."""
  logits_btv = logits_btv.astype(jnp.float32)
  top_bt = jnp.max(logits_btv, axis=-1)
  lse_bt = top_bt + jnp.log(jnp.sum(jnp.exp(logits_btv - top_bt[..., None]), axis=-1))
  target_bt = jnp.take_along_axis(logits_btv, targets_bt[..., None], axis=-1)[..., 0]
  mask_bt = mask_bt.astype(jnp.float32)
  loss = jnp.sum(((lse_bt - target_bt) + z_loss * lse_bt ** 2) * mask_bt)
  return loss, jnp.sum(lse_bt ** 2 * mask_bt)


@pytest.mark.parametrize("chunk", [0, 8], ids=["whole", "chunk8"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "lm_head"])
def test_z_loss_adds_c_times_logsumexp_squared_per_masked_token(tie, chunk):
  cfg = dataclasses.replace(CFG, tie_embeddings=tie)
  model = Transformer(cfg)
  params, batch = _params(model, cfg), _batch(cfg)
  # Larger weights move logsumexp away from log(vocab), so its square is not a near-constant.
  params = jax.tree.map(lambda x: x * 3.0, params)
  logits = model.apply({"params": params}, batch["inputs"])
  c = 0.05
  want, want_z = _reference_lm_sums(logits, batch["targets"], batch["loss_mask"], c)
  want_nll, _ = _reference_lm_sums(logits, batch["targets"], batch["loss_mask"], 0.0)
  assert float(want - want_nll) > 0.1 * float(want_nll)  # the z term is far above rtol
  loss, metrics = lm.lm_loss(params, batch, None, model, z_loss=c, chunk=chunk)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["z_loss"], want_z, rtol=1e-5)
  np.testing.assert_allclose(metrics["nll"], want_nll, rtol=1e-5)
  np.testing.assert_allclose(metrics["weight"], jnp.sum(batch["loss_mask"]), rtol=0)
  plain, plain_metrics = lm.lm_loss(params, batch, None, model, chunk=chunk)
  np.testing.assert_allclose(plain, want_nll, rtol=1e-5)
  assert "z_loss" not in plain_metrics
