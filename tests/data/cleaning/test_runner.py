"""The runner: every document accounted for, dedup across files, same output with any workers."""

import dataclasses
import gzip
import json

import pytest

from jaxllm import config as config_lib
from jaxllm.data import readers
from jaxllm.data.cleaning import runner
from jaxllm.errors import ConfigError
from jaxllm.recipes import prepare_data
from tests.data.cleaning.texts import FRENCH, GERMAN, english_doc
from tests.helpers import ROOT

PAGE = ("<html><body><nav>Home | About</nav><article>"
        + "".join(f"<p>{line}</p>" for line in english_doc(50).split("\n"))
        + "</article></body></html>")


def _config(tmp_path, **overrides):
  c = config_lib.load_config_file(ROOT / "configs/data/clean.py", "workers=1")
  c.input = f"{tmp_path}/in/*"
  c.separator = "\\n\\n"
  blocklist = tmp_path / "blocklist.txt"
  blocklist.write_text("blocked.example\n")
  c.url.blocklist = str(blocklist)
  c.update(overrides)
  return c


def _write_inputs(tmp_path):
  """14 records over four files; the comments say which step drops each."""
  d = tmp_path / "in"
  d.mkdir()
  near = english_doc(1).split(" ")
  near[5], near[40] = "lighthouse", "kettle"
  a = [{"text": english_doc(0), "url": "https://news.example/a", "id": "keep-0"},
       {"text": english_doc(1), "id": "keep-1"},
       {"text": GERMAN + " " + GERMAN, "id": "german"},  # language
       {"text": english_doc(0).replace(".", "!").replace(" the ", " The  "),  # exact
        "id": "dup-0"},
       {"text": " ".join(near), "id": "near-1"},  # minhash dedup
       {"text": "Too short to keep.", "id": "short"},  # gopher_repetition (top_2_gram)
       {"text": english_doc(2), "url": "http://www.blocked.example/x", "id": "blocked"},  # url
       {"text": "   "},  # read: empty
       {"text": english_doc(3) + "\nMail me at joe@mail.example.com or 8.8.8.8 now.",
        "id": "pii"}]
  (d / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a))
  (d / "b.txt").write_text("\n\n".join([english_doc(4), FRENCH, english_doc(5)]))
  (d / "c.html").write_text(PAGE)
  with gzip.open(d / "d.jsonl.gz", "wt") as f:
    f.write(json.dumps({"text": english_doc(6), "id": "gz"}) + "\n")
  return 14


def _output(out_dir):
  counts = readers.ReadCounts()
  paths = readers.expand_inputs(f"{out_dir}/shard-*.jsonl.gz")
  return [d for p in paths for d in readers.iter_documents(p, counts)], paths


def test_every_document_is_accounted_for(tmp_path):
  num_records = _write_inputs(tmp_path)
  stats = runner.run(_config(tmp_path), tmp_path / "out")
  steps = {s["name"]: s for s in stats["steps"]}
  assert list(steps) == ["read", "url", "html", "language", "gopher_repetition",
                         "gopher_quality", "c4_quality", "fineweb_quality", "pii", "exact_dedup",
                         "minhash_dedup"]
  assert steps["read"]["docs_in"] == num_records and steps["read"]["reasons"] == {"empty": 1}
  previous = None
  for s in stats["steps"]:
    assert s["docs_in"] == s["kept"] + s["dropped"], s["name"]
    assert s["dropped"] == sum(s["reasons"].values()), s["name"]
    assert len(s["examples"]) == min(3, s["dropped"]) or s["name"] == "read"
    if previous:
      assert (s["docs_in"], s["bytes_in"]) == (previous["kept"], previous["bytes_out"]), s["name"]
    previous = s
  assert {k: s["dropped"] for k, s in steps.items() if s["dropped"]} == {
      "read": 1, "url": 1, "language": 2, "gopher_repetition": 1, "exact_dedup": 1,
      "minhash_dedup": 1}
  assert steps["html"]["modified"] == 1 and steps["pii"]["modified"] == 1
  assert steps["c4_quality"]["modified"] == 1  # the page: its blank lines go
  assert steps["exact_dedup"]["examples"][0]["reason"] == "exact_duplicate (of keep-0)"
  assert steps["minhash_dedup"]["examples"][0]["reason"] == "near_duplicate (of keep-1)"
  assert steps["url"]["examples"] == [
      {"id": "blocked", "reason": "url_domain (blocked.example)", "text": english_doc(2)[:200]}]
  assert {e["id"] for e in steps["language"]["examples"]} == {"german", f"{tmp_path}/in/b.txt#1"}

  docs, paths = _output(tmp_path / "out")
  assert [p.name for p in paths] == ["shard-00000-of-00001.jsonl.gz"]
  assert [d.id for d in docs] == ["keep-0", "keep-1", "pii", f"{tmp_path}/in/b.txt#0",
                                  f"{tmp_path}/in/b.txt#2", f"{tmp_path}/in/c.html", "gz"]
  assert stats["output"]["docs"] == len(docs) == steps["minhash_dedup"]["kept"]
  assert sum(len(d.text.encode()) for d in docs) == stats["output"]["text_bytes"]
  assert docs[0].url == "https://news.example/a" and docs[0].metadata["language"] == "en"
  assert docs[2].text.endswith("Mail me at email@example.com or 22.214.171.124 now.")
  assert docs[5].metadata["extracted_from"] == "html" and "Home" not in docs[5].text
  assert json.loads((tmp_path / "out/stats.json").read_text())["steps"] == stats["steps"]
  assert not (tmp_path / "out/tmp").exists()
  assert "minhash_dedup" in runner.summary_table(stats)


def test_many_workers_and_shards_give_the_same_output(tmp_path):
  _write_inputs(tmp_path)
  one = runner.run(_config(tmp_path, docs_per_shard=3), tmp_path / "one")
  two = runner.run(_config(tmp_path, docs_per_shard=3, num_workers=2), tmp_path / "two")
  assert two["workers"] == 2 and one["steps"] == two["steps"]
  docs_one, paths = _output(tmp_path / "one")
  docs_two, _ = _output(tmp_path / "two")
  assert [p.name for p in paths] == [f"shard-0000{i}-of-00003.jsonl.gz" for i in range(3)]
  assert docs_one == docs_two and len(docs_one) == 7


def test_process_split_is_disjoint_and_covering(tmp_path):
  files = [f"f{i}" for i in range(7)]
  parts = [runner.process_files(files, i, 3) for i in range(3)]
  assert sorted(f for part in parts for f in part) == files and sum(map(len, parts)) == 7
  assert parts[0] == ["f0", "f3", "f6"]

  _write_inputs(tmp_path)
  kw = {"process_count": 2, "dedup": {"exact": False, "minhash": False, "ngram": 5, "bands": 14,
                                      "rows": 8, "seed": 1}}
  whole = runner.run(_config(tmp_path, dedup=kw["dedup"]), tmp_path / "whole")
  ids = []
  for i in range(2):
    stats = runner.run(_config(tmp_path, process_index=i, **kw), tmp_path / "split")
    assert stats["files"] == 2
    ids.append([d.id for d in _output(tmp_path / f"split/process-0000{i}-of-00002")[0]])
  assert not set(ids[0]) & set(ids[1])
  assert sorted(ids[0] + ids[1]) == sorted(d.id for d in _output(tmp_path / "whole")[0])
  assert whole["output"]["docs"] == len(ids[0] + ids[1])

  idle = runner.run(_config(tmp_path, process_index=5, process_count=6), tmp_path / "idle")
  assert idle["files"] == 0 and idle["output"]["docs"] == 0
  assert _output(tmp_path / "idle/process-00005-of-00006")[0] == []


def test_config_mistakes_name_the_field(tmp_path):
  _write_inputs(tmp_path)
  with pytest.raises(ConfigError, match="config.steps=.*'langauge'"):
    prepare_data.run(_config(tmp_path, steps=("url", "langauge")), tmp_path / "o")
  with pytest.raises(ConfigError, match=r"config.process_index=2 must be in \[0, "):
    prepare_data.run(_config(tmp_path, process_index=2, process_count=2), tmp_path / "o")
  with pytest.raises(ConfigError, match="config.input is empty"):
    prepare_data.run(_config(tmp_path, input=""), tmp_path / "o")


def test_clean_documents_counts_edits_and_text_left_empty():
  def shout(doc):
    doc.text = doc.text.upper() if doc.text != "same" else doc.text

  def no_x(doc):
    doc.text = doc.text.replace("X", "")
    return "has_q (found q)" if "Q" in doc.text else None

  docs = [readers.Document(t, f"d{i}") for i, t in enumerate(["ab", "x", "same", "q", "éé"])]
  stats = [runner.StepStats("shout"), runner.StepStats("no_x")]
  kept = list(runner.clean_documents(docs, [("shout", shout), ("no_x", no_x)], stats, 1,
                                       batch_size=2))
  assert [(d.id, d.text, n) for d, n in kept] == [("d0", "AB", 2), ("d2", "same", 4),
                                                 ("d4", "ÉÉ", 4)]
  assert dataclasses.asdict(stats[0]) == {
      "name": "shout", "docs_in": 5, "bytes_in": 12, "kept": 5, "dropped": 0, "modified": 4,
      "bytes_out": 12, "reasons": {}, "examples": []}
  assert (stats[1].docs_in, stats[1].kept, stats[1].dropped, stats[1].modified) == (5, 3, 2, 0)
  assert stats[1].reasons == {"empty": 1, "has_q": 1}
  assert stats[1].examples == [{"id": "d1", "reason": "empty (no text left after no_x)",
                                "text": ""}]
