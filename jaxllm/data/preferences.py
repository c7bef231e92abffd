"""Preference pairs as fixed-shape rows, and a simulated annotator that labels them.

A record {"prompt", "chosen", "rejected", "margin"?} becomes one row holding both replies after
the same prompt, each rendered with the chat template (jaxllm/data/chat.py) and right-padded to
seq_len:

  chosen_tokens, rejected_tokens      int32 [L]   <|bos|>...assistant\\n reply <|im_end|>
  chosen_valid, rejected_valid        int32 [L]   1 on real tokens, 0 on padding
  chosen_loss_mask, rejected_loss_mask float32 [L] 1 on the reply's tokens (and its <|im_end|>)
  margin float32 [], pair_weight float32 [] (1; 0 on the padding rows of eval batches),
  truncated float32 [] (1 if the pair did not fit in seq_len and was cut)
  ref_chosen_logps, ref_rejected_logps float32 [] (only with a reference table: log-probs of
  each reply under the reference model, looked up by `sequence_key(prompt, reply)`)

A sequence ends with the reply's <|im_end|>, the token a reward model reads. A pair longer than
seq_len loses the start of its prompt first (the same cut for both replies, so their log-probs
stay comparable), then the ends of its replies; such pairs are flagged, and the losses report the
share as the `truncated` metric.
"""

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable

import numpy as np

from jaxllm.data import chat
from jaxllm.errors import ConfigError

Example = dict[str, np.ndarray]
SIDES = ("chosen", "rejected")


def sequence_key(prompt, reply: str) -> str:
  """A stable key of one (prompt, reply) sequence, for tables of reference log-probs."""
  return hashlib.sha256(json.dumps([prompt, reply], ensure_ascii=False).encode()).hexdigest()[:24]


def render_reply(tokenizer, prompt, reply: str) -> tuple[list[int], int]:
  """(ids, prompt length): prompt + assistant reply, ending with the reply's <|im_end|>. The
  loss mask of a pair covers ids[prompt_length:] (earlier assistant turns in the prompt are
  context, not trained)."""
  messages = chat.prompt_messages(prompt)
  prompt_ids, _ = chat.render_chat(tokenizer, messages, add_generation_prompt=True)
  ids, mask = chat.render_chat(tokenizer, messages + [{"role": "assistant", "content": reply}])
  end = len(mask) - mask[::-1].index(1)  # drop the newline after <|im_end|>
  return ids[:end], len(prompt_ids)


def _fit(prompt_len: int, longest_reply: int, seq_len: int) -> tuple[int, int]:
  """(prompt tokens kept from its end, reply tokens kept at most) so both sequences fit."""
  if prompt_len + longest_reply <= seq_len:
    return prompt_len, longest_reply
  keep_prompt = min(prompt_len, max(seq_len - longest_reply, seq_len // 2))
  return keep_prompt, seq_len - keep_prompt


def pair_layout(seq_len: int, reference: bool = False) -> dict[str, tuple[tuple[int, ...], type]]:
  """key -> (shape of one row, dtype) of a pair row; `reference`: with reference log-probs."""
  layout = {}
  for side in SIDES:
    layout.update({f"{side}_tokens": ((seq_len,), np.int32),
                   f"{side}_valid": ((seq_len,), np.int32),
                   f"{side}_loss_mask": ((seq_len,), np.float32)})
  layout.update(margin=((), np.float32), pair_weight=((), np.float32), truncated=((), np.float32))
  if reference:
    layout.update({f"ref_{side}_logps": ((), np.float32) for side in SIDES})
  return layout


def pair_example(tokenizer, seq_len: int, relabel: Callable[[dict], dict] | None = None,
                 reference: dict[str, float] | None = None) -> Callable[[dict], Example]:
  """Preference record -> one row (see the module docstring). `relabel` (e.g. an Annotator)
  may swap chosen and rejected first; `reference` maps sequence keys to reference log-probs."""
  def to_example(record: dict) -> Example:
    if relabel is not None:
      record = relabel(record)
    rendered = [render_reply(tokenizer, record["prompt"], record[side]) for side in SIDES]
    prompt_len = rendered[0][1]  # the same prompt ids start both sequences
    longest = max(len(ids) for ids, _ in rendered) - prompt_len
    keep_prompt, keep_reply = _fit(prompt_len, longest, seq_len)
    start, end = prompt_len - keep_prompt, prompt_len + keep_reply
    row, pad_id = {}, tokenizer.pad_id or 0  # padding is masked; any id will do
    for side, (ids, _) in zip(SIDES, rendered):
      ids = ids[start:end]
      pad = seq_len - len(ids)
      row[f"{side}_tokens"] = np.asarray(ids + [pad_id] * pad, np.int32)
      row[f"{side}_valid"] = np.asarray([1] * len(ids) + [0] * pad, np.int32)
      row[f"{side}_loss_mask"] = np.asarray(
          [0] * keep_prompt + [1] * (len(ids) - keep_prompt) + [0] * pad, np.float32)
    margin = record.get("margin")
    row["margin"] = np.float32(0.0 if margin is None else margin)
    row["pair_weight"] = np.float32(1.0)
    row["truncated"] = np.float32(start > 0 or keep_reply < longest)
    if reference is not None:
      for side in SIDES:
        key = sequence_key(record["prompt"], record[side])
        if key not in reference:
          raise ConfigError(f"no reference log-prob for the {side} reply of the pair with "
                            f"prompt {str(record['prompt'])[:60]!r}; the reference table was "
                            "computed on other data: delete it so it is computed again.")
        row[f"ref_{side}_logps"] = np.float32(reference[key])
    return row
  return to_example


@dataclasses.dataclass(frozen=True)
class Annotator:
  """A simulated labeler who sees a pair and says which reply is better.

  For each pair, decided by a hash of (seed, prompt, replies) so a pair always gets the same
  label: with probability `length_bias` the annotator prefers the longer reply (in characters)
  whatever it says; otherwise the truly better one (the record's chosen); then, with
  probability `noise`, the label is flipped. noise=0.5 is a coin; length_bias=1 rewards length
  alone, the bias a reward model can learn and a policy then exploit (reward hacking).
  """

  noise: float = 0.0
  length_bias: float = 0.0
  seed: int = 0

  def __post_init__(self):
    for name in ("noise", "length_bias"):
      value = getattr(self, name)
      if not 0.0 <= value <= 1.0:
        raise ConfigError(f"config.data.annotator.{name}={value} must be a probability in "
                          "[0, 1].")

  @property
  def active(self) -> bool:
    return self.noise > 0 or self.length_bias > 0

  def prefers_chosen(self, record: dict) -> tuple[bool, str]:
    """(whether the annotator keeps the record's order, why: truth | length | noise)."""
    key = f"{self.seed}\x00{record['prompt']}\x00{record['chosen']}\x00{record['rejected']}"
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    keep, why = True, "truth"
    if rng.random() < self.length_bias:
      keep, why = len(record["chosen"]) >= len(record["rejected"]), "length"
    if rng.random() < self.noise:
      keep, why = not keep, "noise"
    return keep, why

  def __call__(self, record: dict) -> dict:
    keep, _ = self.prefers_chosen(record)
    if keep:
      return record
    return dict(record, chosen=record["rejected"], rejected=record["chosen"])


def annotator_from_config(c) -> Annotator | None:
  """config.data.annotator -> Annotator, or None when it changes nothing."""
  annotator = Annotator(float(c.noise), float(c.length_bias), int(c.seed))
  return annotator if annotator.active else None


def annotation_summary(annotator: Annotator, records) -> dict[str, float]:
  """Shares of pairs whose label the annotator kept, flipped for length, or flipped by noise."""
  counts = {"pairs": 0, "kept": 0, "flipped_length": 0, "flipped_noise": 0}
  for record in records:
    keep, why = annotator.prefers_chosen(record)
    counts["pairs"] += 1
    counts["kept" if keep else f"flipped_{why}"] += 1
  n = max(counts["pairs"], 1)
  return {"pairs": counts["pairs"], **{k: v / n for k, v in counts.items() if k != "pairs"}}
