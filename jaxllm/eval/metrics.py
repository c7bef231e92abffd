"""Text-generation metrics: exact match, token F1, BLEU and ROUGE.

- `exact_match` and `token_f1` (SQuAD v1.1, computed here): texts are normalized by
  `normalize_answer` (lowercase, drop punctuation, drop the articles a/an/the, collapse
  whitespace) and split on whitespace. EM = 1 if the prediction equals a reference, else 0.
  Token F1 counts tokens as bags (with multiplicity): common = |pred ∩ ref|,
  P = common / |pred|, R = common / |ref|, F1 = 2 P R / (P + R); 1 when both are empty, 0 when
  one is. Both take the max over several references; `mean_over` averages them over a corpus.
- `bleu` (sacrebleu, corpus level, 13a tokenization by default): modified n-gram precisions
  p_n = clipped matches / hypothesis n-grams (n = 1..4, counts summed over the corpus),
  BP = min(1, exp(1 - r / c)) with c the hypothesis length and r the closest reference length,
  BLEU = 100 BP exp(mean_n log p_n); sacrebleu smooths ("exp") only n-gram orders with no match.
- `rouge` (rouge-score): ROUGE-n F = 2 P R / (P + R) over n-gram overlap counts, ROUGE-L over
  the longest common subsequence (P = LCS / |pred|, R = LCS / |ref|); the mean F over the
  pairs, the max over a pair's references.
"""

import collections
import re
import string
from collections.abc import Callable, Sequence

import numpy as np

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
  """SQuAD v1.1 normalization: lowercase, no punctuation, no articles, single spaces."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def _as_list(references: str | Sequence[str]) -> list[str]:
  refs = [references] if isinstance(references, str) else list(references)
  if not refs:
    raise ValueError("at least one reference is needed.")
  return refs


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
  """1.0 if the normalized prediction equals a normalized reference, else 0.0."""
  pred = normalize_answer(prediction)
  return float(any(pred == normalize_answer(r) for r in _as_list(references)))


def _f1(pred: list[str], ref: list[str]) -> float:
  if not pred or not ref:
    return float(pred == ref)
  common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred), common / len(ref)
  return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
  """SQuAD token F1 = 2 P R / (P + R) over bags of normalized tokens, max over references."""
  pred = normalize_answer(prediction).split()
  return max(_f1(pred, normalize_answer(r).split()) for r in _as_list(references))


def mean_over(fn: Callable[[str, str | Sequence[str]], float], predictions: Sequence[str],
              references: Sequence[str] | Sequence[Sequence[str]]) -> float:
  """Mean of fn(prediction, references) over a corpus (e.g. fn = exact_match or token_f1)."""
  _check_lengths(predictions, references)
  return float(np.mean([fn(p, r) for p, r in zip(predictions, references)]))


def _check_lengths(predictions: Sequence[str], references: Sequence) -> None:
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} references.")
  if not predictions:
    raise ValueError("no predictions to score.")


def _reference_lists(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
                     ) -> list[list[str]]:
  """One list of references per prediction (a single string becomes a list of one)."""
  _check_lengths(predictions, references)
  return [_as_list(r) for r in references]


def bleu(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
         tokenize: str = "13a", lowercase: bool = False) -> dict:
  """Corpus BLEU by sacrebleu: {"bleu" (0-100), "precisions" [p1..p4] (0-100),
  "brevity_penalty", "signature"}.

  references: one string per prediction, or a list of them per prediction (each prediction
  the same number).
  """
  from sacrebleu.metrics import BLEU
  refs = _reference_lists(predictions, references)
  n_refs = len(refs[0])
  for i, r in enumerate(refs):
    if len(r) != n_refs:
      raise ValueError(f"prediction {i} has {len(r)} references, prediction 0 has {n_refs}; "
                       "all must have the same number.")
  metric = BLEU(tokenize=tokenize, lowercase=lowercase)
  streams = [list(stream) for stream in zip(*refs)]  # sacrebleu: one stream per reference slot
  score = metric.corpus_score(list(predictions), streams)
  return {"bleu": float(score.score), "precisions": [float(p) for p in score.precisions],
          "brevity_penalty": float(score.bp), "signature": str(metric.get_signature())}


def rouge(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]],
          types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
          use_stemmer: bool = True) -> dict[str, float]:
  """Mean ROUGE F-measure per type over the pairs (rouge-score), max over a pair's references."""
  from rouge_score import rouge_scorer
  refs = _reference_lists(predictions, references)
  scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
  scores = [scorer.score_multi(r, p) for p, r in zip(predictions, refs)]
  return {t: float(np.mean([s[t].fmeasure for s in scores])) for t in types}
