"""Probes: memorisation counts exact continuations; the bias gap is a conditional log-prob."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.data.tokenizer import train_tokenizer
from jaxllm.errors import UserError
from jaxllm.eval import probes
from jaxllm.inference.sampler import SampleOutput
from jaxllm.models import config as model_config
from jaxllm.models import transformer
from jaxllm.models.params import unbox


class ByteTokenizer:
  bos_id, pad_id = 0, 1
  bos_ids = [0]

  def encode(self, text):
    return [2 + b for b in text.encode()]


class ScriptedSampler:
  """Continues each prompt with the tokens of `answers[prompt]`, padded with 5s."""

  def __init__(self, answers):
    self.answers = answers

  def generate(self, prompts, num_new, temperature, **kwargs):
    assert temperature == 0.0 and not kwargs["stop_tokens"]
    rows = [(self.answers.get(tuple(p), []) + [5] * num_new)[:num_new] for p in prompts]
    return SampleOutput(tokens=np.array(rows), lengths=np.full(len(rows), num_new),
                        logprobs=None, raw_logprobs=None, stopped=np.zeros(len(rows), bool))


def test_memorization_counts_exact_continuations_and_short_documents():
  tok = ByteTokenizer()
  texts = ["abcdefgh", "ijklmnop", "qrstuvwx", "no"]
  ids = {t: [0] + tok.encode(t) for t in texts}
  answers = {tuple(ids["abcdefgh"][:4]): ids["abcdefgh"][4:8],  # all 4 right
             tuple(ids["ijklmnop"][:4]): ids["ijklmnop"][4:6] + [9, 9]}  # first 2 right
  out = probes.memorization(ScriptedSampler(answers), tok, texts, prefix_tokens=3,
                            continuation_tokens=4, documents=10, batch_size=2)
  assert out == {"rate": pytest.approx(1 / 3), "mean_matching_tokens": pytest.approx(2.0),
                 "documents": 3, "too_short": 1}
  assert probes.memorization(ScriptedSampler({}), tok, ["x"])["documents"] == 0


@pytest.fixture(scope="module")
def tiny_lm():
  texts = ["The man works as a doctor.", "The woman works as a baker.", "A cat sat."] * 10
  tok = train_tokenizer(texts, vocab_size=300)
  cfg = model_config.get_size("tiny", vocab_size=384)
  model = transformer.Transformer(cfg)
  params = unbox(model.init(jax.random.key(3), jnp.zeros((1, 8), jnp.int32))["params"])
  return model, params, tok


def _direct(model, params, tok, context, continuation):
  head, tail = [tok.bos_id] + tok.encode(context), tok.encode(continuation)
  ids = head + tail
  logp = jax.nn.log_softmax(model.apply({"params": params}, jnp.asarray([ids]))[0], axis=-1)
  return sum(float(logp[i - 1, ids[i]]) for i in range(len(head), len(ids)))


def test_continuation_logprobs_equal_a_direct_computation(tiny_lm):
  model, params, tok = tiny_lm
  pairs = [("The man", " works as a doctor."), ("The woman", " works as a doctor."),
           ("A", " cat sat.")]
  got = probes.continuation_logprobs(model, params, tok, pairs, batch_size=2)
  want = [_direct(model, params, tok, c, x) for c, x in pairs]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bias_gaps_are_first_minus_other_attributes(tiny_lm):
  model, params, tok = tiny_lm
  templates = [{"template": "The {} works as a doctor.", "attributes": ["man", "woman"],
                "group": "g"},
               {"template": "The {} works as a baker.", "attributes": ["man", "woman", "cat"],
                "group": "g"}]
  out = probes.bias(model, params, tok, templates)
  lp = [[_direct(model, params, tok, f"The {a}", f" works as a {job}.") for a in attrs]
        for job, attrs in (("doctor", ["man", "woman"]), ("baker", ["man", "woman", "cat"]))]
  gaps = [lp[0][0] - lp[0][1], lp[1][0] - lp[1][1], lp[1][0] - lp[1][2]]
  assert out["templates"] == 2
  assert out["g_mean_gap"] == pytest.approx(np.mean(gaps), abs=1e-4)
  assert out["g_mean_abs_gap"] == pytest.approx(np.mean(np.abs(gaps)), abs=1e-4)
  assert out["g_first_preferred"] == pytest.approx(
      np.mean([np.argmax(lp[0]) == 0, np.argmax(lp[1]) == 0]))


def test_read_templates_names_the_bad_line(tmp_path):
  path = tmp_path / "t.jsonl"
  path.write_text('{"template": "The {} ran.", "attributes": ["a", "b"]}\n'
                  '{"template": "no slot", "attributes": ["a", "b"]}\n')
  with pytest.raises(UserError, match=r"t.jsonl:2: expected"):
    probes.read_templates(path)
  path.write_text('{"template": "The {} ran.", "attributes": ["a", "b"]}\n')
  assert probes.read_templates(path)[0]["attributes"] == ["a", "b"]
