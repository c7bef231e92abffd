"""Dedup keys and grouping: normalization, exact groups, MinHash near-duplicates (first kept)."""

import random

import numpy as np

from jaxllm.data.cleaning import dedup
from tests.data.cleaning.texts import english_doc


def test_normalize_like_datatrove():
  assert dedup.normalize("Héllo,  WORLD!\n It's 3.14 and 42.") == "hello world its 0 and 0"
  assert dedup.normalize("naïve café_bar") == "naive cafebar"


def test_exact_groups_keep_the_first():
  texts = ["The same text.", "Other text", "the  SAME text", "third", "other text!"]
  keys = np.array([dedup.exact_hash(dedup.normalize(t)) for t in texts], np.uint64)
  assert dedup.first_occurrences(keys).tolist() == [0, 1, 0, 3, 1]
  assert dedup.first_occurrences(np.zeros(0, np.uint64)).tolist() == []


def _signature(text):
  return dedup.minhash_signature(dedup.normalize(text), 5, 14 * 8, 1)


def test_minhash_flags_a_light_edit_and_not_a_different_document():
  rng = random.Random(0)
  base = " ".join(english_doc(10, sentences=30).split()[:300])
  words = base.split()
  for i in rng.sample(range(len(words)), 2):
    words[i] = "changed"
  edited = " ".join(words)
  shingles_a = set(dedup.shingles(dedup.normalize(base), 5))
  shingles_b = set(dedup.shingles(dedup.normalize(edited), 5))
  jaccard = len(shingles_a & shingles_b) / len(shingles_a | shingles_b)
  assert 0.9 < jaccard < 1
  other = " ".join(english_doc(11, sentences=30).split()[:300])
  signatures = np.stack([_signature(t) for t in (base, other, edited)])
  assert signatures.shape == (3, 112) and signatures.dtype == np.uint32
  agreement = (signatures[0] == signatures[2]).mean()
  assert abs(agreement - jaccard) < 0.15  # MinHash estimates the Jaccard similarity
  assert dedup.near_duplicate_roots(signatures, 14, 8).tolist() == [0, 1, 0]


def test_near_duplicate_groups_are_transitive_and_keep_the_first():
  signatures = np.array([[1, 2, 3, 4],     # 0
                         [5, 5, 5, 5],     # 1
                         [1, 2, 9, 9],     # 2: band 0 equals document 0
                         [7, 7, 9, 9],     # 3: band 1 equals document 2 -> same group as 0
                         [5, 5, 6, 6]],    # 4: band 0 equals document 1
                        np.uint32)
  assert dedup.near_duplicate_roots(signatures, bands=2, rows=2).tolist() == [0, 1, 0, 0, 1]
  assert dedup.near_duplicate_roots(np.zeros((0, 4), np.uint32), 2, 2).tolist() == []
