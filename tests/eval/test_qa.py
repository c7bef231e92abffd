"""kb_accuracy: prompts with and without passages, scoring, gold-passage rate."""

import numpy as np
import pytest

from jaxllm.data import chat, world
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.eval import qa
from jaxllm.inference import retrieval
from jaxllm.inference.sampler import SampleOutput


class Oracle:
  """Answers from the passages in the prompt when there are any (looks the fact up by name)."""

  def __init__(self, tok, kb):
    self.tok, self.kb, self.prompts = tok, kb, []

  def generate(self, prompts, max_new_tokens, **_):
    rows = []
    for ids in prompts:
      text = self.tok.decode(ids)
      self.prompts.append(text)
      reply = "I don't know."
      if "Passages:" in text:
        question = text.rsplit("Question: ", 1)[1]
        for q in self.questions:
          if question.startswith(q["question"]) and q["answerable"]:
            reply = f"The answer is {q['answer']}."
      rows.append(self.tok.encode(reply) + [self.tok.token_id(chat.IM_END)])
    n = max(map(len, rows))
    tokens = np.array([r + [0] * (n - len(r)) for r in rows])
    lengths = np.array([len(r) for r in rows])
    return SampleOutput(tokens, lengths, np.zeros(tokens.shape), np.zeros(tokens.shape),
                        np.ones(len(rows), bool))


def test_kb_accuracy_with_and_without_retrieval():
  data = world.generate(seed=0)
  absent = [a["name"] for a in data["world"]["absent"]["people"]][:8]
  questions = data["eval"]["kb_questions"][:32] + [  # and some the knowledge base cannot answer
      {"question": f"What does {name} do for a living?", "answer": "I don't know",
       "answerable": False, "doc_ids": []} for name in absent]
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)
  oracle = Oracle(tok, data["kb"])
  oracle.questions = questions
  index = retrieval.Bm25Index.build(data["kb"])
  without = qa.kb_accuracy(oracle, tok, questions, batch_size=16)
  unanswerable = np.mean([not q["answerable"] for q in questions])
  assert abs(without["accuracy"] - unanswerable) < 1e-9  # refusing is right only there
  assert without["answerable_accuracy"] == 0 and without["unanswerable_accuracy"] == 1
  with_rag = qa.kb_accuracy(oracle, tok, questions, index=index, k=3, budget_tokens=2000)
  assert with_rag["answerable_accuracy"] == 1.0 and with_rag["accuracy"] > without["accuracy"]
  assert with_rag["gold_passage_given"] >= 0.9
  assert "Passages:\n[1] " in oracle.prompts[-1] and oracle.prompts[-1].endswith(
      "<|im_start|>assistant\n")


class Scripted:
  """Replies from a table keyed by the last question in the prompt; records every prompt."""

  def __init__(self, tok, replies, tail=""):
    self.tok, self.replies, self.tail, self.prompts = tok, replies, tail, []

  def generate(self, prompts, max_new_tokens, **_):
    rows = []
    for ids in prompts:
      text = self.tok.decode(ids)
      self.prompts.append(text)
      reply = next(r for q, r in self.replies.items() if q in text.rsplit("Problem:", 1)[-1]
                   .rsplit("<|im_start|>user", 1)[-1])
      rows.append(self.tok.encode(reply + self.tail) + [self.tok.eos_id])
    n = max(map(len, rows))
    tokens = np.array([r + [0] * (n - len(r)) for r in rows])
    return SampleOutput(tokens, np.array([len(r) for r in rows]), np.zeros(tokens.shape),
                        np.zeros(tokens.shape), np.ones(len(rows), bool))


def _records():
  records = world.generate(seed=0)["eval"]["sft"]
  kinds = {}
  for r in records:
    kinds.setdefault(r["meta"]["kind"], []).append(r)
  return [r for rs in kinds.values() for r in rs[:4]], records


def _with_system(record):
  return dict(record, messages=[{"role": "system", "content": "Be brief."}]
              + [m for m in record["messages"] if m["role"] != "system"])


def test_conversation_accuracy_keeps_the_system_prompt_and_scores_by_kind():
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)
  picked, _ = _records()
  picked = picked + [_with_system(picked[0])]
  right = {r["messages"][-2]["content"]: r["messages"][-1]["content"] for r in picked}
  # Right on every arithmetic question, wrong elsewhere.
  replies = {q: (a if r["meta"]["kind"] == "arithmetic" else "The answer is 12345.")
             for (q, a), r in zip(right.items(), picked)}
  result = qa.conversation_accuracy(Scripted(tok, replies), tok, picked, batch_size=3)
  kinds = [r["meta"]["kind"] for r in picked]
  assert result["by_kind"]["arithmetic"] == 1.0 and result["by_kind"]["fact"] == 0.0
  assert result["accuracy"] == kinds.count("arithmetic") / len(picked)
  assert result["questions"] == len(picked)


def test_system_prompt_reaches_the_model_and_the_reply_is_not_in_the_prompt():
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)
  picked, _ = _records()
  record = _with_system(picked[0])
  scripted = Scripted(tok, {picked[0]["messages"][-2]["content"]: "x"})
  qa.conversation_accuracy(scripted, tok, [record])
  prompt = scripted.prompts[0]
  assert "<|im_start|>system\nBe brief.<|im_end|>" in prompt
  assert prompt.endswith("<|im_start|>assistant\n")
  assert record["messages"][-1]["content"] not in prompt


def test_prompted_accuracy_uses_the_pretraining_format_and_cuts_at_the_next_problem():
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)
  picked, records = _records()
  shots = records[-2:]
  replies = {r["messages"][-2]["content"]: r["messages"][-1]["content"] for r in picked}
  # The model goes on with another problem after a blank line; its wrong answer is cut off.
  scripted = Scripted(tok, replies, tail="\n\nProblem: 1 + 1?\nSolution:\nThe answer is 3.")
  result = qa.prompted_accuracy(scripted, tok, picked, shots)
  answerable = [r["meta"]["answer"] != "I don't know" for r in picked]
  assert result["accuracy"] == 1.0, (answerable, result["examples"])
  prompt = scripted.prompts[0]
  assert prompt.startswith("<|bos|>Problem: " + shots[0]["messages"][-2]["content"])
  assert prompt.endswith("Problem: " + picked[0]["messages"][-2]["content"] + "\nSolution:\n")
  with pytest.raises(ValueError, match="no 'answer'"):
    qa.question_and_answer({"messages": [{"role": "user", "content": "hi"}]})
