"""Batching with grain: packing keeps every token once, long documents split, exact resume,
sharding, and shuffling: a seeded order unlike the file's, another each epoch and seed, every
record once per epoch."""

import collections
import json

import numpy as np
import pytest

from jaxllm.data import batching
from jaxllm.errors import ConfigError


class CharTokenizer:
  """One id per character (ord), with bos/eos: easy to check by eye."""
  bos_id, eos_id = 1, 2

  def encode(self, text):
    return [ord(c) for c in text]


def _docs(n=60, seed=0, tag="a"):
  """Documents of 1-40 characters after a tag; each fills with its own character, so every
  piece of every document is distinct and shows where it came from."""
  rng = np.random.default_rng(seed)
  return [{"text": tag + chr(0x400 * (ord(tag) - 96) + i) * int(rng.integers(1, 40))}
          for i in range(n)]


def _expected_pieces(docs, seq_len):
  to_example = batching.text_example(CharTokenizer())
  return [tuple(p["inputs"]) + ("|",) + tuple(p["targets"])
          for d in docs for p in batching.split_example(to_example(d), seq_len)]


def _pieces(batches):
  """Every packed piece as (inputs | targets), checking segment ids, positions and masks."""
  out = []
  for b in batches:
    for row in range(len(b["inputs"])):
      seg, pos = b["segment_ids"][row], b["positions"][row]
      np.testing.assert_array_equal(b["loss_mask"][row], (seg > 0).astype(np.float32))
      ids = [s for s in np.unique(seg) if s > 0]
      assert ids == list(range(1, len(ids) + 1))
      for s in ids:
        where = np.flatnonzero(seg == s)
        assert np.array_equal(where, np.arange(where[0], where[-1] + 1))  # contiguous
        np.testing.assert_array_equal(pos[where], np.arange(len(where)))
        out.append(tuple(b["inputs"][row][where]) + ("|",) + tuple(b["targets"][row][where]))
  return out


def _config(**kw):
  return batching.BatchingConfig(**{"seq_len": 16, "batch_size": 4, "seed": 3, **kw})


@pytest.mark.parametrize("packing", ["first_fit", "best_fit"])
def test_one_epoch_packs_every_piece_exactly_once(packing):
  docs = _docs()
  cfg = _config(num_epochs=1, packing=packing)
  got = _pieces(batching.build([docs], batching.text_example(CharTokenizer()), cfg))
  assert collections.Counter(got) == collections.Counter(_expected_pieces(docs, 16))


def test_long_documents_are_split_not_truncated():
  tokens = np.arange(3, 3 + 40, dtype=np.int32)
  pieces = batching.split_example({"tokens": tokens, "loss_mask": np.ones(40)}, seq_len=16)
  assert [len(p["inputs"]) for p in pieces] == [16, 16, 7]
  np.testing.assert_array_equal(np.concatenate([p["inputs"] for p in pieces]), tokens[:-1])
  np.testing.assert_array_equal(np.concatenate([p["targets"] for p in pieces]), tokens[1:])


def test_loss_mask_follows_targets():
  example = {"tokens": np.array([5, 6, 7, 8]), "loss_mask": np.array([0, 0, 1, 1])}
  (piece,) = batching.split_example(example, seq_len=8)
  np.testing.assert_array_equal(piece["targets"], [6, 7, 8])
  np.testing.assert_array_equal(piece["loss_mask"], [0, 1, 1])


def test_chat_examples_learn_only_assistant_tokens_after_packing():
  from jaxllm.data import chat
  from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)  # one token per byte
  convs = [{"messages": [{"role": "user", "content": f"q{i}"},
                         {"role": "assistant", "content": "a" * (i % 5 + 1)}]} for i in range(12)]
  cfg = _config(seq_len=64, num_epochs=1)
  batches = list(batching.build([convs], batching.chat_example(tok), cfg))
  learned = collections.Counter()
  for b in batches:
    for row in range(len(b["targets"])):
      text = tok.decode(b["targets"][row][b["loss_mask"][row] > 0])
      learned.update(text.split(chat.IM_END))
  # Each conversation's assistant content and its <|im_end|>, nothing else, is a target.
  expected = collections.Counter("a" * (i % 5 + 1) for i in range(12))
  assert learned - collections.Counter({"": learned[""]}) == expected


def test_resume_gives_identical_next_batches():
  sources = [_docs(50, 0, "a"), _docs(30, 1, "b")]
  cfg = _config(weights=(2.0, 1.0), packing="best_fit")
  to_example = batching.text_example(CharTokenizer())
  run = batching.Batches(sources, to_example, cfg)
  for _ in range(7):
    next(run)
  state = json.loads(json.dumps(run.get_state()))  # it goes through the checkpoint as JSON
  expected = [next(run) for _ in range(6)]
  resumed = batching.Batches(sources, to_example, cfg)
  resumed.set_state(state)
  for want, got in zip(expected, [next(resumed) for _ in range(6)]):
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])
  run.close()
  resumed.close()


def test_restoring_other_data_settings_is_refused():
  to_example = batching.text_example(CharTokenizer())
  state = batching.Batches([_docs()], to_example, _config()).get_state()
  other = batching.Batches([_docs()], to_example, _config(seq_len=32))
  with pytest.raises(ConfigError, match="config.data.seq_len: 16 in the checkpoint, 32 now"):
    other.set_state(state)


def test_processes_get_disjoint_shards_that_cover_the_data():
  docs = _docs(41)
  to_example = batching.text_example(CharTokenizer())
  parts = [_pieces(batching.build([docs], to_example,
                                  _config(num_epochs=1, process_index=p, process_count=2)))
           for p in range(2)]
  assert not set(parts[0]) & set(parts[1])
  assert collections.Counter(parts[0] + parts[1]) == collections.Counter(
      _expected_pieces(docs, 16))


def test_mixture_follows_weights_and_epochs_repeat():
  a, b = _docs(40, 0, "a"), _docs(40, 1, "b")
  to_example = batching.text_example(CharTokenizer())
  ds = iter(batching.build([a, b], to_example, _config(weights=(3.0, 1.0))))
  pieces = _pieces([next(ds) for _ in range(60)])
  top = [max(x for x in p if x != "|") for p in pieces]
  share_a = np.mean([t == ord("a") or 0x400 <= t < 0x800 for t in top])  # tag or fill of "a"
  assert 0.68 < share_a < 0.82, share_a
  twice = _pieces(batching.build([a], to_example, _config(num_epochs=2)))
  assert collections.Counter(twice) == collections.Counter(_expected_pieces(a, 16) * 2)


def test_padded_eval_batches_are_a_fixed_number():
  docs = _docs(10)
  to_example = batching.text_example(CharTokenizer())
  batches = batching.padded_batches([docs], to_example, _config(), max_batches=20)
  assert len(batches) == 20 and all(b["inputs"].shape == (4, 16) for b in batches)
  total = sum(len(d["text"]) + 1 for d in docs)  # bos + text + eos -> len + 1 targets
  assert sum(b["loss_mask"].sum() for b in batches) == total
  assert batches[-1]["loss_mask"].sum() == 0


def test_bad_settings_name_the_field():
  to_example = batching.text_example(CharTokenizer())
  with pytest.raises(ConfigError, match="config.data.weights"):
    batching.build([_docs(), _docs()], to_example, _config(weights=(1.0,)))
  with pytest.raises(ConfigError, match="config.train.batch_size"):
    batching.build([_docs()], to_example, _config(process_count=3))
  with pytest.raises(ConfigError, match="config.data.packing"):
    batching.build([_docs()], to_example, _config(packing="greedy"))


def test_without_process_sharding_processes_split_the_same_global_batches():
  docs = _docs(40)
  to_example = batching.text_example(CharTokenizer())
  whole = iter(batching.build([docs], to_example, _config(shard_by_process=False)))
  parts = [iter(batching.build([docs], to_example, _config(
      shard_by_process=False, process_index=p, process_count=2))) for p in range(2)]
  for _ in range(5):
    batch, a, b = next(whole), next(parts[0]), next(parts[1])
    for key in batch:
      np.testing.assert_array_equal(batch[key], np.concatenate([a[key], b[key]]))


def test_worker_processes_resume_exactly():
  to_example = batching.text_example(CharTokenizer())
  cfg = _config(num_workers=2)
  run = batching.Batches([_docs(80)], to_example, cfg)
  for _ in range(3):
    next(run)
  state = json.loads(json.dumps(run.get_state()))
  expected = [next(run) for _ in range(3)]
  run.close()
  resumed = batching.Batches([_docs(80)], to_example, cfg)
  resumed.set_state(state)
  got = [next(resumed) for _ in range(3)]
  resumed.close()
  for want, have in zip(expected, got):
    for key in want:
      np.testing.assert_array_equal(want[key], have[key])


def _global_batches(docs, n, process_count, **kw):
  """The first n global batches: every process's rows, in process order."""
  to_example = batching.text_example(CharTokenizer())
  its = [batching.Batches([docs], to_example, _config(batch_size=8, process_index=p,
                                                      process_count=process_count, **kw))
         for p in range(process_count)]
  out = [{k: np.concatenate([b[k] for b in parts]) for k in parts[0]}
         for parts in ([next(it) for it in its] for _ in range(n))]
  return out, its


def test_fixed_data_shards_give_the_same_batches_on_any_process_count():
  docs = _docs(90)
  one, _ = _global_batches(docs, 6, 1, shards=4)
  for count in (2, 4):
    many, _ = _global_batches(docs, 6, count, shards=4)
    for want, got in zip(one, many):
      for key in want:
        np.testing.assert_array_equal(want[key], got[key])
  default_two, _ = _global_batches(docs, 1, 2)  # shards=0: one per process, as before
  two_shards, _ = _global_batches(docs, 1, 1, shards=2)
  np.testing.assert_array_equal(default_two[0]["inputs"], two_shards[0]["inputs"])


def test_data_positions_of_two_processes_resume_in_one_and_back():
  """The checkpoint's union of per-shard positions restores on another process count."""
  from jaxllm.train.checkpoint import merge_shard_positions
  docs = _docs(90)
  to_example = batching.text_example(CharTokenizer())
  _, two = _global_batches(docs, 5, 2, shards=2)
  saved = [json.loads(json.dumps(it.get_state())) for it in two]
  expected = [{k: np.concatenate([b[k] for b in parts]) for k in parts[0]}
              for parts in ([next(it) for it in two] for _ in range(4))]
  merged = merge_shard_positions(saved)
  one = batching.Batches([docs], to_example, _config(batch_size=8, shards=2))
  one.set_state(merged)
  for want in expected:
    got = next(one)
    for key in want:
      np.testing.assert_array_equal(want[key], got[key])
  back = [batching.Batches([docs], to_example, _config(batch_size=8, shards=2,
                                                      process_index=p, process_count=2))
          for p in range(2)]
  state = json.loads(json.dumps(one.get_state()))
  for it in back:
    it.set_state(state)
  want = next(one)
  parts = [next(it) for it in back]
  got = {k: np.concatenate([part[k] for part in parts]) for k in want}
  for key in want:
    np.testing.assert_array_equal(want[key], got[key])
  assert merge_shard_positions([{"step": 1}, {"step": 1}]) is None  # per-process positions
  assert merge_shard_positions([{"settings": 1, "shards": {}},
                                {"settings": 2, "shards": {}}]) is None
  with pytest.raises(ConfigError, match=r"no data position for shards \[1\]"):
    one.set_state({**merged, "shards": {"0": merged["shards"]["0"]}})
  with pytest.raises(ConfigError, match=r"config.data.shards \(0 = one per process\): 2 in the "
                                        "checkpoint, 4 now"):
    batching.Batches([docs], to_example, _config(batch_size=8, shards=4)).set_state(merged)


def test_data_shard_counts_are_checked():
  to_example = batching.text_example(CharTokenizer())
  with pytest.raises(ConfigError, match="config.data.shards=3 must be a positive multiple of "
                                        "the 2 processes"):
    batching.build([_docs()], to_example, _config(shards=3, process_count=2))
  with pytest.raises(ConfigError, match="config.train.batch_size=4 is not divisible by the 8 "
                                        "data shards"):
    batching.build([_docs()], to_example, _config(shards=8))
  with pytest.raises(ConfigError, match="too few to give each of the 8 data shards one"):
    batching.build([_docs(5)], to_example, _config(shards=8, batch_size=8))


def test_padded_eval_batches_do_not_depend_on_the_process_count():
  docs = _docs(30)
  to_example = batching.text_example(CharTokenizer())
  one = batching.padded_batches([docs], to_example, _config(batch_size=8, shards=2), 6)
  two = [batching.padded_batches([docs], to_example, _config(
      batch_size=8, shards=2, process_index=p, process_count=2), 6) for p in range(2)]
  for i, want in enumerate(one):
    for key in want:
      np.testing.assert_array_equal(want[key], np.concatenate([two[0][i][key], two[1][i][key]]))
  total = sum(len(d["text"]) + 1 for d in docs)
  assert sum(b["loss_mask"].sum() for b in one) == total


def _record_order(n, shards=0, **kw):
  """The record ids in the order the batches hold them (rows packing: one record per row)."""
  records = [{"id": i} for i in range(n)]
  to_example = lambda r: {"id": np.int32(r["id"])}
  cfg = _config(packing="rows", prefetch=0, shards=shards, **kw)
  return np.concatenate([b["id"] for b in batching.build([records], to_example, cfg)])


@pytest.mark.parametrize("shards", [1, 2])
def test_shuffling_reorders_each_epoch_and_seed_and_keeps_every_record_once(shards):
  n, epochs = 48, 3
  order = _record_order(n, shards, seed=3, num_epochs=epochs)
  assert len(order) == n * epochs
  # Each data shard s reads records s, s + shards, ...: follow each shard's own stream.
  for s in range(shards):
    stream = order[order % shards == s]
    per_epoch = stream.reshape(epochs, n // shards)
    file_order = np.arange(s, n, shards)
    for epoch in per_epoch:
      np.testing.assert_array_equal(np.sort(epoch), file_order)  # each record once an epoch
      assert np.mean(epoch != file_order) > 0.75, epoch  # far from the file order
    assert all(not np.array_equal(per_epoch[i], per_epoch[j])  # a new order every epoch
               for i in range(epochs) for j in range(i))
  other_seed = _record_order(n, shards, seed=4, num_epochs=1)
  assert np.mean(other_seed != order[:n]) > 0.75
  assert sorted(other_seed.tolist()) == list(range(n))
  np.testing.assert_array_equal(_record_order(n, shards, seed=3, num_epochs=1), order[:n])
  # The control: without shuffle, every shard reads its records in file order.
  unshuffled = _record_order(n, shards, seed=3, num_epochs=1, shuffle=False)
  for s in range(shards):
    np.testing.assert_array_equal(unshuffled[unshuffled % shards == s], np.arange(s, n, shards))


def test_training_batches_shuffle_with_the_run_seed():
  from jaxllm import config as config_lib
  from jaxllm.data import inputs
  c = config_lib.base_config("tiny")
  c.seed = 11
  cfg = inputs.batching_config(c)
  assert cfg.shuffle and cfg.seed == 11


def test_chat_or_text_example_trains_text_on_every_token_and_chat_on_replies():
  from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)  # one token per byte
  to_example = batching.chat_or_text_example(tok)
  text = to_example({"text": "Ada Park lives in Oslo."})
  assert text["tokens"].tolist() == [tok.bos_id] + tok.encode("Ada Park lives in Oslo.") + [
      tok.eos_id]
  assert text["loss_mask"].tolist() == [1.0] * len(text["tokens"])
  chat = to_example({"messages": [{"role": "user", "content": "Hi?"},
                                  {"role": "assistant", "content": "Hello."}]})
  expected = batching.chat_example(tok)({"messages": [{"role": "user", "content": "Hi?"},
                                                      {"role": "assistant",
                                                       "content": "Hello."}]})
  np.testing.assert_array_equal(chat["tokens"], expected["tokens"])
  np.testing.assert_array_equal(chat["loss_mask"], expected["loss_mask"])
  assert 0 < chat["loss_mask"].mean() < 1


def test_a_text_that_panics_the_tokenizer_is_an_error_not_a_hang():
  """A page of a million spaces overflows the fast path's regex (tiktoken panics: a
  BaseException, not an Exception); read on the prefetch thread, it must reach the loop as an
  error naming the text, not leave it waiting."""
  from jaxllm.data.tokenizer import train_tokenizer
  from jaxllm.errors import UserError
  tok = train_tokenizer(["the cat sat on the mat"] * 20, vocab_size=300)
  assert tok.uses_tiktoken  # the fast path, whose regex engine is the one that overflows
  docs = [*_docs(8), {"text": " " * 1_000_000}, *_docs(8, seed=1)]
  batches = batching.Batches([docs], batching.text_example(tok), _config(prefetch=2, shuffle=False))
  with pytest.raises(UserError, match="tokenizer failed .* a text of 1,000,000 characters"):
    for _ in range(20):
      next(batches)
  batches.close()


def test_a_checkpoint_naming_a_source_by_an_older_name_resumes():
  """Prepared datasets were once named by their files' paths and times; a data position saved
  under such a name (a source's alias) restores, another name is refused."""
  class Named(list):
    name, split, aliases = "jaxllm_text/content", "train", ("jaxllm_text/paths-and-times",)
  docs = Named(_docs())
  to_example = batching.text_example(CharTokenizer())
  cfg = _config(prefetch=0)
  run = batching.Batches([docs], to_example, cfg)
  next(run)
  state = json.loads(json.dumps(run.get_state()))
  state["settings"]["sources"][0][0] = "jaxllm_text/paths-and-times"
  resumed = batching.Batches([docs], to_example, cfg)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["inputs"], next(run)["inputs"])
  state["settings"]["sources"][0][0] = "jaxllm_text/something-else"
  with pytest.raises(ConfigError, match="config.data.source"):
    batching.Batches([docs], to_example, cfg).set_state(state)


def _layout_of(batch):
  return {k: (np.asarray(v).shape[1:], np.asarray(v).dtype) for k, v in batch.items()}


def test_packed_batches_have_the_row_layout_the_compiler_is_given():
  """experiments/compile.py compiles the train step for row_layout; a real batch must match."""
  batch = next(iter(batching.build([_docs()], batching.text_example(CharTokenizer()), _config())))
  assert _layout_of(batch) == {k: (shape, np.dtype(dtype))
                               for k, (shape, dtype) in batching.row_layout(16).items()}
