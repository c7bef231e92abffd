"""experiments/prepare_data.py as a user runs it: shards and stats out, clear errors, exit codes."""

import json
import subprocess
import sys

import pytest

from jaxllm.data import readers
from tests.data.cleaning.texts import GERMAN, english_doc
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses


def _run(workdir, *args):
  cmd = [sys.executable, "experiments/prepare_data.py", "--config=configs/data/clean.py",
         f"--workdir={workdir}", *args]
  return subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_end_to_end_writes_readable_shards_and_stats(tmp_path):
  (tmp_path / "a.jsonl").write_text("".join(
      json.dumps({"text": t, "url": f"https://site.example/{i}"}) + "\n"
      for i, t in enumerate([english_doc(0), GERMAN, english_doc(1), english_doc(0)])))
  (tmp_path / "b.txt").write_text(f"{english_doc(2)}\n%\n{english_doc(3)}\n%\n")
  out = tmp_path / "out"
  result = _run(out, f"--config.input={tmp_path}/*.jsonl,{tmp_path}/*.txt",
                "--config.separator=%", "--config.num_workers=2")
  assert result.returncode == 0, result.stderr
  assert "exact_dedup" in result.stdout
  assert "4 documents in 1 shard(s); 2 file(s)" in result.stdout
  docs = list(readers.iter_documents(out / "shard-00000-of-00001.jsonl.gz", readers.ReadCounts()))
  assert [d.id for d in docs] == [f"{tmp_path}/a.jsonl:1", f"{tmp_path}/a.jsonl:3",
                                  f"{tmp_path}/b.txt#0", f"{tmp_path}/b.txt#1"]
  assert docs[0].url == "https://site.example/0" and docs[0].metadata["language"] == "en"
  stats = json.loads((out / "stats.json").read_text())
  assert stats["steps"][0] == {**stats["steps"][0], "docs_in": 7, "kept": 6, "dropped": 1}
  assert json.loads((out / "config.json").read_text())["separator"] == "%"


def test_malformed_line_exits_2_naming_file_and_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"text": english_doc(0)}) + "\n{not json}\n")
  result = _run(tmp_path / "out", f"--config.input={bad}")
  assert result.returncode == 2
  assert result.stderr.startswith(f"error: {bad}:2: invalid JSON")
  assert "set skip_malformed" in result.stderr and "Traceback" not in result.stderr

  result = _run(tmp_path / "out", f"--config.input={bad}", "--config.skip_malformed=true")
  assert result.returncode == 0, result.stderr
  read = json.loads((tmp_path / "out/stats.json").read_text())["steps"][0]
  assert read["reasons"] == {"malformed_line": 1} and read["kept"] == 1

  result = _run(tmp_path / "out", f"--config.input={tmp_path}/missing/*.jsonl")
  assert result.returncode == 2 and "matches no files" in result.stderr
