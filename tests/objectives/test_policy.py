"""RL objective: advantage estimators, KL estimators and aggregation modes against values worked
out by hand; the clipped loss reduces to REINFORCE at ratio 1; a toy bandit learns its answer."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxllm.models import Transformer, get_size
from jaxllm.models.params import unbox
from jaxllm.models.reward import PolicyWithValue, params_from_lm
from jaxllm.objectives import policy
from jaxllm.train import step as step_lib

CFG = dataclasses.replace(get_size("tiny"), vocab_size=64)


def test_group_advantages_by_hand():
  rewards = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]
  # Group 1: mean 0.5, sample std sqrt((4 * 0.25) / 3) = 0.57735.
  grpo = policy.group_advantages(rewards, 4, "grpo", eps=0.0 + 1e-12)
  np.testing.assert_allclose(grpo[:4], [0.8660254, -0.8660254, -0.8660254, 0.8660254], rtol=1e-6)
  np.testing.assert_array_equal(grpo[4:], 0.0)  # equal rewards: no signal
  np.testing.assert_allclose(policy.group_advantages(rewards, 4, "dr_grpo"),
                             [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
  # RLOO: r_i minus the mean of the other three: 1 - 1/3, 0 - 2/3.
  np.testing.assert_allclose(policy.group_advantages(rewards, 4, "rloo"),
                             [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0], rtol=1e-6)
  np.testing.assert_array_equal(policy.uniform_groups(rewards, 4), [False, True])
  with pytest.raises(ValueError, match="groups of 3"):
    policy.group_advantages(rewards, 3)


def test_gae_by_hand_on_a_padded_row():
  # Row: [prompt, c0, c1, c2, pad]; reward 1 on the last completion token.
  mask = jnp.array([[0.0, 1, 1, 1, 0]])
  rewards = jnp.array([[0.0, 0, 0, 1, 0]])
  values = jnp.array([[9.0, 0.5, 0.6, 0.7, 9.0]])  # outside the mask values are ignored
  adv, ret = policy.gae(rewards, values, mask, gamma=1.0, lam=0.5)
  # deltas: 0 + 0.6 - 0.5 = 0.1, 0 + 0.7 - 0.6 = 0.1, 1 + 0 - 0.7 = 0.3
  # A2 = 0.3, A1 = 0.1 + 0.5 * 0.3 = 0.25, A0 = 0.1 + 0.5 * 0.25 = 0.225
  np.testing.assert_allclose(adv, [[0, 0.225, 0.25, 0.3, 0]], atol=1e-6)
  np.testing.assert_allclose(ret, [[0, 0.725, 0.85, 1.0, 0]], atol=1e-6)
  adv, _ = policy.gae(rewards, values, mask, gamma=0.5, lam=1.0)
  # deltas with gamma 0.5: 0.3 - 0.5 = -0.2, 0.35 - 0.6 = -0.25, 0.3; A2 = 0.3,
  # A1 = -0.25 + 0.5 * 0.3 = -0.1, A0 = -0.2 + 0.5 * -0.1 = -0.25
  np.testing.assert_allclose(adv, [[0, -0.25, -0.1, 0.3, 0]], atol=1e-6)
  white = policy.whiten(jnp.array([[0.0, 1, 2, 3, 5]]), mask)
  np.testing.assert_allclose(white, [[0, -1.2247449, 0, 1.2247449, 0]], rtol=1e-5)


def test_kl_estimators_by_hand():
  logp, ref = jnp.array([-1.0, -0.5]), jnp.array([-2.0, -0.5])
  # d = ref - logp = -1 and 0.
  np.testing.assert_allclose(policy.kl_estimate(logp, ref, "k1"), [1.0, 0.0])
  np.testing.assert_allclose(policy.kl_estimate(logp, ref, "k2"), [0.5, 0.0])
  np.testing.assert_allclose(policy.kl_estimate(logp, ref, "k3"), [np.exp(-1.0), 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match="k4"):
    policy.kl_estimate(logp, ref, "k4")


def test_aggregations_by_hand():
  x = jnp.array([[1.0, 2, 3, 7], [4, 7, 7, 7], [7, 7, 7, 7]])
  mask = jnp.array([[1.0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  assert [float(v) for v in policy.aggregate(x, mask, "token_mean")] == [10.0, 4.0]
  # Row means 2 and 4; the empty row is not a unit.
  assert [float(v) for v in policy.aggregate(x, mask, "seq_mean_token_mean")] == [6.0, 2.0]
  assert [float(v) for v in policy.aggregate(x, mask, "seq_mean_token_sum_norm", 4.0)] == [2.5, 2.0]


def test_clipped_surrogate_by_hand():
  logp = jnp.log(jnp.array([1.5, 0.5, 5.0, 1.1]))
  old = jnp.zeros(4)
  adv = jnp.array([1.0, -1.0, -1.0, 1.0])
  loss, ind = policy.clipped_surrogate(logp, old, adv, clip_low=0.2, clip_high=0.28)
  # ratio 1.5, A 1: max(-1.5, -1.28) = -1.28 (clipped high); ratio 0.5, A -1: max(0.5, 0.8) =
  # 0.8 (clipped low); ratio 5, A -1: max(5, 1.28) = 5 (unclipped); ratio 1.1: inside.
  np.testing.assert_allclose(loss, [-1.28, 0.8, 5.0, -1.1], rtol=1e-6)
  np.testing.assert_array_equal(ind["clip_high_fraction"], [1, 0, 0, 0])
  np.testing.assert_array_equal(ind["clip_low_fraction"], [0, 1, 0, 0])
  loss, ind = policy.clipped_surrogate(logp, old, adv, 0.2, 0.28, dual_clip=3.0)
  np.testing.assert_allclose(loss, [-1.28, 0.8, 3.0, -1.1], rtol=1e-6)  # capped at -c A = 3
  np.testing.assert_array_equal(ind["dual_clip_fraction"], [0, 0, 1, 0])


def test_value_loss_clipping_by_hand():
  values, old, returns = jnp.array([1.0, 0.0]), jnp.array([0.5, 0.0]), jnp.array([0.0, 1.0])
  plain, _ = policy.value_loss(values, old, returns)
  np.testing.assert_allclose(plain, [0.5, 0.5])
  # First: V moved 0.5 from 0.5, clipped to 0.7: max(1, 0.49) / 2. Second: not moved.
  clipped, taken = policy.value_loss(values, old, returns, clip=0.2)
  np.testing.assert_allclose(clipped, [0.5, 0.5])
  values = jnp.array([0.0, 0.0])
  old = jnp.array([0.5, 0.0])
  returns = jnp.array([1.0, 1.0])
  clipped, taken = policy.value_loss(values, old, returns, clip=0.2)
  # V 0 from 0.5 clipped to 0.3: max(1, 0.49) -> 0.5, the unclipped; a V further from R than
  # the clipped one is not rewarded.
  np.testing.assert_allclose(clipped, [0.5, 0.5])
  values = jnp.array([0.9])
  clipped, taken = policy.value_loss(values, jnp.array([0.0]), jnp.array([1.0]), clip=0.2)
  np.testing.assert_allclose(clipped, [0.5 * 0.8 ** 2], rtol=1e-6)  # V clipped to 0.2
  np.testing.assert_array_equal(taken, [1.0])


def _rollout_batch(seed=0, rows=6, length=10):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, CFG.vocab_size, (rows, length)).astype(np.int32)
  valid = np.ones((rows, length), np.int32)
  valid[1, 8:] = 0
  mask = np.zeros((rows, length), np.float32)
  mask[:, 4:] = 1.0
  mask *= valid
  adv = rng.normal(size=(rows, 1)).astype(np.float32) * mask
  return {"tokens": tokens, "valid": valid, "loss_mask": mask, "advantages": adv}


@pytest.mark.slow
def test_one_epoch_without_clipping_is_reinforce():
  model = Transformer(CFG)
  params = unbox(model.init(jax.random.key(0), jnp.zeros((1, 10), jnp.int32))["params"])
  batch = _rollout_batch()
  batch["old_logps"], _ = policy.rollout_logps(params, batch, model, temperature=0.7)

  def reinforce(p):
    logp, _ = policy.rollout_logps(p, batch, model, temperature=0.7)
    return -jnp.sum(batch["advantages"] * logp * batch["loss_mask"]) / batch["loss_mask"].sum()

  def ours(p):
    loss, m = policy.policy_loss(p, batch, None, model, temperature=0.7, clip_low=0.2,
                                 clip_high=0.28)
    return loss / m["weight"]

  ours_grads, want = jax.jit(jax.grad(ours))(params), jax.jit(jax.grad(reinforce))(params)
  for a, b in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want)) > 1e-4
  _, m = policy.policy_loss(params, batch, None, model, temperature=0.7)
  assert float(m["clip_fraction"]) == 0.0 and float(m["ratio"]) == pytest.approx(float(m["weight"]))


def test_kl_term_needs_reference_log_probs_only_when_weighted():
  model = Transformer(CFG)
  params = unbox(model.init(jax.random.key(0), jnp.zeros((1, 10), jnp.int32))["params"])
  batch = _rollout_batch()
  batch["old_logps"], _ = policy.rollout_logps(params, batch, model)
  loss0, m0 = policy.policy_loss(params, batch, None, model)  # no ref_logps in the batch
  assert "kl" not in m0
  batch["ref_logps"] = batch["old_logps"] - 0.1  # pi above ref by 0.1 nats per token
  loss1, m1 = policy.policy_loss(params, batch, None, model, kl_coef=0.5, kl_estimator="k1")
  np.testing.assert_allclose(m1["kl"] / m1["weight"], 0.1, rtol=1e-5)
  np.testing.assert_allclose(loss1 - loss0, 0.5 * m1["kl"], rtol=1e-5)


def test_policy_with_value_shares_the_lm_and_aligns_values():
  lm = Transformer(CFG)
  lm_params = unbox(lm.init(jax.random.key(0), jnp.zeros((1, 10), jnp.int32))["params"])
  params = params_from_lm(lm_params, CFG, jax.random.key(1), keep_lm_head=True)
  batch = _rollout_batch()
  logits, values = policy.forward(params, batch, PolicyWithValue(CFG))
  logits_lm, _ = policy.forward(lm_params, batch, lm)
  np.testing.assert_allclose(logits, logits_lm, rtol=1e-6, atol=1e-6)
  assert values.shape == batch["tokens"].shape and np.all(values[:, 0] == 0)
  # values[:, t] reads the hidden state at t - 1: changing token 5 leaves values[:, :6] alone.
  changed = dict(batch, tokens=batch["tokens"].copy())
  changed["tokens"][:, 5] = (changed["tokens"][:, 5] + 1) % CFG.vocab_size
  _, values2 = policy.forward(params, changed, PolicyWithValue(CFG))
  np.testing.assert_allclose(values2[:, :6], values[:, :6], atol=1e-6)
  assert np.abs(values2[:, 6:] - values[:, 6:]).max() > 1e-6


@pytest.mark.slow
def test_toy_bandit_converges_to_the_rewarded_answer(estimator="grpo"):
  """One prompt, one-token answers, reward 1 for token 7 only: sampling, group advantages and
  the clipped objective in the compiled step raise p(7) from 1/64 to most of the mass."""
  model = Transformer(dataclasses.replace(CFG, num_layers=1))
  prompt = jnp.array([[1, 2, 3]], jnp.int32)
  params = unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  tx = optax.adam(3e-2)
  state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
           "nonfinite_streak": jnp.int32(0), "nonfinite_total": jnp.int32(0)}
  loss_fn = functools.partial(policy.policy_loss, clip_low=0.2, clip_high=0.28)
  step = jax.jit(step_lib.make_train_step(loss_fn, model, tx, epochs=2, minibatches=2))
  group = 16

  @jax.jit
  def sample(params, key):
    logits = model.apply({"params": params}, prompt)[0, -1]
    return jax.random.categorical(key, logits, shape=(group,)), jax.nn.softmax(logits)[7]

  p7 = []
  for it in range(40):
    answers, prob = sample(state["params"], jax.random.key(it))
    p7.append(float(prob))
    rewards = np.asarray(answers == 7, np.float32)
    adv = policy.group_advantages(rewards, group, estimator)
    tokens = jnp.concatenate([jnp.repeat(prompt, group, 0), answers[:, None]], axis=1)
    mask = jnp.zeros(tokens.shape).at[:, -1].set(1.0)
    batch = {"tokens": tokens, "valid": jnp.ones_like(tokens), "loss_mask": mask,
             "advantages": adv[:, None] * mask}
    batch["old_logps"], _ = policy.rollout_logps(state["params"], batch, model)
    state, metrics = step(state, batch, jax.random.key(100 + it))
  assert p7[0] < 0.05 and p7[-1] > 0.8, p7[::5]
  assert int(state["step"]) == 40
