"""int8 weight-only quantization: the per-channel error bound, logits of the int8 model against
the float one, memory, and LoRA over an int8 base (QLoRA)."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxllm import config as config_lib
from jaxllm.compress import quantize
from jaxllm.errors import ConfigError
from jaxllm.models import Transformer, get_size
from jaxllm.models import lora as lora_lib
from jaxllm.models.params import init_params_fn, param_bytes, unbox
from jaxllm.objectives import lm
from jaxllm.recipes import sft
from jaxllm.train import optimizer as optimizer_lib
from jaxllm.train import step as step_lib

TINY = get_size("tiny")
CASES = {"llama": TINY, "llama_scan": dataclasses.replace(TINY, scan_layers=True),
         "gpt2_untied": dataclasses.replace(TINY, norm="layer", mlp="gelu", position="learned",
                                            use_bias=True, tie_embeddings=False, num_kv_heads=1)}


def _params(cfg, seed=0):
  return unbox(jax.jit(init_params_fn(Transformer(cfg), 8))(jax.random.key(seed)))


def _tokens(cfg, batch=4, length=24):
  return jax.random.randint(jax.random.key(7), (batch, length), 0, cfg.vocab_size)


@pytest.mark.parametrize("shape,axes", [((64, 48), (0,)), ((2, 64, 4, 16), (1,)),
                                        ((4, 16, 64), (0, 1)), ((300, 64), (1,))])
def test_quantize_dequantize_error_is_bounded_per_channel(shape, axes):
  w = jax.random.normal(jax.random.key(0), shape) * jnp.exp(
      jax.random.normal(jax.random.key(1), shape[-1:]))  # channels of very different ranges
  w = w.at[..., 0].set(0.0) if axes != (len(shape) - 1,) else w  # an all-zero channel
  q, scale = quantize.quantize_array(w, axes)
  assert q.dtype == jnp.int8 and scale.shape == tuple(d for i, d in enumerate(shape)
                                                      if i not in axes)
  assert int(jnp.max(jnp.abs(q.astype(jnp.int32)))) <= 127
  err = jnp.abs(w - quantize.dequantize_array(q, scale, axes))
  bound = jnp.expand_dims(scale, axes) / 2
  assert bool(jnp.all(err <= bound * (1 + 1e-6)))
  # The largest weight of every non-zero channel maps to +-127: the finest scale there is.
  absmax_q = jnp.max(jnp.abs(q.astype(jnp.int32)), axis=axes)
  nonzero = jnp.max(jnp.abs(w), axis=axes) > 0
  assert bool(jnp.all(jnp.where(nonzero, absmax_q == 127, absmax_q == 0)))


@pytest.mark.parametrize("name", CASES)
def test_int8_model_logits_close_to_float(name):
  cfg = CASES[name]
  params = _params(cfg)
  qparams = quantize.quantize_params(params, cfg)
  tokens = _tokens(cfg)
  logits = Transformer(cfg).apply({"params": params}, tokens)
  q_logits = Transformer(quantize.quantized_config(cfg)).apply({"params": qparams}, tokens)
  rel = float(jnp.linalg.norm(q_logits - logits) / jnp.linalg.norm(logits))
  assert 0 < rel < 0.03, rel
  # The int8 model computes exactly the float model of its dequantized weights.
  deq = quantize.dequantize_params(qparams, cfg)
  np.testing.assert_allclose(Transformer(cfg).apply({"params": deq}, tokens), q_logits,
                             atol=1e-5, rtol=1e-5)
  assert jax.tree.structure(deq) == jax.tree.structure(params)
  int8 = [x for x in jax.tree.leaves(qparams) if x.dtype == jnp.int8]
  per_layer = 4 + (3 if cfg.mlp == "swiglu" else 2)  # q k v o, gate? up down
  assert len(int8) == per_layer * (1 if cfg.scan_layers else cfg.num_layers) + 1 + (
      not cfg.tie_embeddings)
  assert param_bytes(qparams) < 0.35 * param_bytes(params)


def test_quantizing_twice_or_the_wrong_params_is_an_error():
  params = _params(TINY)
  qparams = quantize.quantize_params(params, TINY)
  with pytest.raises(ConfigError, match="quantized already"):
    quantize.quantize_params(qparams, quantize.quantized_config(TINY))
  with pytest.raises(ConfigError, match="shape"):
    quantize.quantize_params(params, dataclasses.replace(TINY, mlp_dim=128))


def _lora_config():
  return ml_collections.ConfigDict({"rank": 4, "alpha": 8.0, "dropout": 0.0,
                                    "targets": lora_lib.DEFAULT_TARGETS, "rslora": False})


@pytest.mark.slow
def test_qlora_trains_adapters_over_a_frozen_int8_base():
  cfg = TINY
  base_cfg, base = quantize.frozen_base(_params(cfg), cfg, "int8")
  assert base_cfg.quant == "int8" and quantize.is_quantized(base)
  lora = lora_lib.LoraConfig.from_config(_lora_config())
  model = lora_lib.LoraModel(Transformer(base_cfg, lora=lora))
  tokens = _tokens(cfg, batch=8, length=33)
  adapters = unbox(model.init(jax.random.key(1), tokens)["params"])
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
           "loss_mask": jnp.ones(tokens[:, 1:].shape)}
  # The chunked loss takes the head from the int8 base: equal to the whole-logits loss.
  bound = model.with_frozen(base)
  whole = lm.lm_loss(adapters, batch, None, bound)
  chunked = lm.lm_loss(adapters, batch, None, bound, chunk=8)
  np.testing.assert_allclose(whole[0], chunked[0], rtol=1e-5)
  opt = config_lib.base_config("tiny").optimizer
  opt.lr, opt.warmup_steps = 1e-2, 0
  tx = optimizer_lib.make_optimizer(opt, 20)
  state = {"step": jnp.zeros((), jnp.int32), "params": adapters, "opt_state": tx.init(adapters),
           "nonfinite_streak": jnp.zeros((), jnp.int32),
           "nonfinite_total": jnp.zeros((), jnp.int32)}
  step = jax.jit(step_lib.make_train_step(lm.lm_loss, model, tx))
  before = jax.tree.map(np.asarray, base)
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch, jax.random.key(0), base)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] - 0.1, losses
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, base))
  # Merged into the dequantized base, the adapters give the logits the QLoRA model computes.
  merged = lora_lib.merge(quantize.as_float(base, cfg), state["params"], lora)
  np.testing.assert_allclose(Transformer(cfg).apply({"params": merged}, tokens),
                             bound.apply({"params": state["params"]}, tokens),
                             atol=2e-4, rtol=2e-4)


def test_a_quantized_model_trains_only_through_lora():
  c = sft.default_config("tiny")
  c.model.quant = "int8"
  with pytest.raises(ConfigError, match="config.model.quant='int8'.*config.lora.rank"):
    config_lib.validate(c)
  c.lora.rank = 4
  config_lib.validate(c)
  c.lora.base_quant = "int4"
  with pytest.raises(ConfigError, match="config.lora.base_quant"):
    config_lib.validate(c)
