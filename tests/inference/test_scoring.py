"""RewardScorer: the same rewards as the model on the rendered conversation, in any batch size,
with long conversations cut from the left and a clear error for a conversation with no reply."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.data import preferences
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.errors import UserError
from jaxllm.inference.scoring import RewardScorer
from jaxllm.models import get_size
from jaxllm.models.params import unbox
from jaxllm.models.reward import RewardModel

CFG = dataclasses.replace(get_size("tiny"), vocab_size=len(SPECIAL_TOKENS) + 256)


def _conversation(i):
  return [{"role": "user", "content": f"question {i}?"},
          {"role": "assistant", "content": "answer " * (1 + i % 4)}]


@pytest.mark.slow
def test_scores_equal_the_model_on_each_conversation_in_any_batch_size():
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)
  model = RewardModel(CFG)
  params = unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  conversations = [_conversation(i) for i in range(7)]
  want = []
  for c in conversations:
    ids, _ = preferences.render_reply(tok, c[:1], c[1]["content"])
    want.append(float(model.apply({"params": params}, jnp.asarray([ids]))[0]))
  for batch_size in (2, 8):
    scores = RewardScorer(model, tok, max_len=128, batch_size=batch_size)(params, conversations)
    np.testing.assert_allclose(scores, want, atol=1e-5)
  scorer = RewardScorer(model, tok, max_len=24)
  long = [_conversation(3)]
  ids, _ = preferences.render_reply(tok, long[0][:1], long[0][1]["content"])
  assert len(ids) > 24
  np.testing.assert_allclose(scorer(params, long),
                             model.apply({"params": params}, jnp.asarray([ids[-24:]])),
                             atol=1e-5)
  assert scorer.last_truncated == 1
  with pytest.raises(UserError, match="must end with an assistant message"):
    scorer(params, [_conversation(0)[:1]])
