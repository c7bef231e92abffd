"""experiments/train_tokenizer.py as a user runs it: files written and loadable, clear errors."""

import json
import subprocess
import sys

import pytest
import transformers

from jaxllm import config as config_lib
from jaxllm.data.tokenizer import Tokenizer
from tests.data.test_tokenizer import varied_corpus
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses


def _run(workdir, *args):
  cmd = [sys.executable, "experiments/train_tokenizer.py", "--config=configs/tokenizer/bpe.py",
         f"--workdir={workdir}", *args]
  return subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True)


@pytest.fixture
def inputs(tmp_path):
  """60 JSONL documents (one blank-text record) and one .txt file of 20 documents."""
  docs = varied_corpus(80, seed=4)
  data = tmp_path / "data"
  data.mkdir()
  records = [{"text": t, "url": f"https://x.org/{i}"} for i, t in enumerate(docs[:60])]
  records.insert(7, {"text": "   "})
  (data / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  (data / "b.txt").write_text("\n\n\n".join(docs[60:]))
  return data, docs


def test_trains_writes_loadable_files_and_reports_heldout_compression(tmp_path, inputs):
  data, docs = inputs
  out = tmp_path / "out"
  result = _run(out, f"--config.input={data}/*.jsonl,{data}/*.txt", "--config.vocab_size=400",
                "--config.separator=\n\n\n", "--config.heldout_fraction=0.1")
  assert result.returncode == 0, result.stderr
  stats = json.loads((out / "stats.json").read_text())
  # Documents 0, 10, 20, ... of the 80 read (sorted inputs: a.jsonl, then b.txt) are held out;
  # the reader strips .txt documents and keeps JSONL text as it is.
  heldout = [d if i < 60 else d.strip() for i, d in enumerate(docs)][0:80:10]
  assert stats["heldout"]["documents"] == 8 and stats["train"]["documents"] == 72
  assert stats["read"]["empty"] == 1 and stats["read"]["records"] == 80
  tok = Tokenizer.from_file(out)
  assert tok.vocab_size == stats["vocab_size"] == 400
  num_bytes = sum(len(d.encode()) for d in heldout)
  num_tokens = sum(len(tok.encode(d)) for d in heldout)
  assert (stats["heldout"]["bytes"], stats["heldout"]["tokens"]) == (num_bytes, num_tokens)
  assert f"held-out compression: {num_bytes / num_tokens:.3f} bytes/token" in result.stdout
  assert "dropped 1 empty" in result.stdout
  hf = transformers.AutoTokenizer.from_pretrained(out)
  text = "The cat sat on the mat, naïve café 42.\n"
  assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
  assert json.loads((out / "config.json").read_text())["vocab_size"] == 400


def test_config_argument_sets_size_and_kind():
  module = config_lib.import_file(ROOT / "configs/tokenizer/bpe.py")
  assert "python experiments/train_tokenizer.py" in module.__doc__
  config = module.get_config("vocab_size=1000,kind=unigram")
  assert (config.vocab_size, config.kind) == (1000, "unigram")


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_other_kinds_train_from_the_command_line(tmp_path, inputs, kind):
  data, _ = inputs
  out = tmp_path / "out"
  result = _run(out, f"--config.input={data}/*", f"--config.kind={kind}",
                "--config.vocab_size=600", "--config.separator=\n\n\n")
  assert result.returncode == 0, result.stderr
  assert 500 < Tokenizer.from_file(out).vocab_size <= 600
  assert json.loads((out / "stats.json").read_text())["heldout"]["documents"] == 2  # 0 and 50


@pytest.mark.parametrize("args,message", [
    (["--config.input=nothing/*.jsonl"], "input glob 'nothing/*.jsonl' matches no files"),
    (["--config.vocab_size=200"], "config.vocab_size=200 is below 263"),
    (["--config.kind=unigram", "--config.vocab_size=300"], "config.vocab_size=300 is below 391"),
    (["--config.kind=sentencepiece"], "config.kind='sentencepiece' is not one of"),
    (["--config.input="], "config.input is empty"),
    (["--config.heldout_fraction=1.0"], "config.heldout_fraction=1.0 must be in [0, 1)"),
])
def test_user_errors_print_one_line_and_exit_2(tmp_path, inputs, args, message):
  data, _ = inputs
  result = _run(tmp_path / "out", f"--config.input={data}/a.jsonl", *args)
  assert result.returncode == 2, result.stderr
  assert message in result.stderr
  assert "Traceback" not in result.stderr


def test_malformed_jsonl_line_is_named(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "fine"}\n{"text": oops}\n')
  result = _run(tmp_path / "out", f"--config.input={bad}")
  assert result.returncode == 2
  assert f"{bad}:2: invalid JSON" in result.stderr and "Traceback" not in result.stderr


def test_a_single_document_cannot_be_both_held_out_and_trained_on(tmp_path):
  one = tmp_path / "one.txt"
  one.write_text("hello world\n")
  result = _run(tmp_path / "out", f"--config.input={one}")
  assert result.returncode == 2
  assert "gave 1 document(s) and all were held out" in result.stderr
