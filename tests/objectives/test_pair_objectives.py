"""The preference and reward objectives on batches of pair rows with a real model: DPO at
policy == reference is log 2 with zero margins (in-step, precomputed, LoRA), precomputed and
in-step references agree, SimPO and ORPO are their formulas on the policy's log-probs alone,
padding and prompt never count, a step moves chosen above rejected, padding pairs carry no
weight, and a reward model trained on pairs learns a pattern that holds on pairs it never saw."""

import dataclasses
import functools
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxllm.data import preferences
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.models import Transformer, get_size
from jaxllm.models import lora as lora_lib
from jaxllm.models import reward as reward_lib
from jaxllm.models.frozen import WithFrozen
from jaxllm.models.params import unbox
from jaxllm.objectives import preference, reward
from jaxllm.train import step as step_lib

CFG = dataclasses.replace(get_size("tiny"), vocab_size=len(SPECIAL_TOKENS) + 256)
PAIRS = [{"prompt": "What is 2 + 2?", "chosen": "The answer is 4.", "rejected": "5"},
         {"prompt": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Colour of the sky?"}],
          "chosen": "Blue.", "rejected": "The sky is green, I think."},
         {"prompt": "Say hi", "chosen": "hi", "rejected": "no", "margin": 1.0}]


@pytest.fixture(scope="module")
def tok():
  return train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)


@pytest.fixture(scope="module")
def params():
  init = jax.jit(Transformer(CFG).init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return unbox(init["params"])


def _batch(tok, pairs=PAIRS, seq_len=128, reference=None, pad_rows=0):
  rows = [preferences.pair_example(tok, seq_len, reference=reference)(p) for p in pairs]
  rows += [{k: np.zeros_like(v) for k, v in rows[0].items()}] * pad_rows
  return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}


def _loss(params, batch, model, **kw):
  loss, m = preference.preference_loss(params, batch, None, model, **kw)
  return float(loss / m["weight"]), {k: float(v / m["weight"]) for k, v in m.items()}


def _table(tok, params, pairs=PAIRS):
  rc, rr = preference.reference_logps(params, _batch(tok, pairs), Transformer(CFG))
  table = {}
  for p, c, r in zip(pairs, rc, rr):
    table[preferences.sequence_key(p["prompt"], p["chosen"])] = float(c)
    table[preferences.sequence_key(p["prompt"], p["rejected"])] = float(r)
  return table


def test_dpo_at_policy_equal_to_reference_is_log2_in_step_and_precomputed(tok, params):
  model = WithFrozen(Transformer(CFG)).with_frozen(params)
  loss, m = _loss(params, _batch(tok), model)
  assert loss == pytest.approx(math.log(2), abs=1e-6)
  assert m["rewards/margins"] == pytest.approx(0, abs=1e-6) and m["weight"] == 1.0
  pre, pre_m = _loss(params, _batch(tok, reference=_table(tok, params)), Transformer(CFG),
                     reference="precomputed")
  assert pre == pytest.approx(math.log(2), abs=1e-6)
  # Away from the reference the two give the same loss and metrics.
  moved = jax.tree.map(lambda x: x * 1.1, params)
  in_step = _loss(moved, _batch(tok), model, beta=0.5)
  precomputed = _loss(moved, _batch(tok, reference=_table(tok, params)), Transformer(CFG),
                      beta=0.5, reference="precomputed")
  assert in_step[0] == pytest.approx(precomputed[0], rel=1e-5)
  for k, v in in_step[1].items():
    assert precomputed[1][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def test_a_lora_policy_uses_its_base_as_the_reference(tok, params):
  lora = lora_lib.LoraConfig(rank=4, alpha=8)
  model = lora_lib.LoraModel(Transformer(CFG, lora=lora)).with_frozen(params)
  adapters = unbox(model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"])
  loss, _ = _loss(adapters, _batch(tok), model)  # b = 0: the policy is its base
  assert loss == pytest.approx(math.log(2), abs=1e-6)
  moved = jax.tree.map(lambda x: x + 0.05, adapters)
  merged = lora_lib.merge(params, moved, lora)
  want = _loss(merged, _batch(tok, reference=_table(tok, params)), Transformer(CFG),
               reference="precomputed")
  np.testing.assert_allclose(_loss(moved, _batch(tok), model)[0], want[0], rtol=1e-5)


def test_reference_free_losses_are_their_formulas_on_the_policy_logprobs_alone(tok, params):
  batch = _batch(tok)
  sums = np.asarray(preference.reference_logps(params, batch, Transformer(CFG)), np.float64)
  counts = np.stack([np.asarray(batch[f"{side}_loss_mask"])[:, 1:].sum(-1)
                     for side in ("chosen", "rejected")])
  pc, pr = sums / counts  # token-mean log-probs of each reply
  log_sigmoid = lambda x: -np.logaddexp(0.0, -x)
  log_odds = lambda p: p - np.log(-np.expm1(p))
  want = {"simpo": -log_sigmoid(2.0 * (pc - pr) - 0.5),  # beta 2, gamma 0.5
          "orpo": -pc - 2.0 * log_sigmoid(log_odds(pc) - log_odds(pr))}  # lambda = beta = 2
  for loss_type, losses in want.items():
    loss, m = _loss(params, batch, Transformer(CFG), loss_type=loss_type, beta=2.0)
    assert loss == pytest.approx(losses.mean(), rel=1e-5), loss_type
    assert m["rewards/accuracies"] == pytest.approx(np.mean(pc > pr)), loss_type
    assert m["logps/chosen"] == pytest.approx(pc.mean(), rel=1e-5), loss_type
  with pytest.raises(ValueError, match="frozen params"):
    _loss(params, _batch(tok), Transformer(CFG), loss_type="ipo")


def test_prompt_and_padding_never_count(tok, params):
  """Reply log-probs equal a forward pass over the unpadded sequence, summed over the reply."""
  batch = _batch(tok)
  assert not batch["truncated"].any()
  rc, rr = preference.reference_logps(params, batch, Transformer(CFG))
  # One forward pass over every sequence alone, right-padded: a causal model's logits at a
  # position do not depend on the padding after it.
  rows = [(preferences.render_reply(tok, pair["prompt"], pair[side]), got)
          for i, pair in enumerate(PAIRS) for side, got in (("chosen", rc[i]), ("rejected", rr[i]))]
  width = max(len(ids) for (ids, _), _ in rows)
  inputs = jnp.asarray([ids[:-1] + [0] * (width - len(ids)) for (ids, _), _ in rows])
  logp = jax.nn.log_softmax(jax.jit(Transformer(CFG).apply)({"params": params}, inputs))
  for r, ((ids, prompt_len), got) in enumerate(rows):
    want = sum(float(logp[r, t - 1, ids[t]]) for t in range(prompt_len, len(ids)))
    assert float(got) == pytest.approx(want, rel=1e-5)
  # Other padding ids and extra all-padding pairs change nothing.
  noisy = dict(batch, chosen_tokens=jnp.where(batch["chosen_valid"] > 0,
                                              batch["chosen_tokens"], 7))
  padded = _batch(tok, pad_rows=2)
  model = WithFrozen(Transformer(CFG)).with_frozen(jax.tree.map(lambda x: 0.9 * x, params))
  base = _loss(params, batch, model)
  assert _loss(params, noisy, model)[0] == pytest.approx(base[0], rel=1e-6)
  padded_loss, padded_metrics = _loss(params, padded, model)
  assert padded_loss == pytest.approx(base[0], rel=1e-6)
  assert padded_metrics.keys() == base[1].keys()
  for key, value in base[1].items():
    assert padded_metrics[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.parametrize("loss_type,smoothing", [("dpo", 0.0), ("dpo", 0.2), ("dpop", 0.0),
                                                 ("ipo", 0.0), ("simpo", 0.0), ("orpo", 0.0)])
def test_a_train_step_raises_chosen_over_rejected(tok, params, loss_type, smoothing):
  model = WithFrozen(Transformer(CFG))
  beta = {"simpo": 2.0, "orpo": 0.5}.get(loss_type, 0.1)
  loss_fn = functools.partial(preference.preference_loss, loss_type=loss_type, beta=beta,
                              label_smoothing=smoothing)
  tx = optax.sgd(0.5 if loss_type != "ipo" else 0.01)
  step = jax.jit(step_lib.make_train_step(loss_fn, model, tx))
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
           "nonfinite_streak": jnp.zeros((), jnp.int32),
           "nonfinite_total": jnp.zeros((), jnp.int32)}
  batch = _batch(tok)

  def gap(p):
    rc, rr = preference.reference_logps(p, batch, Transformer(CFG))
    return float(jnp.mean(rc - rr))
  before = gap(params)
  state, metrics = step(state, batch, jax.random.key(0), params)
  assert gap(state["params"]) > before + 1e-3
  assert metrics["weight"] == len(PAIRS)


def test_reward_loss_on_pair_rows(tok):
  model = reward_lib.RewardModel(CFG)
  params = unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  batch = _batch(tok, pad_rows=1)
  loss, m = reward.reward_loss(params, batch, None, model, use_margin=True,
                               center_coefficient=0.01)
  r_c = model.apply({"params": params}, batch["chosen_tokens"], batch["chosen_valid"])[:3]
  r_r = model.apply({"params": params}, batch["rejected_tokens"], batch["rejected_valid"])[:3]
  want, _ = reward.bradley_terry_loss(r_c, r_r, batch["margin"][:3], 0.01)
  assert float(loss) == pytest.approx(float(want.sum()), rel=1e-5)
  assert float(m["weight"]) == 3.0
  assert float(m["rewards/chosen_sq"]) == pytest.approx(float(jnp.sum(r_c ** 2)), rel=1e-5)


def test_reward_loss_lm_weight_adds_the_chosen_token_mean_nll(tok):
  lm_params = unbox(jax.jit(Transformer(CFG).init)(jax.random.key(0),
                                                   jnp.zeros((1, 8), jnp.int32))["params"])
  model = reward_lib.RewardModel(CFG, lm_head=True)
  params = reward_lib.params_from_lm(lm_params, CFG, jax.random.key(1), keep_lm_head=True)
  batch = _batch(tok, pad_rows=1)
  plain, _ = reward.reward_loss(params, batch, None, model)
  loss, m = reward.reward_loss(params, batch, None, model, lm_weight=0.5)
  # By hand: the LM's log-prob of each chosen reply token given everything before it.
  # The rows' real tokens come first, so one causal pass over the padded rows serves.
  logps = jax.nn.log_softmax(jax.jit(Transformer(CFG).apply)({"params": lm_params},
                                                             batch["chosen_tokens"]))
  nll = []
  for i in range(len(PAIRS)):
    n = int(batch["chosen_valid"][i].sum())
    assert np.all(np.asarray(batch["chosen_valid"][i, :n]) > 0)
    ids, logp = batch["chosen_tokens"][i, :n], logps[i]
    mask = np.asarray(batch["chosen_loss_mask"][i, 1:n])
    token = np.asarray(logp[np.arange(n - 1), ids[1:]])
    nll.append(-(token * mask).sum() / mask.sum())
  assert float(m["nll_chosen"]) == pytest.approx(sum(nll), rel=1e-4)
  assert float(loss) == pytest.approx(float(plain) + 0.5 * sum(nll), rel=1e-4)


# Reward-model pairs of one easy pattern: the chosen reply holds MARKER where the rejected one
# holds another word; the other words, their order and the prompt vary from pair to pair.
MARKER = "please"
FILLERS = ["apple", "river", "stone", "cloud", "green", "quiet", "table", "music", "paper",
           "light", "window", "garden", "yellow", "bread"]


def _marker_pairs(seed: int, n: int) -> list[dict]:
  rng = random.Random(seed)
  pairs = []
  for _ in range(n):
    words = rng.sample(FILLERS, 4)
    at, other = rng.randrange(5), rng.choice([w for w in FILLERS if w not in words])
    pairs.append({"prompt": f"Say something ({rng.randrange(100)})",
                  "chosen": " ".join(words[:at] + [MARKER] + words[at:]),
                  "rejected": " ".join(words[:at] + [other] + words[at:])})
  return pairs


REWARD_LR = 3e-4  # with 0 nothing is learned and the test below fails (checked)


def test_reward_model_training_raises_the_margin_and_generalises_to_unseen_pairs(tok):
  """Bradley-Terry steps on 16 fixed pairs raise r(chosen) - r(rejected) on them, and held-out
  pairs of the same pattern (other words, order, prompts) go from chance to ranked right."""
  train, held_out = _batch(tok, _marker_pairs(0, 16), 96), _batch(tok, _marker_pairs(1, 16), 96)
  seen = {(p["chosen"], p["rejected"]) for p in _marker_pairs(0, 16)}
  assert not seen & {(p["chosen"], p["rejected"]) for p in _marker_pairs(1, 16)}
  assert not train["truncated"].any() and not held_out["truncated"].any()
  model = reward_lib.RewardModel(CFG)
  params = unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  tx = optax.adam(REWARD_LR)
  step = jax.jit(step_lib.make_train_step(reward.reward_loss, model, tx))
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
           "nonfinite_streak": jnp.zeros((), jnp.int32),
           "nonfinite_total": jnp.zeros((), jnp.int32)}

  @jax.jit
  def margins(p, batch):  # r(chosen) - r(rejected) per pair
    apply = lambda side: model.apply({"params": p}, batch[f"{side}_tokens"],
                                     batch[f"{side}_valid"])
    return apply("chosen") - apply("rejected")

  def mean_margin_and_accuracy(p, batch):
    m = np.asarray(margins(p, batch))
    return float(m.mean()), float((m > 0).mean())

  train_margin0, _ = mean_margin_and_accuracy(params, train)
  _, held_out_accuracy0 = mean_margin_and_accuracy(params, held_out)
  for _ in range(6):
    state, metrics = step(state, train, jax.random.key(0))
    assert metrics["skipped"] == 0
  train_margin, _ = mean_margin_and_accuracy(state["params"], train)
  _, held_out_accuracy = mean_margin_and_accuracy(state["params"], held_out)
  print(f"train margin {train_margin0:.3f} -> {train_margin:.3f}, held-out accuracy "
        f"{held_out_accuracy0:.3f} -> {held_out_accuracy:.3f}")
  assert train_margin > train_margin0 + 0.5
  assert held_out_accuracy0 <= 0.75  # the untrained model does not already know the pattern
  assert held_out_accuracy >= 0.9 and held_out_accuracy >= held_out_accuracy0 + 0.25
