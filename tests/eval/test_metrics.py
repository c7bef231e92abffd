"""Text metrics against values worked out by hand (SQuAD EM/F1, BLEU, ROUGE)."""

import math

import pytest

from jaxllm.eval.metrics import bleu, exact_match, mean_over, normalize_answer, rouge, token_f1


@pytest.mark.parametrize("text,want", [
    ("The  Cat,\tsat!", "cat sat"),           # case, punctuation, whitespace, article
    ("An apple a day", "apple day"),          # all three articles go
    ("theater Anna, another", "theater anna another"),  # only whole-word articles
    ("A.B. the-end", "ab theend"),            # punctuation is removed, not replaced by a space
    ("  the a an  ", ""),
])
def test_normalize_answer(text, want):
  assert normalize_answer(text) == want


def test_exact_match_takes_any_reference():
  assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
  assert exact_match("Paris", ["London", "paris."]) == 1.0
  assert exact_match("Paris", ["London", "Rome"]) == 0.0
  assert exact_match("Paris, France", "Paris") == 0.0
  with pytest.raises(ValueError, match="reference"):
    exact_match("Paris", [])


@pytest.mark.parametrize("pred,refs,want", [
    # "cat sat" vs "cat sat down": common 2, P = 2/2, R = 2/3, F1 = 2 * 2/3 / (5/3) = 0.8
    ("the cat sat", "cat sat down", 0.8),
    # common = min(3, 1) = 1: P = 1/3, R = 1/2, F1 = 2 * 1/6 / (5/6) = 0.4
    ("cat cat cat", "cat dog", 0.4),
    # common = min(2, 2) = 2: P = 1, R = 2/3, F1 = 0.8
    ("cat cat", "cat cat dog", 0.8),
    ("dog", "cat", 0.0),                      # no common token
    ("", "", 1.0),                            # both empty
    ("The!", "", 1.0),                        # empty after normalization
    ("", "cat", 0.0),
    ("cat", "", 0.0),
    ("cat sat", ["dog", "cat sat down", "bird"], 0.8),  # max over references
])
def test_token_f1(pred, refs, want):
  assert token_f1(pred, refs) == pytest.approx(want)


def test_mean_over_a_corpus():
  preds, refs = ["Paris", "london", "the cat sat"], ["paris", ["Rome", "Berlin"], "cat sat down"]
  assert mean_over(exact_match, preds, refs) == pytest.approx(1 / 3)
  assert mean_over(token_f1, preds, refs) == pytest.approx((1 + 0 + 0.8) / 3)
  with pytest.raises(ValueError, match="2 predictions but 3 references"):
    mean_over(exact_match, preds[:2], refs)


def test_bleu_of_an_identical_corpus_is_100():
  texts = ["the quick brown fox jumps", "over the lazy dog ."]
  out = bleu(texts, texts)
  assert out["bleu"] == pytest.approx(100.0)
  assert out["precisions"] == pytest.approx([100.0] * 4)
  assert out["brevity_penalty"] == pytest.approx(1.0)
  assert "nrefs:1" in out["signature"] and "tok:13a" in out["signature"]


def test_bleu_by_hand_with_a_brevity_penalty():
  hyp, ref = "the cat sat on the mat", "the cat sat on a red mat"
  # hyp 6 tokens, ref 7. Clipped matches / hypothesis n-grams:
  #   1-grams: the (2 in hyp, clipped to 1), cat, sat, on, mat        -> 5/6
  #   2-grams: the cat, cat sat, sat on | on the, the mat miss         -> 3/5
  #   3-grams: the cat sat, cat sat on | sat on the, on the mat miss   -> 2/4
  #   4-grams: the cat sat on | cat sat on the, sat on the mat miss    -> 1/3
  # BP = exp(1 - r/c) = exp(1 - 7/6); product of p_n = 5/6 * 3/5 * 2/4 * 1/3 = 1/12.
  p = [5 / 6, 3 / 5, 2 / 4, 1 / 3]
  bp = math.exp(1 - 7 / 6)
  want = 100 * bp * math.exp(sum(math.log(x) for x in p) / 4)
  assert want == pytest.approx(100 * math.exp(-1 / 6) * (1 / 12) ** 0.25)
  out = bleu([hyp], [ref])
  assert out["bleu"] == pytest.approx(want, abs=1e-6)
  assert out["precisions"] == pytest.approx([100 * x for x in p], abs=1e-6)
  assert out["brevity_penalty"] == pytest.approx(bp, abs=1e-9)
  assert bleu([hyp], [[ref]])["bleu"] == pytest.approx(want, abs=1e-6)  # list of one reference


def test_bleu_with_several_references_per_prediction():
  preds = ["the cat sat on the mat", "hello there general kenobi"]
  refs = [["the cat sat on a red mat", "a cat sat on the mat"],
          ["hello there general kenobi", "hi"]]
  # Sentence 1, clipping by the max count in either reference:
  #   1-grams: the (clipped to 1), cat, sat, on, mat -> 5/6
  #   2-grams: the cat, cat sat, sat on (ref 1), on the, the mat (ref 2) -> 5/5
  #   3-grams: the cat sat (ref 1), cat sat on, sat on the, on the mat (ref 2) -> 4/4
  #   4-grams: the cat sat on (ref 1), cat sat on the, sat on the mat (ref 2) -> 3/3
  #   closest reference length to 6 is 6.
  # Sentence 2 matches its first reference: 4/4, 3/3, 2/2, 1/1; closest length 4.
  # Corpus: p = 9/10, 8/8, 6/6, 4/4; c = r = 10, BP = 1; BLEU = 100 (9/10)^(1/4).
  out = bleu(preds, refs)
  assert out["bleu"] == pytest.approx(100 * 0.9 ** 0.25, abs=1e-6)
  assert out["precisions"] == pytest.approx([90.0, 100.0, 100.0, 100.0], abs=1e-6)
  assert out["brevity_penalty"] == pytest.approx(1.0)
  assert "nrefs:2" in out["signature"]


def test_bleu_rejects_mismatched_inputs():
  with pytest.raises(ValueError, match="2 predictions but 1 references"):
    bleu(["a b c d", "e f g h"], ["a b c d"])
  with pytest.raises(ValueError, match="prediction 1 has 1 references"):
    bleu(["a b c d", "e f g h"], [["a b c d", "a b"], ["e f g h"]])


def test_rouge_by_hand():
  pred, ref = "the cat sat on the mat", "on the mat a black cat sat"
  # pred 6 tokens, ref 7.
  # ROUGE-1: overlap the (min(2, 1) = 1), cat, sat, on, mat = 5: P = 5/6, R = 5/7,
  #   F = 2 PR / (P + R) = (50/42) / (65/42) = 10/13.
  # ROUGE-2: pred bigrams the cat, cat sat, sat on, on the, the mat; ref bigrams on the,
  #   the mat, mat a, a black, black cat, cat sat: overlap 3, P = 3/5, R = 3/6, F = 6/11.
  # ROUGE-L: LCS = 3 ("the cat sat" or "on the mat"; nothing follows either in the other
  #   text): P = 3/6, R = 3/7, F = (3/7) / (13/14) = 6/13.
  out = rouge([pred], [ref], use_stemmer=False)
  assert out == pytest.approx({"rouge1": 10 / 13, "rouge2": 6 / 11, "rougeL": 6 / 13})
  # Mean over pairs (an identical pair scores 1), max over a pair's references.
  out = rouge([pred, "a b c"], [ref, "a b c"], use_stemmer=False)
  assert out == pytest.approx({"rouge1": (10 / 13 + 1) / 2, "rouge2": (6 / 11 + 1) / 2,
                               "rougeL": (6 / 13 + 1) / 2})
  out = rouge([pred], [[ref, "the cat sat on a mat"]], types=("rouge1",), use_stemmer=False)
  # second reference: overlap 5 of 6 and 6 tokens -> F = 5/6 > 10/13.
  assert out == pytest.approx({"rouge1": 5 / 6})


def test_rouge_stemming():
  # "cats" -> "cat" with the Porter stemmer; without it one of two tokens matches: F = 1/2.
  assert rouge(["cats running"], ["cat running"], types=("rouge1",))["rouge1"] == 1.0
  assert rouge(["cats running"], ["cat running"], types=("rouge1",),
               use_stemmer=False)["rouge1"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="no predictions"):
    rouge([], [])
