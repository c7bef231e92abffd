"""How retrieved passages are shown to a model, and the replies that cite them.

One place for the format that RAG prompts (jaxllm/inference/retrieval.py) and the world's RAG
conversations (jaxllm/data/world.py) share, so a model fine-tuned on one reads the other:

    Passages:
    [1] Title. text
    [2] ...

    Question: ...
"""

import re
from collections.abc import Sequence

from jaxllm.data.answers import REFUSAL


def passage_text(p: dict) -> str:
  """"Title. text" (or the text alone when the passage has no title)."""
  return f"{p['title']}. {p['text']}" if p.get("title") else p["text"]


def format_passages(passages: Sequence[dict]) -> str:
  return "\n".join(f"[{i + 1}] {passage_text(p)}" for i, p in enumerate(passages))


def with_passages(question: str, passages: Sequence[dict]) -> str:
  """The user turn: the numbered passages, then the question (the question alone if none)."""
  if not passages:
    return question
  return f"Passages:\n{format_passages(passages)}\n\nQuestion: {question}"


def plain_reply(question: dict) -> str:
  """"The answer is X." or "I don't know."."""
  answer = question["answer"]
  return f"{REFUSAL}." if answer == REFUSAL else f"The answer is {answer}."


def cited_reply(question: dict, passages_by_id: dict[str, dict]) -> str:
  """The sentence of a gold passage (question["doc_ids"]) that holds the answer, then the
  answer: the model learns to copy the evidence first (tokens to think), then conclude.

  question: {"answer", "doc_ids"?}; a multi-hop question (several doc_ids) cites one sentence
  from each passage that holds a piece of the answer's chain, in doc_ids order.
  """
  if question["answer"] == REFUSAL:
    return plain_reply(question)
  cited = []
  keys = [question["answer"]] + list(question.get("cite", ()))
  for doc_id in question.get("doc_ids", []):
    for sentence in re.split(r"(?<=[.!?])\s+", passages_by_id[doc_id]["text"]):
      if any(k.lower() in sentence.lower() for k in keys) and sentence not in cited:
        cited.append(sentence)
        break
  return " ".join(cited + [plain_reply(question)])
