"""The crawl: pages reach min_words, junk is labelled and comes after its originals, check
counts."""

from collections import Counter

import pytest

from jaxllm.data import crawl


def test_pages_join_documents_until_min_words():
  docs = ["one two three", "four five", "six seven eight nine", "ten"]
  assert crawl.pages(docs, min_words=5) == ["one two three\n\nfour five",
                                            "six seven eight nine\n\nten"]
  assert crawl.pages(["a b"], min_words=5) == ["a b"]


def test_make_crawl_labels_and_orders_the_junk():
  docs = [f"Person {i} lives in town {i % 7} and works as a baker every day." for i in range(200)]
  records = crawl.make_crawl(docs, seed=3, min_words=20)
  kinds = Counter(r["metadata"]["planted"] for r in records)
  pages = sum(kinds[k] for k in crawl.KEPT_KINDS)
  assert pages == len(crawl.pages(docs, 20))
  n = round(pages * 0.25 / len(crawl.DROPPED_KINDS))
  assert all(kinds[k] == n for k in crawl.DROPPED_KINDS)
  assert len({r["id"] for r in records}) == len(records)
  index = {r["text"]: i for i, r in reversed(list(enumerate(records)))}  # first occurrence
  for i, r in enumerate(records):
    if r["metadata"]["planted"] == "duplicate":
      assert index[r["text"]] < i and records[index[r["text"]]]["metadata"]["planted"] == "page"
    if r["metadata"]["planted"] == "html":
      assert r["metadata"]["format"] == "html" and r["text"].startswith("<html>")
    if r["metadata"]["planted"] == "blocked_url":
      assert "xxx" in r["url"]
  assert crawl.make_crawl(docs, seed=3, min_words=20) == records


def test_check_counts_kept_pages_per_kind():
  records = [{"id": i, "metadata": {"planted": k}}
             for i, k in enumerate(["page", "page", "pii", "spam", "duplicate"])]
  out = crawl.check(records, [0, 2, 3, "not-planted"])
  assert out["page"] == {"in": 2, "kept": 1, "kept_fraction": 0.5}
  assert out["stub"]["kept_fraction"] is None
  assert out["content_kept"] == pytest.approx(2 / 3)
  assert out["junk_removed"] == pytest.approx(1 / 2)
