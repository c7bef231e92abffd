"""Rollout batches: rows, loss masks (truncated completions, uniform groups), group and GAE
advantages, per-token rewards with the KL penalty, against values worked out by hand with a
scripted sampler; and a toy bandit learns through the real sampler (policy gradient and PPO)."""

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from jaxllm.data import chat
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.errors import ConfigError
from jaxllm.inference.sampler import SampleOutput, Sampler
from jaxllm.models import Transformer, get_size
from jaxllm.models.params import unbox
from jaxllm.models.reward import PolicyWithValue, params_from_lm
from jaxllm.objectives import policy
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.rl import rewards as rewards_lib
from jaxllm.rl import rollout
from jaxllm.train import step as step_lib

TOK = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)  # one token per byte
STOP = chat.stop_ids(TOK)[0]
Y, Z = TOK.encode("y")[0], TOK.encode("z")[0]
MESH = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), mesh_lib.MESH_AXES)
# Reward: how many "y" the reply holds (its decoded text, the stop token removed).
COUNT_Y = rewards_lib.Rewards(
    {"ys": lambda records, replies: np.array([r.count("y") for r in replies], np.float32)},
    {"ys": 1.0})


def _prompt_ids(text: str) -> list[int]:
  return rollout.encode_prompts(TOK, [{"prompt": text}], 10**6)[1][0]


def _completion_ids(reply: str) -> list[int]:
  """A scripted reply "yz." ends with the stop token; "yz" was cut off by max_new_tokens."""
  return TOK.encode(reply[:-1]) + [STOP] if reply.endswith(".") else TOK.encode(reply)


class ScriptedSampler:
  """Stands in for inference.sampler.Sampler: within a call, the g-th copy of a prompt gets the
  g-th reply scripted for it. Records each call's row prompts and replies."""

  def __init__(self, script: dict[str, list[str]]):
    self.script, self.params, self.calls = script, None, []
    self.by_ids = {tuple(_prompt_ids(text)): text for text in script}

  def generate(self, prompts, max_new_tokens, *, temperature, stop_tokens, seed):
    texts = [self.by_ids[tuple(p)] for p in prompts]
    seen = collections.Counter()
    replies = []
    for text in texts:
      replies.append(self.script[text][seen[text]])
      seen[text] += 1
    completions = [_completion_ids(r) for r in replies]
    stopped = np.array([r.endswith(".") for r in replies])
    for c, s in zip(completions, stopped):
      assert len(c) <= max_new_tokens and (s or len(c) == max_new_tokens), (c, max_new_tokens)
    tokens = np.full((len(prompts), max_new_tokens), TOK.pad_id, np.int32)
    logprobs = np.zeros(tokens.shape, np.float32)
    for i, c in enumerate(completions):
      tokens[i, :len(c)] = c
      logprobs[i, :len(c)] = -1.0
    self.calls.append({"texts": texts, "replies": replies, "params": self.params, "seed": seed,
                       "stop_tokens": list(stop_tokens), "temperature": temperature})
    return SampleOutput(tokens=tokens, lengths=np.array([len(c) for c in completions], np.int32),
                        logprobs=logprobs, raw_logprobs=logprobs, stopped=stopped)


def _scripted_logps(params, frozen, batch, values=None):
  """The trainer's log-probs: -1 on every real token after the first; values a constant."""
  valid = np.asarray(batch["valid"], np.float32)
  logp = -1.0 * valid
  logp[:, 0] = 0.0
  return logp, None if values is None else values * valid


def _scripted_ref_logps(frozen, batch):
  """The reference's: 0.4 below the policy on "y" tokens, 0.2 above it on "z" tokens."""
  tokens = np.asarray(batch["tokens"])
  logp, _ = _scripted_logps(None, None, batch)
  return logp - 0.4 * (tokens == Y) + 0.2 * (tokens == Z), None


def _source(script, values=None, **settings):
  """(RolloutSource over the scripted prompts, its ScriptedSampler); every prompt in one batch."""
  kwargs = dict(prompts_per_batch=len(script), group_size=len(next(iter(script.values()))),
                seq_len=32, max_new_tokens=4)
  sampler = ScriptedSampler(script)
  source = rollout.RolloutSource(
      rollout.RolloutSettings(**{**kwargs, **settings}), TOK, [{"prompt": p} for p in script],
      COUNT_Y, sampler, to_lm=lambda params, frozen: ("lm of", params),
      logps_fn=functools.partial(_scripted_logps, values=values),
      ref_logps_fn=_scripted_ref_logps, mesh=MESH, chunk_rows=2)
  return source, sampler


def _per_token(sampler, values_of) -> np.ndarray:
  """[N, 32] with row i's values (one per completion token) at its completion positions;
  values_of maps the row's reply, or is a function of (prompt, reply), to them."""
  call = sampler.calls[-1]
  out = np.zeros((len(call["texts"]), 32), np.float32)
  for i, (text, reply) in enumerate(zip(call["texts"], call["replies"])):
    start = len(_prompt_ids(text))
    values = values_of(text, reply) if callable(values_of) else values_of[reply]
    assert len(values) == len(_completion_ids(reply))
    out[i, start:start + len(values)] = values
  return out


def test_build_rows_by_hand():
  rows = rollout.build_rows([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], seq_len=6, pad_id=2)
  np.testing.assert_array_equal(rows["tokens"], [[5, 6, 7, 9, 10, 2], [8, 11, 12, 13, 2, 2]])
  np.testing.assert_array_equal(rows["valid"], [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(rows["completion"], [[0, 0, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0]])
  full = rollout.build_rows([[5, 6]], [[7, 8]], seq_len=4, pad_id=0)  # exactly seq_len fits
  np.testing.assert_array_equal(full["completion"], [[0, 0, 1, 1]])
  with pytest.raises(ValueError, match="row 0: 2 prompt \\+ 3 completion tokens exceed"):
    rollout.build_rows([[5, 6]], [[7, 8, 9]], seq_len=4, pad_id=0)


def test_batch_rows_hold_prompt_then_completion_with_loss_on_the_completion():
  source, sampler = _source({"q": ["y.", "zz.", "yyz."], "qq": ["z.", "yz.", "y."]})
  batch = source.next_for("policy params")
  call = sampler.calls[0]
  assert call["params"] == ("lm of", "policy params")
  assert call["stop_tokens"] == chat.stop_ids(TOK) == [STOP, TOK.eos_id]
  assert sorted(call["texts"]) == ["q"] * 3 + ["qq"] * 3
  assert len(set(call["texts"][:3])) == 1  # rows are grouped prompt by prompt
  assert batch["tokens"].shape == (6, 32) and batch["tokens"].dtype == np.int32
  for i, (text, reply) in enumerate(zip(call["texts"], call["replies"])):
    prompt, completion = _prompt_ids(text), _completion_ids(reply)
    end = len(prompt) + len(completion)
    np.testing.assert_array_equal(batch["tokens"][i, :end], prompt + completion)
    assert np.all(batch["tokens"][i, end:] == TOK.pad_id)
    np.testing.assert_array_equal(batch["valid"][i], np.arange(32) < end)
    np.testing.assert_array_equal(batch["loss_mask"][i],
                                  (np.arange(32) >= len(prompt)) & (np.arange(32) < end))
  np.testing.assert_array_equal(batch["old_logps"], _scripted_logps(None, None, batch)[0])
  assert "ref_logps" not in batch and "returns" not in batch
  m = source.last_metrics
  assert m["rollout/reward_mean"] == pytest.approx(5 / 6) and m["rollout/samples"] == 6
  assert m["rollout/truncated_fraction"] == 0.0 and m["rollout/dropped_groups"] == 0.0


def test_sequence_reward_goes_on_the_last_completion_token():
  completion = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
  out = rollout.sequence_rewards_to_tokens(np.array([2.0, 3.0, 5.0, 7.0]), completion)
  np.testing.assert_array_equal(out, [[0, 0, 0, 2, 0], [0, 0, 3, 0, 0], [0] * 5, [0, 7, 0, 0, 0]])


def test_gae_returns_discount_the_reward_from_the_last_completion_token():
  # Values 0.25 everywhere, gamma 0.5, lambda 1: returns are the reward discounted from the last
  # token, R * 0.5^(last - t), and advantages the returns minus 0.25.
  source, sampler = _source({"q": ["yy.", "z."], "qq": ["y.", "yyy"]}, values=0.25,
                            advantage="gae", gamma=0.5, gae_lambda=1.0, whiten_advantages=False,
                            max_new_tokens=3)
  batch = source.next_for(None)
  returns = {"yy.": [0.5, 1.0, 2.0], "z.": [0.0, 0.0], "y.": [0.5, 1.0], "yyy": [0.75, 1.5, 3.0]}
  want = _per_token(sampler, returns)
  np.testing.assert_allclose(batch["returns"], want, atol=1e-6)
  advantages = {k: [v - 0.25 for v in r] for k, r in returns.items()}
  np.testing.assert_allclose(batch["advantages"], _per_token(sampler, advantages), atol=1e-6)
  np.testing.assert_allclose(batch["old_values"], 0.25 * batch["valid"])
  # "yyy" was cut off: its advantages stay in the batch, its loss does not.
  np.testing.assert_array_equal(batch["loss_mask"], _per_token(
      sampler, {"yy.": [1] * 3, "z.": [1] * 2, "y.": [1] * 2, "yyy": [0] * 3}))


def test_gae_whitens_advantages_over_the_loss_mask():
  source, _ = _source({"q": ["yy.", "z.", "y.", "yyz"]}, values=0.25, advantage="gae",
                      max_new_tokens=3)
  batch = source.next_for(None)
  mask = batch["loss_mask"]
  assert mask.sum() == 7  # "yyz" was cut off
  adv = batch["advantages"]
  assert np.all(adv[mask == 0] == 0.0)
  assert abs(adv[mask > 0].mean()) < 1e-5 and adv[mask > 0].std() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("mask_truncated", [True, False])
def test_truncated_completions_get_no_loss_only_with_mask_truncated(mask_truncated):
  source, sampler = _source({"q": ["yyy", "y.", "zzz"]}, mask_truncated=mask_truncated,
                            max_new_tokens=3)
  batch = source.next_for(None)
  loss = {"yyy": [0.0] * 3, "y.": [1.0] * 2, "zzz": [0.0] * 3}
  if not mask_truncated:
    loss = {k: [1.0] * len(v) for k, v in loss.items()}
  np.testing.assert_array_equal(batch["loss_mask"], _per_token(sampler, loss))
  assert source.last_metrics["rollout/truncated_fraction"] == pytest.approx(2 / 3)
  assert batch["valid"].sum() == 3 * len(_prompt_ids("q")) + 8  # cut-off rows keep their tokens


@pytest.mark.parametrize("drop", [True, False])
def test_uniform_groups_get_no_loss_and_are_counted(drop):
  # "a": rewards 1, 1 (uniform); "b": 1, 0; "c": 0, 0 (uniform).
  script = {"a": ["y.", "zy."], "b": ["y.", "z."], "c": ["z.", "zz."]}
  source, sampler = _source(script, drop_uniform_groups=drop)
  batch = source.next_for(None)
  loss = _per_token(sampler, lambda text, reply: [float(text == "b" or not drop)] * len(
      _completion_ids(reply)))
  np.testing.assert_array_equal(batch["loss_mask"], loss)
  m = source.last_metrics
  assert m["rollout/uniform_groups"] == pytest.approx(2 / 3)
  assert m["rollout/dropped_groups"] == pytest.approx(2 / 3 if drop else 0.0)


def test_signal_first_keeps_whole_groups_with_signal_before_uniform_ones():
  # groups of 2: [1, 1] uniform, [1, 0], [0, 0] uniform, [0, 2], [3, 3] uniform
  total = np.array([1, 1, 1, 0, 0, 0, 0, 2, 3, 3], np.float32)
  np.testing.assert_array_equal(rollout.signal_first(total, 2, 2), [2, 3, 6, 7])
  np.testing.assert_array_equal(rollout.signal_first(total, 2, 3), [2, 3, 6, 7, 0, 1])


def test_oversampling_refills_the_batch_with_groups_that_carry_signal():
  # Two prompts per batch, sampled twice over: "a" and "c" are uniform, "b" and "d" are not.
  script = {"a": ["y.", "zy."], "b": ["y.", "z."], "c": ["z.", "zz."], "d": ["yy.", "z."]}
  source, sampler = _source(script, prompts_per_batch=2, oversample=2)
  batch = source.next_for(None)
  call = sampler.calls[-1]
  assert len(call["texts"]) == 8  # every prompt sampled, two completions each
  kept = [text for text in call["texts"] if text in ("b", "d")]
  assert len(batch["tokens"]) == 4 and len(kept) == 4
  assert batch["loss_mask"].sum(axis=1).min() > 0  # every kept row trains
  # the kept rows are b's and d's, in sampled order: the prompt tokens say so
  prompts = [tuple(row[:len(_prompt_ids("b"))]) for row in batch["tokens"]]
  order = [t for t in call["texts"] if t in ("b", "d")]
  assert prompts == [tuple(_prompt_ids(t)) for t in order]
  m = source.last_metrics
  assert m["rollout/signal_groups"] == pytest.approx(0.5)
  assert m["rollout/dropped_groups"] == 0.0
  assert m["rollout/samples"] == 8.0  # reward metrics describe every sampled completion
  assert m["rollout/reward_mean"] == pytest.approx(np.mean([1, 1, 1, 0, 0, 0, 2, 0]))
  with pytest.raises(ConfigError, match="oversample"):
    _source(script, oversample=2, advantage="gae")


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "dr_grpo"])
def test_group_advantages_by_hand_on_completion_tokens_only(estimator):
  # "q" rewards 1, 0, 0, 2: mean 0.75, deviations 0.25, -0.75, -0.75, 1.25, sample std
  # sqrt(2.75 / 3). "qq" rewards 0, 1, 1, 1: deviations -0.75, 0.25, 0.25, 0.25, sample std 0.5.
  script = {"q": ["y.", "z.", "zz.", "yy."], "qq": ["z.", "y.", "zy.", "yz."]}
  deviations = {"q": [0.25, -0.75, -0.75, 1.25], "qq": [-0.75, 0.25, 0.25, 0.25]}
  scale = {"grpo": {"q": 1 / (np.sqrt(2.75 / 3) + 1e-4), "qq": 1 / (0.5 + 1e-4)},
           "rloo": {"q": 4 / 3, "qq": 4 / 3}, "dr_grpo": {"q": 1.0, "qq": 1.0}}[estimator]
  source, sampler = _source(script, advantage=estimator)
  batch = source.next_for(None)
  want = {}
  for text, replies in script.items():
    for reply, d in zip(replies, deviations[text]):
      want[(text, reply)] = d * scale[text]
  expected = _per_token(sampler, lambda text, reply: [want[(text, reply)]] * len(
      _completion_ids(reply)))
  np.testing.assert_allclose(batch["advantages"], expected, rtol=1e-5)
  np.testing.assert_array_equal(batch["advantages"] != 0, batch["loss_mask"] > 0)


@pytest.mark.parametrize("kl_in_reward", [True, False])
def test_kl_penalty_enters_the_per_token_reward_with_gae(kl_in_reward):
  # logp - ref = 0.4 on "y" and -0.2 on "z" tokens, kl_coef 0.5: per-token rewards -0.2 and
  # +0.1, plus the reward ("y" count) on the stop token. gamma = lambda = 1, values 0: returns
  # are the sums of the rewards from each token on.
  source, sampler = _source({"q": ["yz.", "zz."]}, values=0.0, advantage="gae", gamma=1.0,
                            gae_lambda=1.0, whiten_advantages=False, kl_coef=0.5,
                            kl_in_reward=kl_in_reward)
  batch = source.next_for(None)
  if kl_in_reward:  # rewards -0.2, 0.1, 1 and 0.1, 0.1, 0
    returns = {"yz.": [0.9, 1.1, 1.0], "zz.": [0.2, 0.1, 0.0]}
    assert "ref_logps" not in batch  # in the reward, not in the loss
  else:
    returns = {"yz.": [1.0, 1.0, 1.0], "zz.": [0.0, 0.0, 0.0]}
    np.testing.assert_allclose(batch["ref_logps"], _scripted_ref_logps(None, batch)[0])
  np.testing.assert_allclose(batch["returns"], _per_token(sampler, returns), atol=1e-6)
  np.testing.assert_allclose(batch["advantages"], batch["returns"], atol=1e-6)
  # k3 of d = ref - logp: exp(-0.4) + 0.4 - 1 on "y", exp(0.2) - 0.2 - 1 on "z", 0 on the stop.
  k3_y, k3_z = np.exp(-0.4) + 0.4 - 1, np.exp(0.2) - 0.2 - 1
  assert source.last_metrics["rollout/kl_ref"] == pytest.approx((k3_y + 3 * k3_z) / 6, rel=1e-5)


# ---- the real sampler and model: a toy bandit ---------------------------------------------------

CFG = dataclasses.replace(get_size("tiny"), vocab_size=TOK.vocab_size, num_layers=1)
LR = 3e-2


def _first_is_lowercase(records, replies):
  """1 when the reply's first token is a lowercase letter (26 of the 263 ids)."""
  return np.array([r[:1].isascii() and r[:1].islower() for r in replies], np.float32)


def _bandit(iterations: int, ppo: bool):
  """Runs RolloutSource with the real Sampler on a tiny model; returns the per-iteration mean
  rewards and train-step metrics."""
  lm = Transformer(CFG)
  params = unbox(lm.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  model, to_lm = lm, lambda params, frozen: params
  if ppo:
    model, to_lm = PolicyWithValue(CFG), lambda params, frozen: params["backbone"]
    params = params_from_lm(params, CFG, jax.random.key(1), keep_lm_head=True)
  settings = rollout.RolloutSettings(
      prompts_per_batch=4, group_size=8, seq_len=32, max_new_tokens=2, mask_truncated=False,
      advantage="gae" if ppo else "grpo", seed=3)
  records = [{"prompt": p} for p in ("a", "bb", "c", "dd", "e")]
  rewards = rewards_lib.Rewards({"lower": _first_is_lowercase}, {"lower": 1.0})
  logps = jax.jit(lambda params, frozen, batch: policy.rollout_logps(params, batch, model))
  source = rollout.RolloutSource(settings, TOK, records, rewards,
                                 Sampler(lm, None, TOK.pad_id, vocab_limit=TOK.vocab_size), to_lm,
                                 logps, None, MESH, chunk_rows=32)
  tx = optax.adam(LR)
  state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
           "nonfinite_streak": jnp.int32(0), "nonfinite_total": jnp.int32(0)}
  loss_fn = functools.partial(policy.policy_loss, clip_low=0.2, clip_high=0.28,
                              value_coef=1.0 if ppo else 0.0)
  step = jax.jit(step_lib.make_train_step(loss_fn, model, tx, epochs=2, minibatches=2))
  mean_rewards, metrics = [], []
  for it in range(iterations):
    batch = source.next_for(state["params"])
    mean_rewards.append(source.last_metrics["rollout/reward_mean"])
    state, m = step(state, batch, jax.random.key(100 + it))
    metrics.append(jax.device_get(m))
  return np.array(mean_rewards), metrics


@pytest.mark.slow
def test_toy_bandit_learns_through_the_real_rollouts():
  """Reward 1 when the first reply token is a lowercase letter: GRPO on the real sampler's
  rollouts lifts the mean reward from about 26 / 263 to most of the samples."""
  rewards, _ = _bandit(10, ppo=False)
  assert rewards[:3].mean() < 0.25 and rewards[-3:].mean() > 0.6, rewards


@pytest.mark.slow
def test_ppo_value_loss_falls_on_the_toy_bandit():
  """PPO (GAE, value head): the value loss falls to near 0 as the values learn the returns, and
  the policy learns the bandit too."""
  rewards, metrics = _bandit(10, ppo=True)
  value_loss = np.array([float(m["value_loss"]) for m in metrics])
  assert value_loss[-3:].mean() < min(0.05, 0.1 * value_loss[:3].mean()), value_loss
  assert rewards[-3:].mean() > 0.6, rewards


@pytest.mark.parametrize("settings", [{}, {"kl_coef": 0.1}, {"advantage": "gae"},
                                      {"advantage": "gae", "kl_coef": 0.1, "kl_in_reward": True}])
def test_rollout_batches_have_the_row_layout_the_compiler_is_given(settings):
  """experiments/compile.py compiles the policy update for row_layout(settings)."""
  values = 0.5 if settings.get("advantage") == "gae" else None  # PPO's value head
  source, _ = _source({"q": ["y.", "zz."], "qq": ["z.", "yz."]}, values=values, **settings)
  batch = source.next_for("policy params")
  assert {k: (v.shape[1:], v.dtype) for k, v in batch.items()} == {
      k: (shape, np.dtype(dtype))
      for k, (shape, dtype) in rollout.row_layout(source.settings).items()}
