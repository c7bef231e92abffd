"""How much labelers agree on the pairwise labels their rankings imply (first better / second
better / tie): Cohen's kappa for every two labelers, Fleiss' kappa over all of them."""

import itertools
import math
from collections.abc import Iterable, Sequence

from jaxllm.labeling.store import PAIR_LABELS, latest, pair_labels


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
  """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e).

  p_o is the share of items they label alike, p_e the chance of agreeing given each rater's own
  label frequencies. NaN when it is undefined (no items, or both raters always use one and the
  same label: p_e = 1).
  """
  if len(first) != len(second):
    raise ValueError(f"{len(first)} and {len(second)} labels: rate the same items.")
  n = len(first)
  if n == 0:
    return math.nan
  observed = sum(a == b for a, b in zip(first, second)) / n
  categories = set(first) | set(second)
  expected = sum((list(first).count(c) / n) * (list(second).count(c) / n) for c in categories)
  if expected >= 1.0:
    return math.nan
  return (observed - expected) / (1.0 - expected)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
  """Fleiss' kappa from an items x categories table of how many raters chose each category
  (the same number of raters n >= 2 on every item): (P_bar - P_e) / (1 - P_e).

  P_bar is the mean over items of the share of agreeing rater pairs, P_e the sum of the squared
  overall category shares. NaN when undefined (no items, or every rating in one category).
  """
  if not counts:
    return math.nan
  raters = sum(counts[0])
  if raters < 2 or any(sum(row) != raters for row in counts):
    raise ValueError("every item needs the same number (>= 2) of ratings.")
  items = len(counts)
  p_bar = sum((sum(c * c for c in row) - raters) / (raters * (raters - 1))
              for row in counts) / items
  shares = [sum(row[k] for row in counts) / (items * raters) for k in range(len(counts[0]))]
  p_e = sum(p * p for p in shares)
  if p_e >= 1.0:
    return math.nan
  return (p_bar - p_e) / (1.0 - p_e)


def _finite(x: float) -> float | None:
  return None if math.isnan(x) else round(x, 4)


def agreement(judgements: Iterable[dict], labelers: Sequence[str] | None = None) -> dict:
  """Agreement of labelers on the pairwise labels of the prompts they all ranked.

  Each (prompt, pair of responses i < j) is one item labeled first / second / tie. Returns
  {"labelers", "pairs": [{"labelers": [a, b], "prompts", "items", "observed", "cohen_kappa"}],
  "fleiss": {"labelers", "prompts", "items", "fleiss_kappa"}} (the Fleiss part over the prompts
  every one of `labelers`, default all, ranked). Kappas are None where undefined.
  """
  newest = latest(judgements)
  by_labeler: dict[str, dict[str, dict]] = {}
  for (labeler, pid), j in newest.items():
    by_labeler.setdefault(labeler, {})[pid] = pair_labels(j["ranking"])
  names = sorted(by_labeler) if labelers is None else list(labelers)
  for name in names:
    by_labeler.setdefault(name, {})

  def common_items(group):
    prompts = sorted(set.intersection(*(set(by_labeler[n]) for n in group)))
    keys = [(p, pair) for p in prompts for pair in sorted(by_labeler[group[0]][p])
            if all(pair in by_labeler[n][p] for n in group)]
    return prompts, keys

  pairs = []
  for a, b in itertools.combinations(names, 2):
    prompts, keys = common_items([a, b])
    la = [by_labeler[a][p][pair] for p, pair in keys]
    lb = [by_labeler[b][p][pair] for p, pair in keys]
    observed = sum(x == y for x, y in zip(la, lb)) / len(keys) if keys else math.nan
    pairs.append({"labelers": [a, b], "prompts": len(prompts), "items": len(keys),
                  "observed": _finite(observed), "cohen_kappa": _finite(cohen_kappa(la, lb))})
  fleiss = {"labelers": names, "prompts": 0, "items": 0, "fleiss_kappa": None}
  if len(names) >= 2:
    prompts, keys = common_items(names)
    table = [[sum(by_labeler[n][p][pair] == c for n in names) for c in PAIR_LABELS]
             for p, pair in keys]
    fleiss.update(prompts=len(prompts), items=len(keys),
                  fleiss_kappa=_finite(fleiss_kappa(table)))
  return {"labelers": names, "pairs": pairs, "fleiss": fleiss}


def format_agreement(result: dict) -> str:
  """The agreement report as lines of text."""
  def show(x):
    return "undefined" if x is None else f"{x:.3f}"
  lines = [f"labelers: {', '.join(result['labelers']) or '(none)'}"]
  for p in result["pairs"]:
    lines.append(f"  {p['labelers'][0]} vs {p['labelers'][1]}: {p['prompts']} prompts, "
                 f"{p['items']} pairwise items, observed agreement {show(p['observed'])}, "
                 f"Cohen's kappa {show(p['cohen_kappa'])}")
  f = result["fleiss"]
  if len(f["labelers"]) >= 2:
    lines.append(f"  all {len(f['labelers'])}: {f['prompts']} prompts ranked by all, "
                 f"{f['items']} pairwise items, Fleiss' kappa {show(f['fleiss_kappa'])}")
  else:
    lines.append("  agreement needs at least two labelers.")
  return "\n".join(lines)
