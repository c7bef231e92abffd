"""Preference and reward losses: golden values computed by hand (math on scalars), DPO at
policy == reference, gradient directions, sequence log-probs over response tokens only."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.objectives import preference, reward

# One pair: policy log-probs pc, pr; reference rc, rr.
PC, PR, RC, RR = -4.0, -6.0, -4.5, -5.0


def _logsig(x):
  return -math.log1p(math.exp(-x))


def _arrays(*xs):
  return [jnp.array([x], jnp.float32) for x in xs]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_dpo_and_conservative_dpo_golden(beta, eps):
  h = (PC - RC) - (PR - RR)  # 0.5 - (-1.0) = 1.5
  want = -(1 - eps) * _logsig(beta * h) - eps * _logsig(-beta * h)
  losses, m = preference.dpo_loss(*_arrays(PC, PR, RC, RR), beta=beta, label_smoothing=eps)
  np.testing.assert_allclose(losses[0], want, rtol=1e-6)
  np.testing.assert_allclose(m["rewards/chosen"][0], beta * 0.5, rtol=1e-6)
  np.testing.assert_allclose(m["rewards/rejected"][0], beta * -1.0, rtol=1e-6)
  np.testing.assert_allclose(m["rewards/margins"][0], beta * 1.5, rtol=1e-6)
  assert m["rewards/accuracies"][0] == 1.0
  assert m["logps/chosen"][0] == PC and m["logps/rejected"][0] == PR


def test_label_smoothing_one_half_is_flat_in_the_margin():
  # eps = 0.5 weighs both labels equally: the loss no longer prefers either response.
  a, _ = preference.dpo_loss(*_arrays(PC, PR, RC, RR), beta=1.0, label_smoothing=0.5)
  b, _ = preference.dpo_loss(*_arrays(PR, PC, RR, RC), beta=1.0, label_smoothing=0.5)
  np.testing.assert_allclose(a, b, rtol=1e-6)  # swapping chosen and rejected changes nothing


def test_dpo_with_policy_equal_to_reference_is_log2_with_zero_margins():
  pc, pr = jnp.array([-3.0, -10.0, -0.5]), jnp.array([-7.0, -1.0, -0.5])
  losses, m = preference.dpo_loss(pc, pr, pc, pr, beta=0.1)
  np.testing.assert_allclose(losses, math.log(2), rtol=1e-6)
  np.testing.assert_array_equal(m["rewards/margins"], 0.0)
  np.testing.assert_array_equal(m["rewards/accuracies"], 0.0)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_ipo_golden(beta):
  h = (PC - RC) - (PR - RR)
  losses, _ = preference.ipo_loss(*_arrays(PC, PR, RC, RR), beta=beta)
  np.testing.assert_allclose(losses[0], (h - 1 / (2 * beta)) ** 2, rtol=1e-6)


@pytest.mark.parametrize("beta,gamma,eps", [(2.0, 0.5, 0.0), (2.5, 1.4, 0.0), (2.0, 0.5, 0.2)])
def test_simpo_golden(beta, gamma, eps):
  pc, pr = -0.8, -1.3  # length-averaged log-probs
  z = beta * (pc - pr) - gamma
  losses, m = preference.simpo_loss(*_arrays(pc, pr), beta=beta, gamma=gamma,
                                    label_smoothing=eps)
  np.testing.assert_allclose(losses[0], -(1 - eps) * _logsig(z) - eps * _logsig(-z), rtol=1e-6)
  np.testing.assert_allclose(m["rewards/chosen"][0], beta * pc, rtol=1e-6)


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_golden(lam):
  pc, pr, nll = -0.4, -1.2, 0.4
  odds = lambda p: p - math.log(1 - math.exp(p))
  log_odds = odds(pc) - odds(pr)
  losses, m = preference.orpo_loss(*_arrays(pc, pr, nll), lam=lam)
  np.testing.assert_allclose(losses[0], nll - lam * _logsig(log_odds), rtol=1e-6)
  np.testing.assert_allclose(m["log_odds_chosen"][0], log_odds, rtol=1e-6)  # TRL's names
  np.testing.assert_allclose(m["log_odds_ratio"][0], _logsig(log_odds), rtol=1e-6)
  np.testing.assert_allclose(m["nll_loss"][0], nll, rtol=1e-6)


@pytest.mark.parametrize("beta,lam", [(0.1, 50.0), (0.5, 2.0)])
def test_dpop_golden(beta, lam):
  # The chosen log-prob fell 0.5 below the reference's: the penalty lam * 0.5 applies.
  losses, m = preference.dpop_loss(*_arrays(PC - 1.0, PR, RC, RR), beta=beta, lam=lam)
  h = ((PC - 1.0) - RC) - (PR - RR)
  assert float(losses[0]) == pytest.approx(-_logsig(beta * (h - lam * 0.5)), rel=1e-6)
  assert float(m["dpop/shortfall"][0]) == pytest.approx(0.5)
  # With the chosen log-prob above the reference's there is no penalty: DPOP is DPO.
  up, _ = preference.dpop_loss(*_arrays(PC, PR, RC, RR), beta=beta, lam=lam)
  dpo, _ = preference.dpo_loss(*_arrays(PC, PR, RC, RR), beta=beta)
  assert float(up[0]) == pytest.approx(float(dpo[0]), rel=1e-6)


def test_dpop_stops_the_chosen_log_prob_falling_with_the_rejected():
  # Lowering both log-probs by the same amount leaves DPO's loss unchanged; DPOP's grows.
  rc, rr = jnp.array([-4.0]), jnp.array([-5.0])
  for loss_fn, flat in ((lambda d: preference.dpo_loss(rc + d, rr + d, rc, rr)[0], True),
                        (lambda d: preference.dpop_loss(rc + d, rr + d, rc, rr)[0], False)):
    grad = jax.grad(lambda d, f=loss_fn: f(d).sum())(jnp.array([-0.5]))
    assert (abs(float(grad[0])) < 1e-7) == flat


@pytest.mark.parametrize("name", ["dpo", "cdpo", "dpop", "ipo", "simpo", "orpo"])
def test_gradients_push_chosen_up_and_rejected_down(name):
  rc, rr = jnp.array([-4.0]), jnp.array([-4.0])
  fns = {
      "dpo": lambda pc, pr: preference.dpo_loss(pc, pr, rc, rr)[0],
      "cdpo": lambda pc, pr: preference.dpo_loss(pc, pr, rc, rr, label_smoothing=0.1)[0],
      "dpop": lambda pc, pr: preference.dpop_loss(pc, pr, rc, rr)[0],
      "ipo": lambda pc, pr: preference.ipo_loss(pc, pr, rc, rr)[0],
      "simpo": lambda pc, pr: preference.simpo_loss(pc, pr)[0],
      "orpo": lambda pc, pr: preference.orpo_loss(pc, pr, -pc)[0],
  }
  g_c, g_r = jax.grad(lambda pc, pr: fns[name](pc, pr).sum(), argnums=(0, 1))(
      jnp.array([-0.9]), jnp.array([-0.9]))
  assert g_c[0] < 0 < g_r[0]  # descent raises log p(chosen) and lowers log p(rejected)


def test_sequence_logprobs_ignore_prompt_and_padding():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 6, 11)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, (2, 6)))
  mask = jnp.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], jnp.float32)  # prompt, reply, pad
  logp = jax.nn.log_softmax(logits)
  want = [sum(float(logp[b, t, targets[b, t]]) for t in range(6) if mask[b, t])
          for b in range(2)]
  np.testing.assert_allclose(preference.sequence_logprobs(logits, targets, mask), want,
                             rtol=1e-6)
  np.testing.assert_allclose(preference.sequence_logprobs(logits, targets, mask, average=True),
                             [want[0] / 3, want[1] / 2], rtol=1e-6)
  # Changing anything outside the mask changes nothing.
  other = logits.at[:, 0].set(0.0).at[0, 1].set(2.0).at[0, 5].set(9.0).at[1, 3:].set(-3.0)
  other_targets = targets.at[0, 0].set(3).at[1, 5].set(7)
  np.testing.assert_array_equal(preference.sequence_logprobs(other, other_targets, mask),
                                preference.sequence_logprobs(logits, targets, mask))


def test_bradley_terry_golden_with_margin_and_centering():
  rc, rr, margin, c = 1.5, 0.25, 0.5, 0.01
  losses, m = reward.bradley_terry_loss(*_arrays(rc, rr), margin=jnp.array([margin]),
                                        center_coefficient=c)
  np.testing.assert_allclose(losses[0], -_logsig(rc - rr - margin) + c * (rc + rr) ** 2,
                             rtol=1e-6)
  assert m["accuracy"][0] == 1.0 and abs(float(m["margin"][0]) - 1.25) < 1e-6
  plain, _ = reward.bradley_terry_loss(*_arrays(rc, rr))
  np.testing.assert_allclose(plain[0], math.log1p(math.exp(-(rc - rr))), rtol=1e-6)
