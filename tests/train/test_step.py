"""The train step: overfitting, gradient accumulation and sharding give the gradients of one
device and one batch (checked on the gradients themselves, and shown to catch a scaled one), one
compile, non-finite skips, epochs x minibatches."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxllm import config as config_lib
from jaxllm.errors import ConfigError
from jaxllm.models import Transformer, get_size
from jaxllm.objectives import lm
from jaxllm.parallel import global_batch, make_mesh, rules_from_config
from jaxllm.train import optimizer as optimizer_lib
from jaxllm.train import state as state_lib
from jaxllm.train import step as step_lib
from tests.helpers import scaled_gradients

CFG = get_size("tiny")


def _batch(batch_size=8, seq_len=16, seed=0, vocab=CFG.vocab_size):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (batch_size, seq_len + 1)).astype(np.int32)
  mask = np.ones((batch_size, seq_len), np.float32)
  mask[1::3, : seq_len // 2] = 0.0  # unequal token counts per row and per microbatch
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": mask}


def _setup(mesh_sizes=None, devices=None, opt=None, microbatches=1, cfg=CFG, num_steps=100,
           loss_fn=lm.lm_loss, tx=None):
  """(mesh, rules, state, jitted step): AdamW from the pretraining config unless `tx` is given."""
  config = config_lib.base_config("tiny")
  if opt:
    config.optimizer.update(opt)
  mesh_config = {"data": -1, "fsdp": 1, "tensor": 1, **(mesh_sizes or {})}
  mesh = make_mesh(mesh_config, devices=devices)
  rules = rules_from_config(config.mesh.rules)
  model = Transformer(cfg)
  tx = tx or optimizer_lib.make_optimizer(config.optimizer, num_steps)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, shardings = state_lib.state_shardings(model, tx, mesh, rules, 16)
    state = state_lib.create_state(model, tx, jax.random.key(0), shardings, 16)
    step = jax.jit(step_lib.make_train_step(loss_fn, model, tx, None, microbatches),
                   out_shardings=(shardings, None), donate_argnums=(0,))
  return mesh, rules, state, step


def _run(mesh, rules, state, step, batches):
  """Runs the batches; returns the final state, the losses and the gradient norms."""
  losses, grad_norms = [], []
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    for b in batches:
      state, metrics = step(state, global_batch(b, mesh), jax.random.key(1))
      losses.append(float(metrics["loss"]))
      grad_norms.append(float(metrics["grad_norm"]))
  return state, losses, grad_norms


SGD_LR = 1e4  # large, so the change dwarfs the params and float32 rounding in new - old


def _sgd_change(batch, **setup):
  """One plain SGD step (no clipping, no decay): each param's change is -lr x gradient, so a
  wrong scale of the gradient shows in full, unlike AdamW, which cancels any constant scale."""
  mesh, rules, state, step = _setup(tx=optax.sgd(SGD_LR), **setup)
  before = [np.array(x, copy=True) for x in jax.tree.leaves(state["params"])]
  after, _, grad_norms = _run(mesh, rules, state, step, [batch])
  change = [(np.asarray(a) - b) / SGD_LR for a, b in zip(jax.tree.leaves(after["params"]), before)]
  return change, grad_norms[0]


def _assert_same_gradients(got, want, rtol=1e-5):
  """Equal gradient norms and per-parameter SGD changes, relative to their size."""
  (got_change, got_norm), (want_change, want_norm) = got, want
  assert got_norm == pytest.approx(want_norm, rel=rtol)
  for g, w in zip(got_change, want_change):
    assert np.linalg.norm(g - w) <= rtol * np.linalg.norm(w) + 1e-12


def test_tiny_model_overfits_one_batch():
  setup = _setup(devices=jax.devices()[:1], opt=dict(lr=1e-2, warmup_steps=5, weight_decay=0.0))
  batch = _batch(batch_size=4)
  _, losses, _ = _run(*setup, [batch] * 150)
  assert losses[0] > 5.0  # log(320) = 5.77 at init
  assert losses[-1] < 0.1, losses[-10:]


ONE_DEVICE = {"devices": jax.devices()[:1]}
SHARDED = {"data": 1, "fsdp": 4, "tensor": 2}
TWO_BATCHES = (_batch(), _batch(seed=1))


@pytest.fixture(scope="module")
def one_device():
  """What the other layouts must reproduce: one SGD step's change and gradient norm, and two
  AdamW steps (losses, gradient norms, params), all on one device with the full batch."""
  return _sgd_change(TWO_BATCHES[0], **ONE_DEVICE), _run(*_setup(**ONE_DEVICE), TWO_BATCHES)


def test_gradient_accumulation_four_microbatches_equals_full_batch(one_device):
  sgd, full = one_device
  _assert_same_gradients(_sgd_change(TWO_BATCHES[0], microbatches=4, **ONE_DEVICE), sgd)
  # Two AdamW steps: the loss, the gradient norm and the params.
  accum = _run(*_setup(microbatches=4, **ONE_DEVICE), TWO_BATCHES)
  np.testing.assert_allclose(accum[1], full[1], rtol=1e-6)
  np.testing.assert_allclose(accum[2], full[2], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(full[0]["params"]), jax.tree.leaves(accum[0]["params"])):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_fsdp4_tensor2_on_8_devices_equals_one_device(one_device):
  assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
  sgd, one = one_device
  _assert_same_gradients(_sgd_change(TWO_BATCHES[0], mesh_sizes=SHARDED), sgd)
  mesh, rules, state, step = _setup(SHARDED)
  q_kernel = state["params"]["layer_0"]["attn"]["q"]["kernel"]  # logical (embed, heads, head_dim)
  assert q_kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  assert q_kernel.addressable_shards[0].data.shape == (CFG.d_model // 4, CFG.num_heads // 2,
                                                       CFG.resolved_head_dim)
  down = state["params"]["layer_0"]["mlp"]["down"]["kernel"]  # (mlp, embed)
  assert down.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  mu = state["opt_state"][1][0].mu["layer_0"]["attn"]["q"]["kernel"]  # Adam moment, same layout
  assert mu.sharding.spec == q_kernel.sharding.spec
  sharded = _run(mesh, rules, state, step, TWO_BATCHES)
  np.testing.assert_allclose(sharded[1], one[1], atol=1e-5)
  np.testing.assert_allclose(sharded[2], one[2], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(sharded[0]["params"]), jax.tree.leaves(one[0]["params"])):
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("side", [{"microbatches": 4, **ONE_DEVICE}, {"mesh_sizes": SHARDED}],
                         ids=["accumulated", "sharded"])
def test_the_equality_checks_fail_on_scaled_gradients(one_device, side):
  """The two tests above compare gradients, not AdamW updates: the accumulated or sharded side
  with its gradients scaled by 1.001 (a 4x scale AdamW would cancel fails all the more) while
  its loss stays the same fails them."""
  got = _sgd_change(TWO_BATCHES[0], loss_fn=scaled_gradients(lm.lm_loss, 1.001), **side)
  with pytest.raises(AssertionError):
    _assert_same_gradients(got, one_device[0])


def test_step_compiles_once():
  mesh, rules, state, _ = _setup(devices=jax.devices()[:1])
  model = Transformer(CFG)
  tx = optimizer_lib.make_optimizer(config_lib.base_config().optimizer, 100)
  raw = step_lib.make_train_step(lm.lm_loss, model, tx)
  step = jax.jit(chex.assert_max_traces(raw, n=1), donate_argnums=(0,))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    for seed in range(4):
      state, _ = step(state, global_batch(_batch(seed=seed), mesh), jax.random.key(seed))
  assert int(state["step"]) == 4


def test_non_finite_loss_skips_the_update_and_is_counted():
  setup = _setup(devices=jax.devices()[:1])
  mesh, rules, state, step = setup
  before = jax.tree.map(np.asarray, state["params"])
  bad = _batch()
  bad["loss_mask"] = bad["loss_mask"] * np.float32("nan")
  state, _, _ = _run(mesh, rules, state, step, [bad, bad])
  assert int(state["nonfinite_streak"]) == 2 and int(state["nonfinite_total"]) == 2
  assert int(state["step"]) == 2
  for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(before)):
    np.testing.assert_array_equal(a, b)
  state, losses, _ = _run(mesh, rules, state, step, [_batch()])
  assert np.isfinite(losses[0]) and int(state["nonfinite_streak"]) == 0
  assert int(state["nonfinite_total"]) == 2


def test_split_microbatches_strides_rows():
  x = {"a": jnp.arange(8)}
  out = step_lib.split_microbatches(x, 4)["a"]
  np.testing.assert_array_equal(out, [[0, 4], [1, 5], [2, 6], [3, 7]])


def test_create_state_from_given_params_places_them_with_fresh_optimizer_state():
  mesh, rules, fresh, _ = _setup({"data": 1, "fsdp": 4, "tensor": 2})
  model = Transformer(CFG)
  tx = optimizer_lib.make_optimizer(config_lib.base_config().optimizer, 100)
  given = jax.tree.map(lambda x: np.asarray(x) + 1.0, fresh["params"])
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, shardings = state_lib.state_shardings(model, tx, mesh, rules, 16)
    state = state_lib.create_state(model, tx, jax.random.key(5), shardings, 16, params=given)
  for got, want, fresh_leaf in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(given),
                                   jax.tree.leaves(fresh["params"])):
    np.testing.assert_array_equal(got, want)
    assert got.sharding == fresh_leaf.sharding
  mu = state["opt_state"][1][0].mu
  assert all(float(np.abs(m).max()) == 0.0 for m in jax.tree.leaves(mu))
  assert int(state["step"]) == 0


def test_mean_squares_become_standard_deviations():
  from jaxllm.train.metrics import add_std
  values = [1.0, 3.0, 5.0]
  mean, mean_sq = np.mean(values), np.mean(np.square(values))
  out = add_std({"eval/r": mean, "eval/r_sq": mean_sq, "eval/other_sq": 2.0})
  assert out["eval/r_std"] == pytest.approx(np.std(values)) and "eval/r_sq" not in out
  assert out["eval/other_sq"] == 2.0  # no mean beside it: left as it is


@pytest.mark.slow
def test_epochs_and_minibatches_are_sequential_updates_on_shuffled_minibatches():
  """One step with epochs=2, minibatches=2 makes the four updates that single-update steps make
  on the rows each epoch's permutation picks, sharded on 8 devices as on one."""
  config = config_lib.base_config("tiny")
  config.optimizer.update(lr=1e-2, warmup_steps=0)
  model = Transformer(CFG)
  tx = optimizer_lib.make_optimizer(config.optimizer, 8)
  batch = _batch(batch_size=16)
  rng = jax.random.key(3)
  mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  rules = rules_from_config(config.mesh.rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, shardings = state_lib.state_shardings(model, tx, mesh, rules, 16)
    fresh = lambda: state_lib.create_state(model, tx, jax.random.key(0), shardings, 16)
    multi = jax.jit(step_lib.make_train_step(lm.lm_loss, model, tx, epochs=2, minibatches=2))
    got, metrics = multi(fresh(), global_batch(batch, mesh), rng)
    single = jax.jit(step_lib.make_train_step(lm.lm_loss, model, tx))
    want, losses = fresh(), []
    step_rng = jax.random.fold_in(rng, 0)
    for epoch in range(2):
      order = np.asarray(jax.random.permutation(jax.random.fold_in(step_rng, 4 + epoch), 16))
      for half in range(2):
        rows = order[half * 8:(half + 1) * 8]
        mb = {k: v[rows] for k, v in batch.items()}
        want, m = single(want, global_batch(mb, mesh), rng)
        losses.append(float(m["loss"]))
  assert int(got["step"]) == 1 and int(want["step"]) == 4
  np.testing.assert_allclose(float(metrics["loss"]), np.mean(losses), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["loss_first"]), losses[0], rtol=1e-5)
  assert losses[-1] < losses[0]
  for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(want["params"])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_xla_options_parse_and_auto_picks_the_backend_defaults():
  assert step_lib.xla_options("auto", "cpu") == {"xla_cpu_experimental_ynn_fusion_type": ""}
  assert step_lib.xla_options("auto", "tpu") == {}
  assert step_lib.xla_options("") == {}
  assert step_lib.xla_options(" xla_cpu_enable_fast_math=true, xla_a=1 ") == {
      "xla_cpu_enable_fast_math": "true", "xla_a": "1"}
  with pytest.raises(ConfigError, match=r"config.train.xla_options: 'fast_math' is not"):
    step_lib.xla_options("fast_math")


@pytest.mark.slow
def test_step_with_auto_xla_options_equals_the_default_compile():
  """The CPU options change how XLA emits the step, not what it computes."""
  config = config_lib.base_config("tiny")
  model = Transformer(CFG)
  tx = optimizer_lib.make_optimizer(config.optimizer, 100)
  state = state_lib.create_state(model, tx, jax.random.key(0), None, 16)
  batches = [{k: jnp.asarray(v) for k, v in _batch(seed=s).items()} for s in range(3)]
  losses = {}
  for spec in ("", "auto"):
    step = jax.jit(step_lib.make_train_step(lm.lm_loss, model, tx),
                   compiler_options=step_lib.xla_options(spec))
    s, out = state, []
    for b in batches:
      s, metrics = step(s, b, jax.random.key(1))
      out.append(float(metrics["loss"]))
    losses[spec] = out
  np.testing.assert_allclose(losses["auto"], losses[""], rtol=1e-5)
