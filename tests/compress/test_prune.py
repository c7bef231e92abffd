"""Magnitude pruning: masks hit the requested sparsity exactly, 2:4 holds in every group of 4,
and the zeros stay zero through fine-tuning (the optimizer's keep_zeros)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm import config as config_lib
from jaxllm.compress import prune, quantize
from jaxllm.errors import ConfigError
from jaxllm.models import Transformer, get_size
from jaxllm.models.params import init_params_fn, unbox
from jaxllm.objectives import lm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.train import optimizer as optimizer_lib
from jaxllm.train import state as state_lib
from jaxllm.train import step as step_lib

TINY = get_size("tiny")
SCAN = dataclasses.replace(TINY, scan_layers=True)


@functools.cache
def _params(cfg, seed=0):
  return unbox(jax.jit(init_params_fn(Transformer(cfg), 8))(jax.random.key(seed)))


@pytest.mark.parametrize("sparsity", [0.1, 0.37, 0.5, 0.9])
def test_global_unstructured_masks_remove_exactly_the_smallest(sparsity):
  params = _params(TINY)
  masks = prune.magnitude_masks(params, TINY, sparsity)
  total = sum(m.size for m in masks.values())
  assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * total)
  kernels = prune.targeted(params, prune.DEFAULT_TARGETS)
  assert set(masks) == set(kernels) and len(masks) == 7 * TINY.num_layers
  removed = max(float(np.abs(kernels[k])[~m].max()) for k, m in masks.items())
  kept = min(float(np.abs(kernels[k])[m].min()) for k, m in masks.items())
  assert removed <= kept  # global: one threshold over every layer
  pruned = prune.apply_masks(params, masks)
  assert prune.sparsity_of(pruned)["targeted"] == round(sparsity * total) / total
  # Untargeted params (embedding, norms) are untouched.
  np.testing.assert_array_equal(pruned["embed"]["embedding"], params["embed"]["embedding"])


def test_global_pruning_takes_more_from_layers_of_smaller_weights():
  params = jax.tree.map(lambda x: x, _params(TINY))  # a copy of the cached dicts
  params["layer_0"]["mlp"]["up"]["kernel"] = params["layer_0"]["mlp"]["up"]["kernel"] * 0.1
  masks = prune.magnitude_masks(params, TINY, 0.5)
  assert (~masks["layer_0/mlp/up/kernel"]).mean() > 0.95
  assert (~masks["layer_1/mlp/up/kernel"]).mean() < 0.5


@pytest.mark.parametrize("cfg", [TINY, SCAN], ids=["layers", "scanned"])
def test_two_four_keeps_the_two_largest_of_every_group_along_the_input_axis(cfg):
  params = _params(cfg)
  masks = prune.magnitude_masks(params, cfg, 0.5, "2:4")
  axes = quantize.kernel_input_axes(cfg)
  kernels = prune.targeted(params, prune.DEFAULT_TARGETS)
  for name, mask in masks.items():
    axis = axes[name][-1]  # o: [heads, head_dim, embed] groups along head_dim
    m = np.moveaxis(mask, axis, -1)
    groups = m.reshape(*m.shape[:-1], -1, 4)
    assert np.all(groups.sum(-1) == 2), name
    w = np.moveaxis(np.abs(np.asarray(kernels[name])), axis, -1).reshape(groups.shape)
    assert np.all(np.where(groups, w, np.inf).min(-1) >= np.where(groups, -np.inf, w).max(-1))
  in_axes = {n: a for n, a in axes.items() if n in masks}
  s = 1 if cfg.scan_layers else 0
  assert in_axes[("layers" if s else "layer_0") + "/attn/o/kernel"] == (s, s + 1)
  assert in_axes[("layers" if s else "layer_0") + "/mlp/down/kernel"] == (s,)


def test_bad_pruning_settings_are_clear_errors():
  params = _params(TINY)
  with pytest.raises(ConfigError, match="config.prune.targets"):
    prune.magnitude_masks(params, TINY, 0.5, targets="nothing/here$")
  with pytest.raises(ConfigError, match="config.prune.structure"):
    prune.magnitude_masks(params, TINY, 0.5, structure="4:8")
  odd = dataclasses.replace(TINY, mlp_dim=190)
  with pytest.raises(ConfigError, match="mlp/down/kernel has 190 inputs"):
    prune.magnitude_masks(_params(odd), odd, 0.5, structure="2:4")


@pytest.mark.slow
def test_masked_weights_stay_zero_through_a_recovery_fine_tune():
  """A sharded train state built like the loop builds it (the masks come from the boxed,
  logically partitioned params), AdamW with weight decay, 10 steps: zeros stay exactly zero
  and the kept weights train."""
  config = config_lib.base_config("tiny")
  config.optimizer.lr, config.optimizer.warmup_steps = 1e-2, 0
  config.optimizer.weight_decay = 0.1
  config.optimizer.keep_zeros = prune.DEFAULT_TARGETS
  model = Transformer(TINY)
  params = _params(TINY)
  pruned = prune.apply_masks(params, prune.magnitude_masks(params, TINY, 0.6))
  tx = optimizer_lib.make_optimizer(config.optimizer, 10)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  with jax.set_mesh(mesh):
    _, shardings = state_lib.state_shardings(model, tx, mesh, rules, 32)
    state = state_lib.create_state(model, tx, jax.random.key(0), shardings, 32, pruned)
    step = jax.jit(step_lib.make_train_step(lm.lm_loss, model, tx))
    tokens = jax.random.randint(jax.random.key(3), (8, 33), 0, TINY.vocab_size)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "loss_mask": jnp.ones((8, 32))}
    for _ in range(10):
      state, _ = step(state, batch, jax.random.key(0))
  final = jax.device_get(state["params"])
  for name, before in prune.targeted(pruned, prune.DEFAULT_TARGETS).items():
    after = prune.targeted(final, name + "$")[name]
    zero = np.asarray(before) == 0
    assert np.all(np.asarray(after)[zero] == 0), name
    assert np.mean(np.asarray(after)[~zero] != np.asarray(before)[~zero]) > 0.99, name
  total = prune.sparsity_of(final)["targeted_weights"]
  assert prune.sparsity_of(final)["targeted"] == round(0.6 * total) / total
  # Without keep_zeros the same fine-tune regrows them.
  config.optimizer.keep_zeros = ""
  tx = optimizer_lib.make_optimizer(config.optimizer, 10)
  plain = {"step": jnp.zeros((), jnp.int32), "params": pruned, "opt_state": tx.init(pruned),
           "nonfinite_streak": jnp.zeros((), jnp.int32),
           "nonfinite_total": jnp.zeros((), jnp.int32)}
  plain, _ = jax.jit(step_lib.make_train_step(lm.lm_loss, model, tx))(plain, batch,
                                                                    jax.random.key(0))
  assert prune.sparsity_of(plain["params"])["targeted"] < 0.01
