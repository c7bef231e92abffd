"""Exact tests for the report card: is a change on the same questions more than chance?

- `binomial_test(k, n, p)`: two-sided exact binomial test of k successes in n trials against
  success probability p (the probabilities of every outcome no more likely than k, summed; the
  method of scipy.stats.binomtest).
- `sign_test(before, after)`: the paired sign test on per-question outcomes of two models on
  the same questions: only the questions where they differ count, and under no change each
  difference is a fair coin.
"""

import math
from collections.abc import Sequence

_RELATIVE = 1 + 1e-7  # outcomes as likely as the observed one, up to rounding, count as extreme


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
  """Two-sided exact p-value of k successes in n trials with success probability p."""
  if not 0 <= k <= n:
    raise ValueError(f"binomial_test: k={k} must be in 0..n={n}.")
  if not 0 < p < 1:
    raise ValueError(f"binomial_test: p={p} must be in (0, 1).")
  if n == 0:
    return 1.0
  log_p, log_q = math.log(p), math.log1p(-p)
  pmf = [math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                  + i * log_p + (n - i) * log_q) for i in range(n + 1)]  # no overflow at large n
  observed = pmf[k] * _RELATIVE
  return min(1.0, math.fsum(q for q in pmf if q <= observed))


def sign_test(before: Sequence[float], after: Sequence[float]) -> tuple[float, int, int]:
  """(two-sided p-value, questions improved, questions worsened) of paired outcomes."""
  if len(before) != len(after):
    raise ValueError(f"sign_test: {len(before)} outcomes before and {len(after)} after; pair "
                     "them on the same questions.")
  better = sum(a > b for b, a in zip(before, after))
  worse = sum(a < b for b, a in zip(before, after))
  return binomial_test(better, better + worse, 0.5), better, worse
