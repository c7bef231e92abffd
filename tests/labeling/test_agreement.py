"""Labeler agreement: Cohen's and Fleiss' kappa against hand-computed values, on the pairwise
labels of common prompts, and at chance level for random rankings."""

import math
import random

import pytest

from jaxllm.labeling import agreement
from jaxllm.labeling.store import Item
from tests.labeling.test_store import ITEMS, judge


def test_kappa_values_against_hand_computed_ones():
  # Wikipedia's Cohen example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5.
  a = ["yes"] * 25 + ["no"] * 25
  b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
  assert agreement.cohen_kappa(a, b) == pytest.approx(0.4)
  assert agreement.cohen_kappa(a, a) == 1.0
  assert agreement.cohen_kappa(["x", "y", "x", "y"], ["x", "x", "y", "y"]) == pytest.approx(0.0)
  assert math.isnan(agreement.cohen_kappa(["tie"] * 3, ["tie"] * 3))
  # Wikipedia's Fleiss example: 10 items, 14 raters, 5 categories -> 0.210.
  table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
           [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
  assert agreement.fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
  assert agreement.fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == 1.0
  # Chance level: every split of 2 raters over 2 equally used categories, once each -> 0.
  assert agreement.fleiss_kappa([[2, 0], [0, 2], [1, 1], [1, 1]]) == pytest.approx(0.0)


def test_agreement_over_pairwise_labels_of_common_prompts():
  js = [judge(ITEMS[0], [0, 1, 2], "ann"), judge(ITEMS[0], [0, 1, 2], "bob"),
        judge(ITEMS[1], [0, 1], "ann"), judge(ITEMS[1], [1, 0], "bob"),
        judge(ITEMS[2], [0, 1, 2, 3], "ann"),  # bob did not rank c: not compared
        judge(ITEMS[0], [0, 1, 2], "cy")]
  result = agreement.agreement(js)
  ann_bob = result["pairs"][0]
  assert ann_bob["labelers"] == ["ann", "bob"] and ann_bob["prompts"] == 2
  assert ann_bob["items"] == 4 and ann_bob["observed"] == 0.75
  # ann: first x4; bob: first x3, second x1 -> p_e = 1 * 0.75; kappa = 0 (all agreement chance).
  assert ann_bob["cohen_kappa"] == pytest.approx(0.0)
  fleiss = result["fleiss"]
  assert fleiss["labelers"] == ["ann", "bob", "cy"] and fleiss["prompts"] == 1
  assert fleiss["items"] == 3 and fleiss["fleiss_kappa"] is None  # all "first": undefined
  assert "Fleiss' kappa undefined" in agreement.format_agreement(result)
  perfect = agreement.agreement([judge(ITEMS[0], [[2], [0, 1]], n) for n in ("x", "y")])
  assert perfect["pairs"][0]["cohen_kappa"] == 1.0 and perfect["fleiss"]["fleiss_kappa"] == 1.0
  # Labelers ranking at random agree at chance level: both kappas near 0.
  rng = random.Random(0)
  items = [Item(f"q{k}", "Q?", ("w", "x", "y", "z")) for k in range(150)]
  noise = agreement.agreement([judge(item, rng.sample(range(4), 4), n) for item in items
                            for n in ("x", "y", "z")])
  assert all(abs(p["cohen_kappa"]) < 0.08 for p in noise["pairs"])
  assert abs(noise["fleiss"]["fleiss_kappa"]) < 0.05 and noise["fleiss"]["items"] == 900
