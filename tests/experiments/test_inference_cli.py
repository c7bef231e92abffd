"""sample.py, chat.py and evaluate.py on a briefly trained run, as a user runs them."""

import json
import math
import re
import shutil
import subprocess
import sys

import pytest

from jaxllm import runs
from jaxllm.data import world
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.inference import retrieval
from jaxllm.inference.sampler import Sampler
from tests.experiments.conftest import child_env
from tests.experiments.conftest import run_script as _run
from tests.helpers import ROOT, read_metrics

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses

# experiments/chat.py run as a user runs it, with a spy on what the model is given: the prompts
# (token ids) of every Sampler.generate call, and per assistant.respond turn the messages, the
# messages the turn added and its prompts, go to the JSON file the first argument names.
CHAT_WITH_SPY = """
import json, runpy, sys
from jaxllm.inference import assistant, sampler

out, sys.argv = sys.argv[1], ["experiments/chat.py", *sys.argv[2:]]
seen = {"prompts": [], "turns": []}
generate, respond = sampler.Sampler.generate, assistant.respond

def spy_generate(self, prompts, *args, **kwargs):
  seen["prompts"].append([int(t) for t in prompts[0]])
  return generate(self, prompts, *args, **kwargs)

def spy_respond(smp, tok, messages, *args, **kwargs):
  start = len(seen["prompts"])
  added = respond(smp, tok, messages, *args, **kwargs)
  seen["turns"].append({"messages": list(messages), "added": added,
                        "prompts": seen["prompts"][start:]})
  return added

sampler.Sampler.generate, assistant.respond = spy_generate, spy_respond
try:
  runpy.run_path("experiments/chat.py", run_name="__main__")
finally:
  with open(out, "w") as f:
    json.dump(seen, f)
"""


@pytest.fixture
def run_dir(pretrained_run):
  return pretrained_run


def test_sample_prints_only_the_completion_and_is_reproducible(run_dir):
  args = [f"--workdir={run_dir}", "--prompt=Greta Park works as", "--max_new_tokens=12"]
  greedy = _run("sample.py", *args, "--temperature=0")
  assert greedy.returncode == 0, greedy.stderr
  # What it prints is the run's greedy continuation of BOS + the prompt, decoded, and no more.
  run = runs.load_run(run_dir)
  tok = run.tokenizer
  smp = Sampler(run.model, run.params, tok.pad_id, vocab_limit=tok.vocab_size)
  completion = smp.generate([tok.encode_prompt("Greta Park works as")], 12,
                            temperature=0.0, stop_tokens=[tok.eos_id]).completions()[0]
  if completion and completion[-1] == tok.eos_id:
    completion = completion[:-1]
  completion = [t for t in completion if t not in tok.special_ids]  # unless --raw
  assert completion and greedy.stdout == tok.decode(completion) + "\n"
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
  texts = world.generate(0)["eval"]["pretrain"]
  assert lm["texts"] == len(texts)
  tok = Tokenizer.from_file(run_dir)
  assert lm["tokens"] == sum(len(tok.bos_ids + tok.encode(t)) - 1 for t in texts)  # all but BOS
  # Both numbers are the same summed NLL: per token (perplexity) and per byte in bits.
  nll = math.log(lm["perplexity"]) * lm["tokens"]
  num_bytes = sum(len(t.encode("utf-8")) for t in texts)
  assert lm["bits_per_byte"] == pytest.approx(nll / math.log(2) / num_bytes, rel=1e-9)
  # The training run's own eval loss on the world's held-out text (there in packed windows, each
  # text alone here), far below an untrained model's ln(1024) = 6.9.
  train_eval = [m for m in read_metrics(run_dir) if "eval/loss" in m][-1]
  assert train_eval["step"] == 30
  assert math.log(lm["perplexity"]) == pytest.approx(train_eval["eval/loss"], abs=0.1)
  assert result["metrics"]["lm/perplexity"] == lm["perplexity"]
  assert "lm/perplexity" in done.stdout
  assert "eval pretrain step 30: lm (1/1) in " in done.stdout  # per-suite progress


def test_evaluate_rag_with_the_world_and_a_given_index(run_dir, tmp_path):
  world.write_jsonl_files(tmp_path / "world", 0)
  results = []
  for extra in ([], [f"--config.rag.index={tmp_path / 'world' / 'kb.jsonl'}"]):
    done = _run("evaluate.py", f"--workdir={run_dir}", "--config.suites=rag",
                "--config.qa.prompt=chat", "--config.rag.questions=24", "--config.max_new_tokens=8",
                *extra)
    assert done.returncode == 0, done.stderr
    rag = json.loads((run_dir / "eval.json").read_text())["suites"]["rag"]
    assert rag["questions"] == 24 and rag["gold_passage_given"] >= 0.9
    results.append(rag)
  # The world's passages written to a file and given as the index are the world's own index:
  # every number, with and without retrieval, is the same.
  assert results[0] == results[1]


def _chat_with_spy(spy_path, *args, stdin):
  done = subprocess.run([sys.executable, "-c", CHAT_WITH_SPY, str(spy_path), *args], cwd=ROOT,
                        env=child_env(), input=stdin, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  return done.stdout, json.loads(spy_path.read_text())


def test_chat_answers_each_input_line_and_the_model_sees_the_retrieved_passages(run_dir,
                                                                                  tmp_path):
  world.write_jsonl_files(tmp_path / "world", 0)
  kb = tmp_path / "world" / "kb.jsonl"
  greta = next(p for p in retrieval.read_passages(kb) if p["id"] == "person/greta-park")
  tok = Tokenizer.from_file(run_dir)
  questions = ["What is 3 + 4?", "Who is Greta Park?"]
  for extra in ([], [f"--rag_index={kb}"]):
    stdout, seen = _chat_with_spy(tmp_path / "spy.json", f"--workdir={run_dir}",
                                  "--max_new_tokens=8", *extra,
                                  stdin=f"{questions[0]}\n\n{questions[1]}\n")
    # One turn per non-empty line, and what is printed is each turn's final reply.
    turns = seen["turns"]
    assert len(turns) == 2, turns
    assert stdout == "".join(t["added"][-1]["content"] + "\n---\n" for t in turns)
    users = [t["messages"][-1] for t in turns]
    assert all(u["role"] == "user" for u in users)
    prompts = [[tok.decode(ids) for ids in t["prompts"]] for t in turns]
    assert all(prompts), "every turn samples at least once"
    if not extra:
      assert [u["content"] for u in users] == questions
      assert not any("Passages:" in text for turn in prompts for text in turn)
      continue
    # With --rag_index, the top passage for the question is Greta Park's own, it comes first in
    # the user turn, and it is in every prompt the model samples from in that turn.
    assert users[1]["content"].startswith(f"Passages:\n[1] Greta Park. {greta['text']}\n")
    assert users[1]["content"].endswith(f"\n\nQuestion: {questions[1]}")
    assert all(greta["text"] in text for text in prompts[1]), prompts[1]


def test_chat_commands_and_banner(run_dir):
  done = _run("chat.py", f"--workdir={run_dir}", "--max_new_tokens=4",
              stdin="/help\nWhat is 3 + 4?\n/reset\n/quit\nnot answered\n")
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  assert lines[0].startswith("/reset starts a new conversation") and lines[-1] == (
      "(a new conversation)")
  assert lines.count("---") == 1  # one reply: the line after /quit is not read
  assert f"chat with {run_dir} (step 30, a base run, ChatML template)" in done.stderr


def test_missing_run_or_index_is_a_clear_error(run_dir, tmp_path):
  done = _run("sample.py", f"--workdir={tmp_path}", "--prompt=hi")
  assert done.returncode == 2 and "config.json does not exist" in done.stderr
  done = _run("chat.py", f"--workdir={run_dir}", "--rag_index=/no/such.jsonl", stdin="")
  assert done.returncode == 2 and "no such file or directory" in done.stderr


def test_the_python_api_generates_text_as_sample_py_does(run_dir, tmp_path):
  import jaxllm
  run = jaxllm.load_run(run_dir)
  texts = run.generate(["Greta Park works as", "The river"], max_new_tokens=12)
  # The same as the id-level sampler gives for each prompt alone (greedy, EOS and specials out).
  tok = run.tokenizer
  smp = Sampler(run.model, run.params, tok.pad_id, vocab_limit=tok.vocab_size)
  for prompt, text in zip(["Greta Park works as", "The river"], texts):
    ids = smp.generate([tok.encode_prompt(prompt)], 12, temperature=0.0,
                       stop_tokens=[tok.eos_id]).completions()[0]
    assert text == tok.decode([t for t in ids if t not in tok.special_ids])
  alone = _run("sample.py", f"--workdir={run_dir}", "--prompt=Greta Park works as",
               "--max_new_tokens=12", "--temperature=0")
  assert alone.returncode == 0, alone.stderr
  assert texts[0] + "\n" == alone.stdout
  # A chat run (the kind is read from the run) gets the chat template and stops at the end of
  # its turn; a list of messages works too. Here the pretrained params relabelled as SFT.
  chat_run = tmp_path / "chat"
  shutil.copytree(run_dir, chat_run, ignore=shutil.ignore_patterns("labels", "run.lock"))
  config = json.loads((chat_run / "config.json").read_text())
  (chat_run / "config.json").write_text(json.dumps({**config, "stage": "sft"}))
  chat = jaxllm.load_run(chat_run)
  ids, stops = chat.prompt_ids("What is 3 + 4?")
  assert ids == chat.prompt_ids([{"role": "user", "content": "What is 3 + 4?"}])[0]
  assert chat.tokenizer.decode(ids).rstrip().endswith("<|im_start|>assistant")
  assert stops[0] == chat.tokenizer.token_id("<|im_end|>")
  assert chat.generate(["What is 3 + 4?"], 8)[0] == _run(
      "sample.py", f"--workdir={chat_run}", "--prompt=What is 3 + 4?", "--max_new_tokens=8",
      "--temperature=0").stdout[:-1]


def test_a_prompt_past_the_context_is_refused_or_truncated(run_dir):
  long = "--prompt=" + "Greta Park works as a baker. " * 200  # about 1,400 tokens; context 256
  refused = _run("sample.py", f"--workdir={run_dir}", long, "--max_new_tokens=8")
  assert refused.returncode == 2
  assert re.search(r"prompt 0 is [\d,]+ tokens; with max_new_tokens=8 that is past the model's "
                   r"context of 256 tokens.*--truncate", refused.stderr), refused.stderr
  cut = _run("sample.py", f"--workdir={run_dir}", long, "--max_new_tokens=8", "--truncate")
  assert cut.returncode == 0, cut.stderr
  assert "kept its last 247" in cut.stderr  # 256 - 8 new tokens - the BOS kept first


def test_the_readme_python_blocks_run_as_written(run_dir):
  """Every ```python block of the README, with the run it names replaced by a trained one."""
  blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
  assert len(blocks) >= 3
  for block in blocks:
    code = block.replace('"runs/tiny"', repr(str(run_dir)))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{block}\n{done.stderr[-2000:]}"


def test_chat_keeps_the_conversation_within_the_context(run_dir):
  """Context 256: a long conversation drops its oldest turns (said on stderr); a message too
  long alone is not answered, and the next one is."""
  question = "Where does Greta Park live and what does she do there every day? " * 3
  too_long = "word " * 400
  done = _run("chat.py", f"--workdir={run_dir}", "--max_new_tokens=16",
              stdin=question + "\n" + question + "\n" + question + "\n" + too_long + "\nHi\n")
  assert done.returncode == 0, done.stderr
  replies = done.stdout.split("---\n")[:-1]
  assert len(replies) == 5 and replies[3].startswith("(not answered: the message is ")
  assert "oldest turn(s) left out to fit the model's context of 256 tokens" in done.stderr
