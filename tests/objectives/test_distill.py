"""Distillation loss: forward KL at a temperature (times T^2) mixed with the data's cross-entropy,
against a numpy computation; the teacher frozen in the train step; distillation steps bring the
student closer to the teacher on inputs it did not train on."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxllm.errors import ConfigError
from jaxllm.models import Transformer, get_size
from jaxllm.models.params import unbox
from jaxllm.objectives import distill, lm
from jaxllm.recipes import distill as distill_recipe
from jaxllm.train import step as step_lib

TEACHER_CFG = get_size("tiny", vocab_size=128, num_layers=1)  # wider than the student
STUDENT_CFG = get_size("tiny", vocab_size=128, num_layers=1, d_model=32, num_heads=2,
                       num_kv_heads=1, mlp_dim=64)


def _logits_case(seed=0, b=2, t=5, v=7):
  rng = np.random.default_rng(seed)
  student = rng.normal(size=(b, t, v)).astype(np.float32) * 2
  teacher = rng.normal(size=(b, t, v)).astype(np.float32) * 2
  targets = rng.integers(0, v, (b, t))
  mask = np.ones((b, t), np.float32)
  mask[0, :2] = mask[1, -1] = 0
  return student, teacher, targets, mask


def _numpy_loss(student, teacher, targets, mask, temperature, kd_weight):
  def softmax(x):
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
  p_teacher, p_student = softmax(teacher / temperature), softmax(student / temperature)
  kl_bt = np.sum(p_teacher * (np.log(p_teacher) - np.log(p_student)), -1)
  p_data = softmax(student)
  ce_bt = -np.log(np.take_along_axis(p_data, targets[..., None], -1)[..., 0])
  kl, ce = np.sum(kl_bt * mask), np.sum(ce_bt * mask)
  return kd_weight * temperature ** 2 * kl + (1 - kd_weight) * ce, kl, ce


@pytest.mark.parametrize("temperature,kd_weight", [(1.0, 1.0), (2.0, 0.5), (4.0, 0.9)])
def test_loss_is_hand_computed_forward_kl_at_temperature_mixed_with_cross_entropy(
    temperature, kd_weight):
  student, teacher, targets, mask = _logits_case()
  loss, metrics = distill.distill_sums(student, teacher, targets, mask, temperature, kd_weight)
  want, kl, ce = _numpy_loss(student, teacher, targets, mask, temperature, kd_weight)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(metrics["nll"], ce, rtol=1e-5)
  assert metrics["weight"] == mask.sum()
  correct = (student.argmax(-1) == targets) * mask
  assert metrics["accuracy"] == correct.sum()


def test_kd_weight_zero_is_the_plain_cross_entropy_and_masked_tokens_do_not_count():
  student, teacher, targets, mask = _logits_case(seed=1)
  loss, metrics = distill.distill_sums(student, teacher, targets, mask, 2.0, 0.0)
  ce_loss, ce_metrics = lm.masked_lm_sums(student, targets, mask)
  assert float(loss) == float(ce_loss) and float(metrics["nll"]) == float(ce_metrics["nll"])
  noisy_student, noisy_teacher = student.copy(), teacher.copy()
  masked = mask == 0
  noisy_student[masked] = 50.0 * np.random.default_rng(2).normal(size=noisy_student[masked].shape)
  noisy_teacher[masked] = -noisy_student[masked]
  for kd_weight in (0.0, 0.5):
    clean = distill.distill_sums(student, teacher, targets, mask, 2.0, kd_weight)
    noisy = distill.distill_sums(noisy_student, noisy_teacher, targets, mask, 2.0, kd_weight)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-6), clean, noisy)


def _models_and_batch(b=4, t=16):
  rng = np.random.default_rng(0)
  batch = {"inputs": jnp.asarray(rng.integers(0, 128, (b, t)), jnp.int32),
           "targets": jnp.asarray(rng.integers(0, 128, (b, t)), jnp.int32),
           "loss_mask": jnp.asarray(rng.integers(0, 2, (b, t)), jnp.float32)}
  teacher, student = Transformer(TEACHER_CFG), Transformer(STUDENT_CFG)
  return (distill.with_teacher(student, teacher), _random_params(student, rng),
          _random_params(teacher, rng), batch)


def _random_params(model, rng):
  """Random params of the model's shapes (no compiled init: the tests' time is compiling)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return jax.tree.map(lambda s: jnp.asarray(0.1 * rng.normal(size=s.shape), s.dtype),
                      unbox(shapes["params"]))


def test_teacher_gets_no_gradient_no_optimizer_state_and_stays_unchanged():
  model, student_params, teacher_params, batch = _models_and_batch()
  loss_fn = functools.partial(distill.distill_loss, temperature=2.0, kd_weight=0.5)
  teacher_grads = jax.jit(jax.grad(lambda tp: loss_fn(student_params, batch, None,
                                                      model.with_frozen(tp))[0]))(teacher_params)
  assert all(not np.any(g) for g in jax.tree.leaves(teacher_grads))

  tx = optax.adam(1e-2)
  step = jax.jit(step_lib.make_train_step(loss_fn, model, tx))
  state = {"step": jnp.zeros((), jnp.int32), "params": student_params,
           "opt_state": tx.init(student_params), "nonfinite_streak": jnp.zeros((), jnp.int32),
           "nonfinite_total": jnp.zeros((), jnp.int32)}
  teacher_before = jax.tree.map(np.array, teacher_params)
  new_state, metrics = step(state, batch, jax.random.key(0), teacher_params)
  jax.tree.map(np.testing.assert_array_equal, teacher_before, jax.device_get(teacher_params))
  # The step reports the loss's metrics at the params it started from, per target token.
  _, want = jax.jit(lambda p: loss_fn(p, batch, None, model.with_frozen(teacher_params)))(
      student_params)
  for key in ("kl", "teacher_nll", "nll"):
    np.testing.assert_allclose(metrics[key], want[key] / want["weight"], rtol=1e-4, err_msg=key)
  assert metrics["skipped"] == 0
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), student_params, new_state["params"])
  assert all(jax.tree.leaves(moved))
  # The optimizer's moments are the student's shapes only: nothing of the teacher's.
  student_shapes = sorted(x.shape for x in jax.tree.leaves(student_params))
  mu = new_state["opt_state"][0].mu
  assert jax.tree.structure(mu) == jax.tree.structure(student_params)
  assert sorted(x.shape for x in jax.tree.leaves(mu)) == student_shapes
  assert new_state.keys() == state.keys()


KD_WEIGHT = 1.0  # with 0 (the data alone) the test below fails (checked)


def test_kd_steps_lower_the_kl_to_the_teacher_on_inputs_not_trained_on():
  """Ten steps of distillation on one batch bring the student closer to the teacher on other
  inputs. The batch's targets are random tokens unrelated to the teacher, so the data term
  alone (kd_weight 0) moves the student away from the teacher instead."""
  model, student_params, teacher_params, batch = _models_and_batch()
  rng = np.random.default_rng(5)
  held_out = {"inputs": jnp.asarray(rng.integers(0, 128, (4, 16)), jnp.int32),
              "targets": jnp.asarray(rng.integers(0, 128, (4, 16)), jnp.int32),
              "loss_mask": jnp.ones((4, 16), jnp.float32)}
  teacher = model.with_frozen(teacher_params)

  @jax.jit
  def held_out_kl(params):  # KL(teacher || student) per token, at temperature 1
    _, m = distill.distill_loss(params, held_out, None, teacher, 1.0, 1.0)
    return m["kl"] / m["weight"]

  loss_fn = functools.partial(distill.distill_loss, temperature=1.0, kd_weight=KD_WEIGHT)
  tx = optax.adam(1e-2)
  step = jax.jit(step_lib.make_train_step(loss_fn, model, tx))
  state = {"step": jnp.zeros((), jnp.int32), "params": student_params,
           "opt_state": tx.init(student_params), "nonfinite_streak": jnp.zeros((), jnp.int32),
           "nonfinite_total": jnp.zeros((), jnp.int32)}
  before = float(held_out_kl(student_params))
  for _ in range(10):
    state, _ = step(state, batch, jax.random.key(0), teacher_params)
  after = float(held_out_kl(state["params"]))
  assert after < 0.8 * before, (before, after)


def test_chunked_loss_equals_the_whole_logits_loss_with_its_gradient():
  model, student_params, teacher_params, batch = _models_and_batch()
  model = model.with_frozen(teacher_params)
  loss = lambda chunk: lambda p: distill.distill_loss(p, batch, None, model, 2.0, 0.7,
                                                      z_loss=1e-3, chunk=chunk)
  grads = lambda chunk: jax.jit(jax.value_and_grad(loss(chunk), has_aux=True))(student_params)
  (full, full_metrics), full_grads = grads(0)
  (chunked, chunked_metrics), chunked_grads = grads(4)
  np.testing.assert_allclose(chunked, full, rtol=1e-5)
  for key in full_metrics:
    np.testing.assert_allclose(chunked_metrics[key], full_metrics[key], rtol=1e-5, atol=1e-5,
                               err_msg=key)  # the KL is a small difference of float32 sums
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6),
               full_grads, chunked_grads)


def test_errors_name_the_fields():
  with pytest.raises(ConfigError, match=r"config.model.vocab_size=64 .*model.vocab_size=128"):
    distill.with_teacher(Transformer(get_size("tiny", vocab_size=64)), Transformer(TEACHER_CFG))
  c = distill_recipe.default_config("tiny")
  with pytest.raises(ConfigError, match="config.teacher.checkpoint is empty"):
    distill_recipe.validate_fields(c)
  c.teacher.checkpoint = "/some/run"
  distill_recipe.validate_fields(c)
  for field, value, match in [("temperature", 0.0, "config.distill.temperature=0.0"),
                              ("kd_weight", 1.5, "config.distill.kd_weight=1.5")]:
    bad = distill_recipe.default_config("tiny")
    bad.teacher.checkpoint, bad.distill[field] = "/some/run", value
    with pytest.raises(ConfigError, match=match):
      distill_recipe.validate_fields(bad)
  c.data.tokenizer = "other.json"
  with pytest.raises(ConfigError, match="config.data.tokenizer='other.json'"):
    distill_recipe.validate_fields(c)
