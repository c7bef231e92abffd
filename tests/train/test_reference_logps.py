"""The DPO reference table (jaxllm/train/reference_logps.py): every entry equals the sum of the
reply's log-probs from one forward pass over that sequence alone, written out with plain jax,
including the pairs of a last batch that the pairs do not fill and pairs from a second source."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxllm.data import preferences
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.models import Transformer, get_size
from jaxllm.models.params import unbox
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.train import reference_logps

CFG = dataclasses.replace(get_size("tiny"), vocab_size=len(SPECIAL_TOKENS) + 256)
SEQ_LEN = 96
# 5 + 2 pairs in batches of 4: the second batch holds 3 pairs (and one padding row) and spans
# both sources.
TRAIN = [{"prompt": "What is 2 + 2?", "chosen": "The answer is 4.", "rejected": "5"},
         {"prompt": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Colour of the sky?"}],
          "chosen": "Blue.", "rejected": "The sky is green, I think."},
         {"prompt": "Say hi", "chosen": "hi", "rejected": "no", "margin": 1.0},
         {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A carrot."},
         {"prompt": [{"role": "user", "content": "Count to 3."},
                     {"role": "assistant", "content": "1 2 3"},
                     {"role": "user", "content": "Now backwards."}],
          "chosen": "3 2 1", "rejected": "1 2 3 again"}]
VALIDATION = [{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon, of course."},
              {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No, it is hot."}]
BATCH = 4


@pytest.fixture(scope="module")
def tok():
  return train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)


@pytest.fixture(scope="module")
def params():
  init = jax.jit(Transformer(CFG).init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  # Larger weights than the init's: log-probs far from uniform, so a wrong token shows.
  return jax.tree.map(lambda x: x * 3.0, unbox(init["params"]))


def _direct_reply_logp(tok, params, prompt, reply):
  """log p(reply | prompt): one forward pass over prompt + reply alone (right-padded to
  SEQ_LEN; a causal model's logits at a position do not see what comes after it), then the
  sum of log-softmax at each reply token, its <|im_end|> included."""
  ids, prompt_len = preferences.render_reply(tok, prompt, reply)
  assert len(ids) <= SEQ_LEN  # nothing truncated
  inputs = jnp.asarray([ids[:-1] + [0] * (SEQ_LEN - len(ids))], jnp.int32)
  logits = _forward(params, inputs)[0].astype(jnp.float32)
  logp = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
  return sum(float(logp[t - 1, ids[t]]) for t in range(prompt_len, len(ids)))


@jax.jit
def _forward(params, inputs):
  return Transformer(CFG).apply({"params": params}, inputs)


def test_reference_table_holds_each_reply_logp_including_a_ragged_last_batch(tok, params):
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 1}, jax.devices()[:4])
  rules = sharding_lib.DEFAULT_RULES
  assert (len(TRAIN) + len(VALIDATION)) % BATCH  # the last batch is not full
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    table = reference_logps.compute_table(Transformer(CFG), params, [TRAIN, VALIDATION], tok,
                                          SEQ_LEN, BATCH, mesh)
  expected = {}
  for pair in TRAIN + VALIDATION:
    for side in preferences.SIDES:
      key = preferences.sequence_key(pair["prompt"], pair[side])
      expected[key] = _direct_reply_logp(tok, params, pair["prompt"], pair[side])
  assert len(expected) == 2 * (len(TRAIN) + len(VALIDATION))  # every sequence its own key
  assert table.keys() == expected.keys()
  for key, want in expected.items():
    assert table[key] == pytest.approx(want, rel=1e-5), key
  # The entries differ from sequence to sequence: swapped or shifted rows would show.
  assert len({round(v, 3) for v in expected.values()}) == len(expected)
