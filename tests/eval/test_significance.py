"""The exact tests of the report card against scipy's."""

import random

import pytest
from scipy import stats

from jaxllm.eval import significance


@pytest.mark.parametrize("k,n,p", [(0, 0, 0.5), (3, 10, 0.5), (10, 10, 0.5), (57, 100, 0.5),
                                   (95, 100, 0.5), (2, 30, 0.2), (40, 50, 0.9), (0, 5, 0.3),
                                   (1100, 2000, 0.5), (900, 5000, 0.2)])
def test_binomial_test_matches_scipy(k, n, p):
  expected = 1.0 if n == 0 else stats.binomtest(k, n, p).pvalue
  assert significance.binomial_test(k, n, p) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_sign_test_counts_only_the_questions_that_changed():
  rng = random.Random(0)
  before = [rng.random() < 0.3 for _ in range(200)]
  after = [b or rng.random() < 0.2 for b in before]  # some questions flip to right
  p, better, worse = significance.sign_test(before, after)
  assert worse == 0 and better == sum(a and not b for b, a in zip(before, after)) > 10
  assert p == pytest.approx(stats.binomtest(better, better, 0.5).pvalue)
  # the same changes with many unchanged questions added: the same p-value
  assert significance.sign_test(before + [1] * 50, after + [1] * 50)[0] == p
  assert significance.sign_test(after, before)[:1] == (p,)  # symmetric
  assert significance.sign_test([0, 1, 0, 1], [1, 0, 1, 0]) == (pytest.approx(1.0), 2, 2)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="pair them on the same questions"):
    significance.sign_test([1, 0], [1])
  with pytest.raises(ValueError, match="k=5"):
    significance.binomial_test(5, 3)
