"""LoRA: zero-initialised adapters leave the model unchanged, merging is exact, counts follow the
formula, only the adapters train (the base is frozen and has no optimizer state), and one adapted
layer of the model computes x W (+ bias) + (alpha / r) x A B (alpha / sqrt(r) with rsLoRA),
written out in numpy from the param arrays."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm import config as config_lib
from jaxllm.errors import ConfigError
from jaxllm.models import Transformer, get_size
from jaxllm.models import lora as lora_lib
from jaxllm.models.params import count_params, unbox
from jaxllm.models.transformer import Linear
from jaxllm.objectives import lm
from jaxllm.recipes import sft
from jaxllm.train import optimizer as optimizer_lib
from jaxllm.train import step as step_lib

TINY = get_size("tiny")
GPT2 = dataclasses.replace(TINY, norm="layer", mlp="gelu", position="learned", use_bias=True,
                           num_kv_heads=4, max_seq_len=64)
CASES = {"llama": TINY, "llama_scan": dataclasses.replace(TINY, scan_layers=True), "gpt2": GPT2}


def _tokens(cfg, batch=2, length=12, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, cfg.vocab_size)


def _base_and_adapters(cfg, lora, seed=0, shapes_only=False):
  tokens = _tokens(cfg)
  init = jax.eval_shape if shapes_only else lambda f, *a: jax.jit(f)(*a)
  base = unbox(init(lambda r: Transformer(cfg).init(r, tokens)["params"], jax.random.key(seed)))
  model = lora_lib.LoraModel(Transformer(cfg, lora=lora))
  adapters = unbox(init(lambda r: model.init(r, tokens)["params"], jax.random.key(seed + 1)))
  return base, model, adapters


def _perturbed(adapters, scale=0.05):
  leaves, treedef = jax.tree.flatten(adapters)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return treedef.unflatten([x + scale * jax.random.normal(k, x.shape)
                            for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_initialised_b_gives_exactly_the_base_output(name):
  cfg = CASES[name]
  base, model, adapters = _base_and_adapters(cfg, lora_lib.LoraConfig(rank=4))
  assert all(not np.any(b["b"]) for b in _adapter_pairs(adapters))
  assert all(np.any(b["a"]) for b in _adapter_pairs(adapters))  # a is random, b is zero
  tokens = _tokens(cfg, seed=3)
  plain = Transformer(cfg).apply({"params": base}, tokens)
  adapted = model.with_frozen(base).apply({"params": adapters}, tokens)
  np.testing.assert_array_equal(plain, adapted)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_merged_equals_unmerged(name):
  cfg = CASES[name]
  lora = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=lora_lib.DEFAULT_TARGETS + "|lm_head")
  base, model, adapters = _base_and_adapters(cfg, lora)
  adapters = _perturbed(adapters)
  tokens = _tokens(cfg, seed=4)
  unmerged = model.with_frozen(base).apply({"params": adapters}, tokens)
  merged = Transformer(cfg).apply({"params": lora_lib.merge(base, adapters, lora)}, tokens)
  plain = Transformer(cfg).apply({"params": base}, tokens)
  assert float(jnp.abs(unmerged - plain).max()) > 0.1  # the adapters do change the output
  np.testing.assert_allclose(unmerged, merged, atol=2e-5)


def _adapter_pairs(tree):
  if isinstance(tree, dict) and set(tree) == {"a", "b"}:
    return [tree]
  return [p for v in tree.values() for p in _adapter_pairs(v)]


def trainable_formula(cfg, r, attention=True, mlp=True):
  """Trainable LoRA params: r * (fan_in + fan_out) per adapted matrix, per layer."""
  d, f = cfg.d_model, cfg.mlp_dim
  nh, kh = cfg.num_heads * cfg.resolved_head_dim, cfg.num_kv_heads * cfg.resolved_head_dim
  per_layer = 0
  if attention:  # q, k, v, o
    per_layer += r * (d + nh) + 2 * r * (d + kh) + r * (nh + d)
  if mlp:  # gate and up (SwiGLU) or up (GELU), then down
    per_layer += (2 if cfg.mlp == "swiglu" else 1) * r * (d + f) + r * (f + d)
  return cfg.num_layers * per_layer


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("rank", [1, 8])
def test_trainable_count_follows_thetrainable_formula(name, rank):
  cfg = CASES[name]
  _, _, adapters = _base_and_adapters(cfg, lora_lib.LoraConfig(rank=rank), shapes_only=True)
  assert count_params(adapters) == trainable_formula(cfg, rank)
  _, _, attention_only = _base_and_adapters(
      cfg, lora_lib.LoraConfig(rank=rank, targets=r"attn/(q|k|v|o)$"), shapes_only=True)
  assert count_params(attention_only) == trainable_formula(cfg, rank, mlp=False)


def test_targets_matching_nothing_and_bad_settings_are_clear_errors():
  with pytest.raises(ConfigError, match="matches no layer"):
    _base_and_adapters(TINY, lora_lib.LoraConfig(rank=2, targets="no_such_layer"),
                       shapes_only=True)
  c = sft.default_config("tiny").lora
  assert lora_lib.LoraConfig.from_config(c) is None  # rank 0: full fine-tuning
  for field, value in (("rank", -1), ("dropout", 1.5), ("targets", "attn/(q")):
    bad = sft.default_config("tiny").lora
    bad.rank, bad[field] = 4, value
    with pytest.raises(ConfigError, match="config.lora"):
      lora_lib.LoraConfig.from_config(bad)


def test_rslora_and_alpha_set_the_scale():
  assert lora_lib.LoraConfig(rank=16, alpha=32.0).scale == 2.0
  assert lora_lib.LoraConfig(rank=16, alpha=32.0, rslora=True).scale == 8.0


@pytest.mark.slow
def test_dropout_acts_on_the_adapter_input_only_in_training():
  lora = lora_lib.LoraConfig(rank=4, dropout=0.5)
  base, model, adapters = _base_and_adapters(TINY, lora)
  adapters = _perturbed(adapters)
  tokens = _tokens(TINY, seed=5)
  bound = model.with_frozen(base)
  eval_a = bound.apply({"params": adapters}, tokens)
  eval_b = bound.apply({"params": adapters}, tokens, deterministic=True)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = bound.apply({"params": adapters}, tokens, deterministic=False,
                        rngs={"dropout": jax.random.key(0)})
  train_b = bound.apply({"params": adapters}, tokens, deterministic=False,
                        rngs={"dropout": jax.random.key(1)})
  assert float(jnp.abs(train_a - train_b).max()) > 1e-3
  # With zero adapters the dropout has nothing to act on: the base model is deterministic.
  _, _, zero = _base_and_adapters(TINY, lora)
  np.testing.assert_array_equal(
      bound.apply({"params": zero}, tokens, deterministic=False,
                  rngs={"dropout": jax.random.key(0)}),
      Transformer(TINY).apply({"params": base}, tokens))


@pytest.mark.slow
def test_only_the_adapters_train_and_hold_optimizer_state():
  lora = lora_lib.LoraConfig(rank=4)
  base, model, adapters = _base_and_adapters(TINY, lora)
  base_copy = jax.tree.map(np.array, base)
  opt = config_lib.base_config("tiny").optimizer
  opt.lr, opt.warmup_steps = 1e-2, 0
  tx = optimizer_lib.make_optimizer(opt, 10)
  state = {"step": jnp.zeros((), jnp.int32), "params": adapters,
           "opt_state": tx.init(adapters), "nonfinite_streak": jnp.zeros((), jnp.int32),
           "nonfinite_total": jnp.zeros((), jnp.int32)}
  # AdamW's moments (mu, nu) mirror the trainable params only.
  moments = sum(x.size for x in jax.tree.leaves(state["opt_state"]) if x.ndim)
  assert moments == 2 * count_params(adapters)
  step = jax.jit(step_lib.make_train_step(lm.lm_loss, model, tx), donate_argnums=(0,))
  tokens = np.asarray(_tokens(TINY, batch=4, length=17, seed=6))
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
           "loss_mask": np.ones((4, 16), np.float32)}
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch, jax.random.key(0), base)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  for before, after in zip(jax.tree.leaves(base_copy), jax.tree.leaves(base)):
    np.testing.assert_array_equal(before, after)  # frozen: untouched, not donated
  assert all(np.any(p["b"]) for p in _adapter_pairs(state["params"]))


def _layer_inputs_and_outputs(bound_model, adapters, tokens, paths):
  """{path: (x, y)} of the Linear layers at `paths` (e.g. ('layer_1', 'attn', 'q')) in one
  compiled forward pass."""
  @jax.jit
  def run(adapters, tokens):
    seen = {}

    def spy(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      module = context.module
      if (isinstance(module, Linear) and context.method_name == "__call__"
          and tuple(module.path) in paths):
        seen[tuple(module.path)] = (args[0], out)
      return out

    with nn.intercept_methods(spy):
      bound_model.apply({"params": adapters}, tokens)
    return seen

  seen = run(adapters, tokens)
  assert set(seen) == set(paths)
  return {p: tuple(np.asarray(v, np.float64) for v in xy) for p, xy in seen.items()}


@pytest.mark.parametrize("rslora", [False, True], ids=["alpha_over_r", "rslora"])
@pytest.mark.parametrize("name,paths", [
    ("llama", [("layer_1", "attn", "q"), ("layer_0", "mlp", "down")]),
    ("gpt2", [("layer_1", "mlp", "up")])])  # with a bias
def test_adapted_layer_output_is_xw_plus_scaled_xab(name, paths, rslora):
  cfg = CASES[name]
  rank, alpha = 4, 6.0
  lora = lora_lib.LoraConfig(rank=rank, alpha=alpha, rslora=rslora)
  shapes = _base_and_adapters(cfg, lora, shapes_only=True)
  rng = np.random.default_rng(0)  # random values (numpy: no per-leaf compiles); a, b nonzero
  fill = lambda tree: jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.3, jnp.float32), tree)
  base, model, adapters = fill(shapes[0]), shapes[1], fill(shapes[2])
  seen = _layer_inputs_and_outputs(model.with_frozen(base), adapters, _tokens(cfg, seed=8), paths)
  scale = alpha / (math.sqrt(rank) if rslora else rank)  # 3 or 1.5
  for path in paths:
    x, y = seen[path]
    layer, adapter = base, adapters
    for key in path:
      layer, adapter = layer[key], adapter[key]
    w, a, b = (np.asarray(v, np.float64) for v in (layer["kernel"], adapter["a"], adapter["b"]))
    assert np.any(a) and np.any(b)
    in_dims = a.ndim - 1  # a: in_shape + (r,); b: (r,) + out_shape
    plain = np.tensordot(x, w, in_dims)
    if "bias" in layer:
      plain = plain + np.asarray(layer["bias"], np.float64)
    low_rank = np.tensordot(np.tensordot(x, a, in_dims), b, 1)
    assert np.abs(scale * low_rank).max() > 0.1 * np.abs(plain).max()  # the adapter matters
    want = plain + scale * low_rank
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                               err_msg="/".join(path))
