"""The SFT objective: the LM loss on chat-template batches, learning only the assistant's tokens,
averaged over the target tokens of the whole global batch; pretraining text mixed in."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.data import batching, chat, world
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.errors import ConfigError
from jaxllm.models import Transformer, get_size
from jaxllm.models.params import unbox
from jaxllm.objectives import lm
from jaxllm.train import step as step_lib

CFG = get_size("tiny")


def _sft_batch(seq_len=256, batch_size=8):
  """Packed batch of world SFT conversations (system prompts included), one token per byte."""
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)
  convs = [c for c in world.generate(0)["train"]["sft"]  # the question-answer conversations
           if c["meta"]["kind"] in ("fact", "unknown", "arithmetic")][:40]
  assert any(c["messages"][0]["role"] == "system" for c in convs)
  cfg = batching.BatchingConfig(seq_len=seq_len, batch_size=batch_size, seed=0, num_epochs=1)
  batch = next(iter(batching.build([convs], batching.chat_example(tok), cfg)))
  return {k: np.asarray(v) for k, v in batch.items()}


def _params(seed=0):
  tokens = jnp.zeros((1, 8), jnp.int32)
  return unbox(jax.jit(Transformer(CFG).init)(jax.random.key(seed), tokens)["params"])


def test_gradient_at_prompt_positions_is_exactly_zero():
  batch = _sft_batch()
  mask = batch["loss_mask"]
  assert 0 < mask.mean() < 1  # prompts (system, user, template) and replies in every batch
  logits = Transformer(CFG).apply({"params": _params()}, batch["inputs"],
                                  **lm.model_inputs(batch))
  grad = jax.grad(lambda x: lm.masked_lm_sums(x, batch["targets"], batch["loss_mask"],
                                              z_loss=1e-4)[0])(logits)
  grad = np.asarray(grad)
  assert np.all(grad[mask == 0] == 0.0)
  assert np.all(np.abs(grad[mask > 0]).sum(-1) > 0)


def _mean_grads(batch, microbatches):
  """(loss, gradients) as the train step forms them: sums over microbatches / total weight."""
  fn = jax.jit(lambda p, b: step_lib.accumulate_gradients(
      lm.lm_loss, Transformer(CFG), p, b, jax.random.key(0), microbatches))
  grads, sums = fn(_params(), batch)
  weight = sums["weight"]
  return float(sums["loss"] / weight), jax.tree.map(lambda g: g / weight, grads)


@pytest.mark.slow
def test_four_microbatches_equal_the_full_batch_with_uneven_assistant_lengths():
  batch = _sft_batch()
  per_micro = step_lib.split_microbatches(batch, 4)["loss_mask"].sum(axis=(1, 2))
  assert len(set(per_micro.tolist())) > 1, per_micro  # microbatches learn unequal token counts
  full_loss, full = _mean_grads(batch, 1)
  acc_loss, acc = _mean_grads(batch, 4)
  np.testing.assert_allclose(acc_loss, full_loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(acc)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  # A mean per microbatch, averaged, is a different number here: the test can tell them apart.
  params = _params()
  micro = step_lib.split_microbatches(batch, 4)
  means = []
  for i in range(4):
    mb = jax.tree.map(lambda x, i=i: x[i], micro)
    total, metrics = lm.lm_loss(params, mb, None, Transformer(CFG))
    means.append(float(total / metrics["weight"]))
  assert abs(np.mean(means) - full_loss) > 1e-4  # 100x the tolerance above


def test_sft_batches_mix_in_pretraining_text_at_its_weight(tmp_path):
  from jaxllm.recipes import sft
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)
  texts = tmp_path / "pages.jsonl"
  texts.write_text("".join(json.dumps({"text": f"~{i}~ ~ ~ ~ ~"}) + "\n" for i in range(200)))
  c = sft.default_config("tiny")
  c.data.source, c.data.seq_len, c.train.batch_size = "world", 128, 16
  c.data.world_sizes = {"sft": 100, "rag_conversations": 0, "tool_conversations": 0,
                        "preferences": 4, "rl": 4, "kb_questions": 4, "tool_problems": 4}
  c.data.text_source, c.data.text_weight = str(texts), 0.5
  sft.validate(c)
  train_iter, eval_batches = sft.train_data(c, tmp_path / "run", tok)
  try:
    rows = [row for _ in range(8) for row in _rows(next(train_iter))]
  finally:
    train_iter.close()
  tilde, im_start = tok.encode("~")[0], tok.token_id(chat.IM_START)
  # each packed segment is a text record ("~" is in no conversation) or a conversation piece
  segments = [(tokens[seg == i], mask[seg == i]) for tokens, mask, seg in rows
              for i in set(seg.tolist()) - {0}]
  text_segments = [s for s in segments if tilde in s[0]]
  chat_segments = [s for s in segments if tilde not in s[0]]
  assert text_segments and chat_segments
  assert all(mask.all() for _, mask in text_segments)  # text: every token is a target
  assert any(im_start in t for t, _ in chat_segments)
  assert all(not m.all() for t, m in chat_segments if im_start in t)  # chat: replies only
  share = len(text_segments) / len(segments)
  assert 0.25 < share < 0.75, share
  for batch in eval_batches():  # eval: conversations only
    assert tilde not in np.asarray(batch["inputs"])
  c.data.text_source = ""
  with pytest.raises(ConfigError, match="give both"):
    sft.validate(c)


def _rows(batch):
  """(inputs, loss_mask, segment_ids) of each row of a packed batch."""
  return list(zip(np.asarray(batch["inputs"]), np.asarray(batch["loss_mask"]) > 0,
                  np.asarray(batch["segment_ids"])))
