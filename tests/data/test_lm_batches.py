"""Packing windows and the resumable, per-process batch iterator."""

import numpy as np
import pytest

from jaxllm.data import lm_batches, synthetic
from jaxllm.data.byte_tokenizer import ByteTokenizer
from jaxllm.errors import ConfigError


def test_pack_windows_segments_positions_and_mask():
  docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]  # stream 1 2 3 4 5 6 7 8 9
  w = lm_batches.pack_windows(docs, seq_len=4)
  np.testing.assert_array_equal(w["inputs"], [[1, 2, 3, 4], [5, 6, 7, 8]])
  np.testing.assert_array_equal(w["targets"], [[2, 3, 4, 5], [6, 7, 8, 9]])
  np.testing.assert_array_equal(w["segment_ids"], [[1, 1, 1, 2], [1, 2, 2, 2]])
  np.testing.assert_array_equal(w["positions"], [[0, 1, 2, 0], [0, 0, 1, 2]])
  # Targets in another document than their input are not trained on.
  np.testing.assert_array_equal(w["loss_mask"], [[1, 1, 0, 1], [0, 1, 1, 1]])


def test_pack_windows_too_little_data_names_the_fix():
  with pytest.raises(ConfigError, match="config.data.seq_len=8"):
    lm_batches.pack_windows([[1, 2, 3]], seq_len=8)


def _windows(n=10):
  return {"inputs": np.arange(n)[:, None] * np.ones((1, 3), int)}


def test_iterator_visits_every_window_once_per_epoch_and_reshuffles():
  it = lm_batches.BatchIterator(_windows(), global_batch_size=5, seed=0)
  epoch1 = np.concatenate([next(it)["inputs"][:, 0] for _ in range(2)])
  epoch2 = np.concatenate([next(it)["inputs"][:, 0] for _ in range(2)])
  assert sorted(epoch1) == list(range(10)) and sorted(epoch2) == list(range(10))
  assert list(epoch1) != list(epoch2)


def test_iterator_resumes_exactly_from_state():
  it = lm_batches.BatchIterator(_windows(), global_batch_size=4, seed=3)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it)["inputs"] for _ in range(4)]
  fresh = lm_batches.BatchIterator(_windows(), global_batch_size=4, seed=3)
  fresh.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(fresh)["inputs"], e)


def test_processes_split_each_global_batch():
  single = lm_batches.BatchIterator(_windows(), global_batch_size=4, seed=1)
  parts = [lm_batches.BatchIterator(_windows(), 4, seed=1, process_index=p, process_count=2)
           for p in range(2)]
  for _ in range(5):
    whole = next(single)["inputs"]
    np.testing.assert_array_equal(np.concatenate([next(p)["inputs"] for p in parts]), whole)


def test_synthetic_corpus_is_deterministic_and_byte_tokenizer_round_trips():
  a, b = synthetic.generate_corpus(7, 50), synthetic.generate_corpus(7, 50)
  assert a == b and a != synthetic.generate_corpus(8, 50)
  tok = ByteTokenizer()
  text = "Ada lives in Oslo. naïve — ✓"
  ids = tok.encode(text)
  assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
  assert tok.decode(ids) == text


def test_iterator_refuses_state_from_a_different_order():
  it = lm_batches.BatchIterator(_windows(), global_batch_size=4, seed=3)
  next(it)
  other = lm_batches.BatchIterator(_windows(), global_batch_size=2, seed=3)
  with pytest.raises(ConfigError, match="config.train.batch_size"):
    other.set_state(it.get_state())
