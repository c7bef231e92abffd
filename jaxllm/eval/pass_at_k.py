"""pass@k: the chance that at least one of k samples is right, estimated from n >= k samples.

Unbiased estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"), with
c right samples among n: pass@k = 1 - C(n - c, k) / C(n, k), computed as a product so that
large n does not overflow. Averaged over problems.
"""

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Estimated pass@k of one problem with c of n samples right."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}.")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
  """Mean pass@k over problems, each given as the correctness of its n samples."""
  if len(correct) == 0:
    raise ValueError("mean_pass_at_k needs at least one problem.")
  return float(np.mean([pass_at_k(len(c), int(np.sum(c)), k) for c in correct]))
