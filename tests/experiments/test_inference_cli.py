"""sample.py, chat.py and evaluate.py on a briefly trained run, as a user runs them."""

import json

import pytest

from jaxllm.data import world
from tests.experiments.conftest import run_script as _run


@pytest.fixture
def run_dir(pretrained_run):
  return pretrained_run


def test_sample_prints_only_the_completion_and_is_reproducible(run_dir):
  args = [f"--workdir={run_dir}", "--prompt=Greta Park works as", "--max_new_tokens=12"]
  greedy = _run("sample.py", *args, "--temperature=0")
  assert greedy.returncode == 0, greedy.stderr
  assert greedy.stdout.strip() and "Greta Park works as" not in greedy.stdout
  assert _run("sample.py", *args, "--temperature=0").stdout == greedy.stdout
  sampled = [_run("sample.py", *args, "--seed=1", "--top_k=20", "--top_p=0.9").stdout
             for _ in range(2)]
  assert sampled[0] == sampled[1]


def test_evaluate_writes_perplexity_and_bits_per_byte(run_dir):
  done = _run("evaluate.py", f"--workdir={run_dir}", "--config.suites=lm",
              "--config.batch_size=4")
  assert done.returncode == 0, done.stderr
  result = json.loads((run_dir / "eval.json").read_text())
  assert result["stage"] == "pretrain" and result["step"] == 30
  lm = result["suites"]["lm"]
  assert lm["texts"] == len(world.generate(0)["eval"]["pretrain"])
  assert 1.0 < lm["perplexity"] < 1024 and 0 < lm["bits_per_byte"] < 8
  assert result["metrics"]["lm/perplexity"] == lm["perplexity"]
  assert "lm/perplexity" in done.stdout


def test_evaluate_rag_with_the_world_and_a_given_index(run_dir, tmp_path):
  world.write_jsonl_files(tmp_path / "world", 0)
  for extra in ([], [f"--config.rag.index={tmp_path / 'world' / 'kb.jsonl'}"]):
    done = _run("evaluate.py", f"--workdir={run_dir}", "--config.suites=rag",
                "--config.qa.prompt=chat", "--config.rag.questions=24", "--config.max_new_tokens=8",
                *extra)
    assert done.returncode == 0, done.stderr
    rag = json.loads((run_dir / "eval.json").read_text())["suites"]["rag"]
    assert rag["questions"] == 24
    assert 0 <= rag["accuracy_without_retrieval"] <= 1 and rag["gold_passage_given"] >= 0.9


def test_chat_answers_each_input_line_then_exits(run_dir, tmp_path):
  world.write_jsonl_files(tmp_path / "world", 0)
  for extra in ([], [f"--rag_index={tmp_path / 'world' / 'kb.jsonl'}"]):
    done = _run("chat.py", f"--workdir={run_dir}", "--max_new_tokens=8", *extra,
                stdin="What is 3 + 4?\n\nWho is Greta Park?\n")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) >= 2  # one answer per non-empty line (answers may wrap)


def test_missing_run_or_index_is_a_clear_error(run_dir, tmp_path):
  done = _run("sample.py", f"--workdir={tmp_path}", "--prompt=hi")
  assert done.returncode == 2 and "config.json does not exist" in done.stderr
  done = _run("chat.py", f"--workdir={run_dir}", "--rag_index=/no/such.jsonl", stdin="")
  assert done.returncode == 2 and "no such file or directory" in done.stderr
