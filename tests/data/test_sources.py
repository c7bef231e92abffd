"""TFDS ArrayRecord sources from local files: splits, kinds, bad input, caching, catalog path."""

import json
import os

import pytest

from jaxllm.data import sources
from jaxllm.errors import ConfigError, UserError


def _jsonl(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


def _texts(source):
  return sorted(source[i]["text"] for i in range(len(source)))


def test_text_files_with_held_out_fraction(tmp_path):
  texts = [f"document number {i}" for i in range(200)]
  _jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts[:120]])
  _jsonl(tmp_path / "b.jsonl", [{"text": t} for t in texts[120:]])
  open_ = lambda split: sources.open_source(str(tmp_path / "*.jsonl"), "text", split,
                                            data_dir=tmp_path / "data", eval_fraction=0.1)
  train, valid = open_("train"), open_("validation")
  assert not set(_texts(train)) & set(_texts(valid))
  assert sorted(_texts(train) + _texts(valid)) == sorted(texts)
  assert 8 <= len(valid) <= 35  # about 10 % by id hash
  assert train.counts["records"] == 200 and train.counts["files"] == 2  # counted once


def test_bad_records_are_counted_or_named(tmp_path):
  data = tmp_path / "c.jsonl"
  data.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9 bytes"}\n{"text": "   "}\nnot json\n'
                   b'{"other": 1}\n')
  with pytest.raises(UserError, match=r"c\.jsonl:4: invalid JSON"):
    sources.open_source(str(data), "text", "train", data_dir=tmp_path / "d1")
  src = sources.open_source(str(data), "text", "train", data_dir=tmp_path / "d2",
                            skip_malformed=True)
  assert _texts(src) == ["caf\ufffd bytes", "fine"]
  assert src.counts == {"files": 1, "records": 2, "bytes": src.counts["bytes"],
                        "malformed_lines": 2, "invalid_utf8": 1, "empty": 1}


def test_txt_with_separator_and_eval_files(tmp_path):
  (tmp_path / "train.txt").write_text("one\n%\ntwo\n%\nthree\n")
  (tmp_path / "eval.txt").write_text("four")
  kw = {"data_dir": tmp_path / "data", "eval_input": str(tmp_path / "eval.txt"), "separator": "%"}
  assert _texts(sources.open_source(str(tmp_path / "train.txt"), "text", "train", **kw)) == [
      "one", "three", "two"]
  assert _texts(sources.open_source(str(tmp_path / "train.txt"), "text", "validation",
                                    **kw)) == ["four"]


def test_structured_kinds(tmp_path):
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
  conv = _jsonl(tmp_path / "sft.jsonl", [{"messages": messages}])
  src = sources.open_source(str(conv), "conversations", "train", data_dir=tmp_path / "d")
  assert src[0]["messages"] == messages
  pref = _jsonl(tmp_path / "pref.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
  rec = sources.open_source(str(pref), "preferences", "train", data_dir=tmp_path / "d")[0]
  assert (rec["prompt"], rec["chosen"], rec["rejected"], rec["margin"]) == ("p", "c", "r", None)
  turns = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
  pref2 = _jsonl(tmp_path / "pref2.jsonl", [{"prompt": turns, "chosen": "c", "rejected": "r",
                                             "margin": 1.5}])
  rec = sources.open_source(str(pref2), "preferences", "train", data_dir=tmp_path / "d")[0]
  assert (rec["prompt"], rec["margin"]) == (turns, 1.5)
  rl = _jsonl(tmp_path / "rl.jsonl", [{"prompt": "2+2?", "answer": 4}])
  assert sources.open_source(str(rl), "rl_prompts", "train",
                             data_dir=tmp_path / "d")[0]["answer"] == "4"
  bad = _jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "robot", "content": "x"}]}])
  with pytest.raises(UserError, match=r"bad\.jsonl:1: messages\[0\] must be an object with 'role'"):
    sources.open_source(str(bad), "conversations", "train", data_dir=tmp_path / "d")
  bad = _jsonl(tmp_path / "bad2.jsonl", [{"prompt": "p", "chosen": "c"}])
  with pytest.raises(UserError, match=r"bad2\.jsonl:1: field 'rejected' must be a string"):
    sources.open_source(str(bad), "preferences", "train", data_dir=tmp_path / "d")
  for i, (record, match) in enumerate([
      ({"prompt": [{"role": "assistant", "content": "a"}], "chosen": "c", "rejected": "r"},
       "must end with a user or tool message"),
      ({"prompt": 3, "chosen": "c", "rejected": "r"}, "'prompt' must be a string or a list"),
      ({"prompt": "p", "chosen": "c", "rejected": "r", "margin": "big"},
       "'margin' must be a number")]):
    bad = _jsonl(tmp_path / f"badpref{i}.jsonl", [record])
    with pytest.raises(UserError, match=rf"badpref{i}\.jsonl:1: .*{match}"):
      sources.open_source(str(bad), "preferences", "train", data_dir=tmp_path / "d")


def test_prepared_once_and_again_when_input_changes(tmp_path, capsys):
  data = _jsonl(tmp_path / "x.jsonl", [{"text": "a"}, {"text": "b"}])
  first = sources.open_source(str(data), "text", "train", data_dir=tmp_path / "d")
  out = capsys.readouterr().out
  assert out.startswith("data: preparing jaxllm_text/") and len(out.splitlines()) == 1
  assert "Unknown size" not in out  # TFDS's download lines: local files download nothing
  again = sources.open_source(str(data), "text", "train", data_dir=tmp_path / "d")
  assert first.name == again.name and capsys.readouterr().out == ""
  _jsonl(data, [{"text": "a"}, {"text": "b"}, {"text": "c"}])
  changed = sources.open_source(str(data), "text", "train", data_dir=tmp_path / "d")
  assert changed.name != first.name and _texts(changed) == ["a", "b", "c"]
  # Named by content, not place or time: the same files elsewhere, touched, read the same name.
  moved = tmp_path / "elsewhere" / "x.jsonl"
  moved.parent.mkdir()
  moved.write_bytes(data.read_bytes())
  os.utime(moved, (1, 1))
  elsewhere = sources.open_source(str(moved), "text", "train", data_dir=tmp_path / "d")
  assert elsewhere.name == changed.name
  # The name an older jaxllm gave it (paths, sizes, times) stays known, for its checkpoints.
  stat = moved.stat()
  import hashlib
  legacy = hashlib.sha256(json.dumps(["text", {"text_field": "text", "separator": None,
                                               "skip_malformed": False,
                                               "validation_fraction": 0.0, "n_train": 1}],
                                     sort_keys=True).encode())
  legacy.update(f"{moved.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
  assert elsewhere.aliases == (f"jaxllm_text/{legacy.hexdigest()[:16]}",)


def test_catalog_name_path_loads_a_prepared_dataset(tmp_path):
  data = _jsonl(tmp_path / "x.jsonl", [{"text": "a"}, {"text": "b"}])
  local = sources.open_source(str(data), "text", "train", data_dir=tmp_path / "d")
  by_name = sources.open_source(f"tfds:{local.name}", "text", "train", data_dir=tmp_path / "d")
  assert _texts(by_name) == ["a", "b"]
  with pytest.raises(ConfigError, match="has splits"):
    sources.open_source(f"tfds:{local.name}", "text", "test", data_dir=tmp_path / "d")
  with pytest.raises(ConfigError, match="not a TFDS dataset"):
    sources.open_source("tfds:no_such_dataset_xyz", "text", "train", data_dir=tmp_path / "d")


def test_missing_input_names_the_glob(tmp_path):
  with pytest.raises(UserError, match="matches no files"):
    sources.open_source(str(tmp_path / "none*.jsonl"), "text", "train", data_dir=tmp_path)


def test_order_does_not_depend_on_where_the_files_live(tmp_path):
  rows = [{"text": f"t{i}"} for i in range(50)]
  for where in ("a", "b/c"):
    (tmp_path / where).mkdir(parents=True)
    _jsonl(tmp_path / where / "x.jsonl", rows)
  one, two = (sources.open_source(str(tmp_path / w / "x.jsonl"), "text", "train",
                                  data_dir=tmp_path / "d", eval_fraction=0.2) for w in ("a", "b/c"))
  assert [one[i] for i in range(len(one))] == [two[i] for i in range(len(two))]
