"""kb_accuracy: prompts with and without passages, scoring, gold-passage rate."""

import numpy as np

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
  questions = data["eval"]["kb_questions"][:40]
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
