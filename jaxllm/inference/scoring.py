"""Scoring conversations with a trained reward model: `score(params, conversations) -> [N]`.

    scorer = RewardScorer(run.model, run.tokenizer, max_len=run.config.data.seq_len)
    rewards = scorer(run.params, [[{"role": "user", ...}, {"role": "assistant", ...}], ...])

Each conversation is rendered with the chat template exactly as the reward model was trained
(jaxllm/data/preferences.py: the sequence ends with the last reply's <|im_end|>) and the model
reads that last token. A conversation longer than `max_len` keeps its last `max_len` tokens (the
reply, then as much context as fits); `last_truncated` counts them. Batches and lengths are
bucketed, so a scorer compiles a handful of shapes however many calls it serves (the RL loop's
rewards, RLHF). Params may be sharded on a mesh: pass it with its logical axis rules.
"""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxllm.data import preferences
from jaxllm.errors import UserError
from jaxllm.inference.sampler import POWERS_OF_TWO, bucket, mesh_context
from jaxllm.parallel import sharding as sharding_lib


def conversation_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
  """The ids a reward model reads for a conversation ending with an assistant reply."""
  if not messages or messages[-1].get("role") != "assistant":
    raise UserError("a conversation to score must end with an assistant message (the reply); "
                    f"got {messages[-1].get('role') if messages else 'no messages'!r}.")
  ids, _ = preferences.render_reply(tokenizer, list(messages[:-1]), messages[-1]["content"])
  return ids


class RewardScorer:
  """score(params, conversations) -> float32 rewards [N], compiled once per bucket."""

  def __init__(self, model, tokenizer, max_len: int, *, batch_size: int = 32, mesh=None,
               rules=()):
    self.model, self.tokenizer, self.max_len = model, tokenizer, max_len
    self.batch_size, self.mesh, self.rules = batch_size, mesh, tuple(rules)
    self.last_truncated = 0
    self._jitted = jax.jit(lambda p, tokens, valid: model.apply({"params": p}, tokens, valid))

  def __call__(self, params: Any, conversations: Sequence[Sequence[dict]]) -> np.ndarray:
    sequences = [conversation_ids(self.tokenizer, c) for c in conversations]
    self.last_truncated = sum(len(s) > self.max_len for s in sequences)
    sequences = [s[-self.max_len:] for s in sequences]
    out = np.zeros((len(sequences),), np.float32)
    pad_id = self.tokenizer.pad_id or 0
    for start in range(0, len(sequences), self.batch_size):
      chunk = sequences[start:start + self.batch_size]
      rows = bucket(len(chunk), POWERS_OF_TWO)
      length = min(bucket(max(map(len, chunk)), tuple(b for b in POWERS_OF_TWO if b >= 16)),
                   self.max_len)
      tokens = np.full((rows, length), pad_id, np.int32)
      valid = np.zeros((rows, length), np.int32)
      for i, s in enumerate(chunk):
        tokens[i, :len(s)], valid[i, :len(s)] = s, 1
      with mesh_context(self.mesh, self.rules):
        rewards = self._jitted(params, tokens, valid)
      out[start:start + len(chunk)] = sharding_lib.fetch(rewards)[:len(chunk)]
    return out
