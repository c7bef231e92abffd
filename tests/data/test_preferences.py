"""Preference pair rows (masks, padding, truncation, reference look-up), the simulated annotator,
and the pipeline's unpacked rows."""

import numpy as np
import pytest

from jaxllm.data import batching, preferences
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.errors import ConfigError

IM_END = 4  # ids of the specials are their order
PAIR = {"prompt": "Q?", "chosen": "good", "rejected": "bad one", "margin": 2.0}


@pytest.fixture(scope="module")
def tok():
  """Byte-level (no merges), so token counts are byte counts."""
  return train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)


def _reply(tok, row, side):
  ids = row[f"{side}_tokens"][row[f"{side}_loss_mask"] > 0]
  assert ids[-1] == IM_END
  return tok.decode(list(ids[:-1]))


def test_pair_row_masks_exactly_the_replies(tok):
  row = preferences.pair_example(tok, 48)(PAIR)
  assert _reply(tok, row, "chosen") == "good" and _reply(tok, row, "rejected") == "bad one"
  for side, reply in [("chosen", "good"), ("rejected", "bad one")]:
    n = int(row[f"{side}_valid"].sum())
    ids, _ = preferences.render_reply(tok, "Q?", reply)
    np.testing.assert_array_equal(row[f"{side}_tokens"][:n], ids)
    assert row[f"{side}_tokens"][n - 1] == IM_END  # a sequence ends with the reply's <|im_end|>
    assert not row[f"{side}_valid"][n:].any() and not row[f"{side}_loss_mask"][n:].any()
    assert row[f"{side}_loss_mask"].sum() == len(reply.encode()) + 1
  # Both sequences share the prompt ids.
  start = int(np.argmax(row["chosen_loss_mask"]))
  np.testing.assert_array_equal(row["chosen_tokens"][:start], row["rejected_tokens"][:start])
  assert row["margin"] == 2.0 and row["pair_weight"] == 1.0 and row["truncated"] == 0.0
  assert preferences.pair_example(tok, 48)(dict(PAIR, margin=None))["margin"] == 0.0


def test_only_the_last_reply_of_a_multi_turn_prompt_is_trained(tok):
  prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "A"},
            {"role": "assistant", "content": "earlier"}, {"role": "user", "content": "B"}]
  row = preferences.pair_example(tok, 96)(dict(PAIR, prompt=prompt))
  assert _reply(tok, row, "chosen") == "good"
  assert "earlier" in tok.decode(list(row["chosen_tokens"][row["chosen_valid"] > 0]))


def test_a_long_pair_loses_the_start_of_its_prompt_then_the_ends_of_its_replies(tok):
  long_prompt = dict(PAIR, prompt="P" * 60)
  full, _ = preferences.render_reply(tok, long_prompt["prompt"], "bad one")
  row = preferences.pair_example(tok, 40)(long_prompt)
  assert row["truncated"] == 1.0
  assert _reply(tok, row, "chosen") == "good" and _reply(tok, row, "rejected") == "bad one"
  np.testing.assert_array_equal(row["rejected_tokens"], full[-40:])  # the prompt's end is kept
  cut = len(full) - 40
  chosen_full, _ = preferences.render_reply(tok, long_prompt["prompt"], "good")
  n = int(row["chosen_valid"].sum())
  np.testing.assert_array_equal(row["chosen_tokens"][:n], chosen_full[cut:])  # the same cut
  long_reply = preferences.pair_example(tok, 40)(dict(PAIR, chosen="G" * 80))
  assert long_reply["truncated"] == 1.0 and long_reply["chosen_valid"].sum() == 40
  assert long_reply["chosen_loss_mask"].sum() == 20  # seq_len // 2 of prompt kept, 20 of reply


def test_reference_log_probs_are_looked_up_per_sequence(tok):
  table = {preferences.sequence_key("Q?", "good"): -1.5,
           preferences.sequence_key("Q?", "bad one"): -4.0}
  row = preferences.pair_example(tok, 48, reference=table)(PAIR)
  assert (row["ref_chosen_logps"], row["ref_rejected_logps"]) == (-1.5, -4.0)
  swapped = preferences.pair_example(tok, 48, relabel=lambda r: dict(
      r, chosen=r["rejected"], rejected=r["chosen"]), reference=table)(PAIR)
  assert (swapped["ref_chosen_logps"], swapped["ref_rejected_logps"]) == (-4.0, -1.5)
  with pytest.raises(ConfigError, match="delete it so it is computed again"):
    preferences.pair_example(tok, 48, reference={})(PAIR)


def _records(n):
  return [{"prompt": f"q{i}", "chosen": "right " * (1 + i % 3), "rejected": "x" * (i % 15)}
          for i in range(n)]


def test_annotator_without_noise_or_bias_keeps_every_label():
  annotator = preferences.Annotator()
  assert not annotator.active
  assert all(annotator(r) == r for r in _records(50))


def test_annotator_length_bias_and_noise():
  records = _records(4000)
  by_length = preferences.Annotator(length_bias=1.0)
  for r in records[:200]:
    out = by_length(r)
    assert len(out["chosen"]) >= len(out["rejected"])
  coin = preferences.Annotator(noise=0.5, seed=3)
  flipped = np.mean([coin(r) != r for r in records])
  assert 0.46 < flipped < 0.54
  assert [coin(r) for r in records[:50]] == [coin(r) for r in records[:50]]  # deterministic
  assert [preferences.Annotator(noise=0.5, seed=4)(r) for r in records[:50]] != \
      [coin(r) for r in records[:50]]
  summary = preferences.annotation_summary(preferences.Annotator(noise=0.2, length_bias=0.5),
                                           records)
  assert summary["pairs"] == 4000
  assert summary["kept"] + summary["flipped_length"] + summary["flipped_noise"] == \
      pytest.approx(1.0)
  assert 0.15 < summary["flipped_noise"] < 0.25 and summary["flipped_length"] > 0.05
  with pytest.raises(ConfigError, match="annotator.noise=1.5"):
    preferences.Annotator(noise=1.5)


def test_pipeline_batches_pair_rows_without_packing(tok):
  source = [dict(PAIR, chosen=f"good {i}") for i in range(10)]
  config = batching.BatchingConfig(seq_len=48, batch_size=4, packing="rows", prefetch=0)
  batch = next(iter(batching.Batches([source], preferences.pair_example(tok, 48), config)))
  assert batch["chosen_tokens"].shape == (4, 48) and batch["margin"].shape == (4,)
  padded = batching.padded_batches([source], preferences.pair_example(tok, 48), config, 4)
  weights = np.concatenate([b["pair_weight"] for b in padded])
  assert weights.tolist() == [1.0] * 10 + [0.0] * 6


@pytest.mark.parametrize("reference", [False, True])
def test_pair_rows_have_the_layout_the_compiler_is_given(tok, reference):
  """experiments/compile.py compiles the preference steps for pair_layout."""
  table = {preferences.sequence_key("Q?", "good"): -1.5,
           preferences.sequence_key("Q?", "bad one"): -4.0} if reference else None
  row = preferences.pair_example(tok, 48, reference=table)(PAIR)
  assert {k: (np.asarray(v).shape, np.asarray(v).dtype) for k, v in row.items()} == {
      k: (shape, np.dtype(dtype))
      for k, (shape, dtype) in preferences.pair_layout(48, reference).items()}
