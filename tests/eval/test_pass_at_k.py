"""pass@k: the unbiased estimator against its definition by enumeration."""

import itertools
import math

import pytest

from jaxllm.eval.pass_at_k import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize("n,c,k", [(5, 2, 1), (5, 2, 2), (5, 2, 3), (6, 1, 4), (4, 0, 2),
                                   (4, 4, 1)])
def test_matches_the_share_of_k_subsets_with_a_right_sample(n, c, k):
  samples = [True] * c + [False] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  want = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
  assert pass_at_k(n, c, k) == pytest.approx(want)
  assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_mean_and_errors():
  assert mean_pass_at_k([[True, False], [False, False]], 1) == pytest.approx(0.25)
  assert pass_at_k(200, 199, 100) == 1.0
  with pytest.raises(ValueError, match="k <= n"):
    pass_at_k(3, 1, 4)
