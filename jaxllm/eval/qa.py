"""Question answering accuracy with the sampler, with or without retrieved passages.

Each question becomes one user turn (through rag_prompt when an index is given), answered with
greedy decoding; world.score checks the reply ("The answer is X." / "I don't know.").
"""

from collections.abc import Sequence

import numpy as np

from jaxllm.data import chat, world
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.inference import retrieval
from jaxllm.inference.sampler import Sampler


def user_turns(questions: Sequence[dict], tokenizer: Tokenizer, index=None, k: int = 3,
               budget_tokens: int = 384) -> tuple[list[str], list[list[str]]]:
  """(user message per question, ids of the passages put before it)."""
  turns, retrieved = [], []
  for q in questions:
    if index is None:
      turns.append(q["question"])
      retrieved.append([])
      continue
    passages = [p for p, _ in index.retrieve(q["question"], k)]
    text, used = retrieval.rag_prompt(q["question"], passages, tokenizer, budget_tokens)
    turns.append(text)
    retrieved.append([p["id"] for p in passages[:used]])
  return turns, retrieved


def answer(sampler: Sampler, tokenizer: Tokenizer, turns: Sequence[str], *,
           system: str | None = None, max_new_tokens: int = 96, batch_size: int = 32,
           ) -> list[str]:
  """Greedy assistant replies to single user turns, in batches."""
  ends = [tokenizer.token_id(chat.IM_END), tokenizer.eos_id]
  replies = []
  for start in range(0, len(turns), batch_size):
    prompts = []
    for turn in turns[start:start + batch_size]:
      messages = ([{"role": "system", "content": system}] if system else []) + [
          {"role": "user", "content": turn}]
      prompts.append(chat.render_chat(tokenizer, messages, add_generation_prompt=True)[0])
    out = sampler.generate(prompts, max_new_tokens, temperature=0.0, stop_tokens=ends)
    for ids in out.completions():
      replies.append(tokenizer.decode([i for i in ids if i not in ends]))
  return replies


def kb_accuracy(sampler: Sampler, tokenizer: Tokenizer, questions: Sequence[dict], *,
                index=None, k: int = 3, budget_tokens: int = 384, system: str | None = None,
                max_new_tokens: int = 96, batch_size: int = 32) -> dict:
  """Accuracy on {"question", "answer", "answerable"?, "doc_ids"?} records (the world's
  kb_questions): overall, on answerable and unanswerable questions, and how often the
  passages given held a gold document."""
  turns, retrieved = user_turns(questions, tokenizer, index, k, budget_tokens)
  replies = answer(sampler, tokenizer, turns, system=system, max_new_tokens=max_new_tokens,
                   batch_size=batch_size)
  correct = np.array([world.score(r, q["answer"]) for r, q in zip(replies, questions)])
  answerable = np.array([q.get("answerable", True) for q in questions])
  result = {"accuracy": float(correct.mean()), "questions": len(questions),
            "answerable_accuracy": float(correct[answerable].mean()) if answerable.any() else None,
            "unanswerable_accuracy": (float(correct[~answerable].mean()) if (~answerable).any()
                                      else None)}
  if index is not None:
    hits = [bool(set(q.get("doc_ids", [])) & set(ids))
            for q, ids in zip(questions, retrieved) if q.get("answerable", True)]
    result["gold_passage_given"] = float(np.mean(hits)) if hits else None
  result["examples"] = [{"question": q["question"], "answer": q["answer"], "reply": r}
                        for q, r in list(zip(questions, replies))[:5]]
  return result
