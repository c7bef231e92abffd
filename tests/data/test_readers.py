"""Readers: every record is yielded or counted; user mistakes name file:line and the fix."""

import gzip
import json

import pytest

from jaxllm.data import readers
from jaxllm.errors import UserError


def _read(path, **kw):
  counts = readers.ReadCounts()
  return list(readers.iter_documents(path, counts, **kw)), counts


def test_jsonl_fields_ids_and_counts(tmp_path):
  path = tmp_path / "a.jsonl"
  path.write_text(json.dumps({"text": "héllo", "url": "http://x.org/a"}) + "\n\n"
                  + json.dumps({"text": "two", "id": "doc-7", "metadata": {"k": 1}}) + "\n"
                  + json.dumps({"text": "  \n "}) + "\n")
  docs, counts = _read(path)
  assert [(d.text, d.id, d.url, d.metadata) for d in docs] == [
      ("héllo", f"{path}:1", "http://x.org/a", {}), ("two", "doc-7", None, {"k": 1})]
  assert counts.as_dict() == {"files": 1, "records": 2, "bytes": 6 + 3, "malformed_lines": 0,
                              "invalid_utf8": 0, "empty": 1}


def test_malformed_line_raises_with_file_line_or_is_counted(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"text": "ok"}\n{"text": "unterminated\n[1, 2]\n{"body": "no text"}\n')
  with pytest.raises(UserError, match=rf"{path}:2: invalid JSON .*skip_malformed"):
    _read(path)
  not_object = tmp_path / "list.jsonl"
  not_object.write_text('{"text": "ok"}\n[1, 2]\n')
  with pytest.raises(UserError, match=rf"{not_object}:2: got a JSON list"):
    list(readers.iter_jsonl(not_object, readers.ReadCounts()))
  docs, counts = _read(path, skip_malformed=True)
  assert [d.text for d in docs] == ["ok"]
  assert counts.malformed_lines == 3 and counts.records == 1  # bad JSON, list, missing field


def test_missing_text_field_names_the_field(tmp_path):
  path = tmp_path / "f.jsonl"
  path.write_text('{"content": "x"}\n{"text": 3}\n')
  with pytest.raises(UserError, match=rf"{path}:1: field 'text' is missing; set text_field"):
    _read(path)
  docs, _ = _read(path, text_field="content", skip_malformed=True)
  assert [d.text for d in docs] == ["x"]


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
  path = tmp_path / "u.jsonl"
  path.write_bytes(b'{"text": "caf\xe9 ok"}\n{"text": "fine"}\n{"text": "lone \\ud800"}\n')
  docs, counts = _read(path)
  assert [d.text for d in docs] == ["caf\ufffd ok", "fine", "lone \ufffd"]
  assert counts.invalid_utf8 == 2
  assert counts.bytes == sum(len(d.text.encode()) for d in docs)

  txt = tmp_path / "u.txt"
  txt.write_bytes(b"good one\n\nbad \xff\xfe two\n\nthree")
  docs, counts = _read(txt, separator="\n\n")
  assert [d.text for d in docs] == ["good one", "bad \ufffd\ufffd two", "three"]
  assert counts.invalid_utf8 == 1


def test_txt_whole_file_and_separators(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("first doc\nline two\n\n\n\nsecond\n\n  \n\nthird\n")
  docs, counts = _read(path)
  assert [(d.text, d.id) for d in docs] == [(path.read_text().strip(), str(path))]
  docs, counts = _read(path, separator="\n\n")
  assert [d.text for d in docs] == ["first doc\nline two", "second", "third"]
  assert [d.id for d in docs] == [f"{path}#0", f"{path}#2", f"{path}#4"]
  assert counts.empty == 2 and counts.records == 3  # "" between the 4 newlines, and "  "

  fortunes = tmp_path / "f.txt"
  fortunes.write_text("A 50% chance.\n%\nSecond\nfortune\n%\n%\n")
  docs, counts = _read(fortunes, separator="%")
  assert [d.text for d in docs] == ["A 50% chance.", "Second\nfortune"]
  assert counts.empty == 2


def test_jsonl_gz_and_html(tmp_path):
  path = tmp_path / "z.jsonl.gz"
  with gzip.open(path, "wt") as f:
    f.write('{"text": "zipped"}\n')
  docs, counts = _read(path)
  assert [d.text for d in docs] == ["zipped"] and counts.files == 1

  html = tmp_path / "p.html"
  html.write_text("<html><body><p>Hi</p></body></html>")
  docs, _ = _read(html)
  assert docs[0].metadata == {"format": "html"} and docs[0].text.startswith("<html>")

  truncated = tmp_path / "cut.jsonl.gz"
  truncated.write_bytes(path.read_bytes()[:-6])
  with pytest.raises(UserError, match="cut.jsonl.gz.*cannot read"):
    _read(truncated)


def test_expand_inputs_and_errors(tmp_path):
  for name in ("b.txt", "a.jsonl", "c.md"):
    (tmp_path / name).write_text("x")
  got = readers.expand_inputs(f"{tmp_path}/*.txt,{tmp_path}/*.jsonl,{tmp_path}/b.txt")
  assert got == [tmp_path / "a.jsonl", tmp_path / "b.txt"]
  assert readers.expand_inputs([str(tmp_path / "a.jsonl")]) == [tmp_path / "a.jsonl"]
  with pytest.raises(UserError, match=r"'.*/nothing\*\.txt' matches no files"):
    readers.expand_inputs(f"{tmp_path}/a.jsonl,{tmp_path}/nothing*.txt")
  with pytest.raises(UserError, match=r"c.md: unsupported file type; supported: .txt"):
    _read(tmp_path / "c.md")
