"""Question answering accuracy of greedy replies from the sampler.

- `conversation_accuracy`: held-out chat conversations (system prompt and user turn through the
  chat template), e.g. the world's eval SFT set; this is the SFT eval.
- `prompted_accuracy`: a base model prompted in plain text, few-shot, for the before-SFT number.
- `kb_accuracy`: knowledge questions with or without retrieved passages (RAG).
- `training_eval`: the conversation accuracy as an eval function of the training loop
  (config.eval: qa_source, qa_questions, max_new_tokens, batch_size).
jaxllm/data/answers.py checks every reply: X in "The answer is X." matched (numbers by value), or
"I don't know." when that is the answer.
"""

from collections.abc import Sequence

import numpy as np

from jaxllm.compress import quantize
from jaxllm.data import answers as answers_lib
from jaxllm.data import chat, readers, world
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import ConfigError
from jaxllm.eval import pass_at_k
from jaxllm.inference import generate, retrieval
from jaxllm.inference.sampler import Sampler
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib


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


def reply_to(sampler: Sampler, tokenizer: Tokenizer, conversations: Sequence[Sequence[dict]], *,
             max_new_tokens: int = 96, batch_size: int = 32, temperature: float = 0.0,
             seed: int = 0) -> list[str]:
  """Assistant replies (greedy unless temperature > 0) to conversations that end with a user
  turn (chat template)."""
  prompts = [chat.render_chat(tokenizer, messages, add_generation_prompt=True)[0]
             for messages in conversations]
  return generate.generate_text(sampler, tokenizer, prompts, max_new_tokens,
                                batch_size=batch_size, temperature=temperature, seed=seed,
                                stop_tokens=chat.stop_ids(tokenizer))


def answer(sampler: Sampler, tokenizer: Tokenizer, turns: Sequence[str], *,
           system: str | None = None, max_new_tokens: int = 96, batch_size: int = 32,
           ) -> list[str]:
  """Greedy assistant replies to single user turns, in batches."""
  head = [{"role": "system", "content": system}] if system else []
  return reply_to(sampler, tokenizer, [head + [{"role": "user", "content": t}] for t in turns],
                  max_new_tokens=max_new_tokens, batch_size=batch_size)


def question_and_answer(record: dict) -> tuple[list[dict], str, str]:
  """(messages before the last assistant turn, reference answer, kind) of a conversation record.

  The answer is `record["answer"]` or `record["meta"]["answer"]` (the world's SFT records).
  """
  messages = chat.prompt_messages(record["messages"])
  meta = record.get("meta", {})
  if "answer" not in record and "answer" not in meta:
    raise ValueError(f"record {record.get('id', '')!r} has no 'answer' (or meta.answer) to score.")
  return messages, str(record.get("answer", meta.get("answer"))), meta.get("kind", "all")


def score_replies(replies: Sequence[str], answers: Sequence[str], kinds: Sequence[str],
            questions: Sequence[str]) -> dict:
  """Exact-match accuracy (answers_lib.score) overall and per kind, the per-question outcomes
  ("correct", for paired tests between runs), and a few examples."""
  correct = np.array([answers_lib.score(r, a) for r, a in zip(replies, answers)])
  kinds = np.array(kinds)
  result = {"accuracy": float(correct.mean()), "questions": len(replies),
            "correct": [int(c) for c in correct]}
  if len(set(kinds)) > 1:
    result["by_kind"] = {str(k): float(correct[kinds == k].mean()) for k in sorted(set(kinds))}
  result["examples"] = [{"question": q, "answer": a, "reply": r}
                        for q, a, r in list(zip(questions, answers, replies))[:5]]
  return result


def sampled_pass_at_k(sampler: Sampler, tokenizer: Tokenizer,
                      conversations: Sequence[Sequence[dict]], answers: Sequence[str], *, n: int,
                      k: int, temperature: float, seed: int, max_new_tokens: int = 96,
                      batch_size: int = 32, style: str = "line") -> tuple[float, float]:
  """(mean pass@k, sample accuracy) from n sampled replies per conversation, each checked with
  answers_lib.score (the answer by value); pass@k is the unbiased estimator."""
  sampled = reply_to(sampler, tokenizer, [c for c in conversations for _ in range(n)],
                     max_new_tokens=max_new_tokens, batch_size=batch_size,
                     temperature=temperature, seed=seed)
  right = np.array([answers_lib.score(reply, str(answers[i // n]), style) > 0
                    for i, reply in enumerate(sampled)]).reshape(len(conversations), n)
  return pass_at_k.mean_pass_at_k(right, k), float(right.mean())


def conversation_accuracy(sampler: Sampler, tokenizer: Tokenizer, records: Sequence[dict], *,
                          max_new_tokens: int = 96, batch_size: int = 32) -> dict:
  """Exact match of greedy chat replies on held-out conversations ({"messages", answer}).

  The system prompt and user turn are kept; the reply must say "The answer is X." (or
  "I don't know." when that is the answer).
  """
  parsed = [question_and_answer(r) for r in records]
  replies = reply_to(sampler, tokenizer, [m for m, _, _ in parsed],
                     max_new_tokens=max_new_tokens, batch_size=batch_size)
  return score_replies(replies, [a for _, a, _ in parsed], [k for _, _, k in parsed],
                 [m[-1]["content"] for m, _, _ in parsed])


PROBLEM, SOLUTION = "Problem: ", "\nSolution:\n"  # the world's worked problems in pretraining


def base_prompt(question: str, shots: Sequence[tuple[str, str]] = ()) -> str:
  """A plain-text prompt for a base (not chat-tuned) model, in the format of the worked
  problems it was pretrained on, after `shots` solved examples (question, reply)."""
  solved = "".join(f"{PROBLEM}{q}{SOLUTION}{r}\n\n" for q, r in shots)
  return f"{solved}{PROBLEM}{question}{SOLUTION}"


def prompted_replies(sampler: Sampler, tokenizer: Tokenizer, records: Sequence[dict],
                     shots: Sequence[dict] = (), *, max_new_tokens: int = 96,
                     batch_size: int = 32) -> list[str]:
  """Greedy replies of a base model prompted with `base_prompt` (few-shot from `shots`, records
  with an assistant reply), each cut at the first blank line (the next problem)."""
  solved = [(question_and_answer(s)[0][-1]["content"], s["messages"][-1]["content"])
            for s in shots]
  prompts = [tokenizer.encode_prompt(base_prompt(question_and_answer(r)[0][-1]["content"], solved))
             for r in records]
  replies = generate.generate_text(sampler, tokenizer, prompts, max_new_tokens,
                                   batch_size=batch_size, stop_tokens=chat.stop_ids(tokenizer))
  return [r.split("\n\n")[0] for r in replies]


def prompted_accuracy(sampler: Sampler, tokenizer: Tokenizer, records: Sequence[dict],
                      shots: Sequence[dict] = (), *, max_new_tokens: int = 96,
                      batch_size: int = 32) -> dict:
  """Exact match of a base model's `prompted_replies`."""
  replies = prompted_replies(sampler, tokenizer, records, shots, max_new_tokens=max_new_tokens,
                             batch_size=batch_size)
  parsed = [question_and_answer(r) for r in records]
  return score_replies(replies, [a for _, a, _ in parsed], [k for _, _, k in parsed],
                 [m[-1]["content"] for m, _, _ in parsed])


def kb_accuracy(sampler: Sampler, tokenizer: Tokenizer, questions: Sequence[dict], *,
                index=None, k: int = 3, budget_tokens: int = 384, system: str | None = None,
                max_new_tokens: int = 96, batch_size: int = 32) -> dict:
  """Accuracy on {"question", "answer", "answerable"?, "doc_ids"?} records (the world's
  kb_questions): overall, on answerable and unanswerable questions, and how often the
  passages given held a gold document."""
  turns, retrieved = user_turns(questions, tokenizer, index, k, budget_tokens)
  replies = answer(sampler, tokenizer, turns, system=system, max_new_tokens=max_new_tokens,
                   batch_size=batch_size)
  correct = np.array([answers_lib.score(r, q["answer"]) for r, q in zip(replies, questions)])
  answerable = np.array([q.get("answerable", True) for q in questions])
  result = {"accuracy": float(correct.mean()), "questions": len(questions),
            "answerable_accuracy": float(correct[answerable].mean()) if answerable.any() else None,
            "unanswerable_accuracy": (float(correct[~answerable].mean()) if (~answerable).any()
                                      else None),
            "correct": [int(c) for c in correct]}  # per question, for paired tests
  if index is not None:
    hits = [bool(set(q.get("doc_ids", [])) & set(ids))
            for q, ids in zip(questions, retrieved) if q.get("answerable", True)]
    result["gold_passage_given"] = float(np.mean(hits)) if hits else None
  result["examples"] = [{"question": q["question"], "answer": q["answer"], "reply": r}
                        for q, r in list(zip(questions, replies))[:5]]
  return result


def _training_records(config) -> list[dict]:
  """Held-out questions for the eval: the world's eval SFT conversations or a .jsonl file."""
  source, n = config.eval.qa_source, config.eval.qa_questions
  if not source or n <= 0:
    return []
  if source == "world":
    return world.generate(config.data.world_seed)["eval"]["sft"][:n]
  records = [obj for _, obj in readers.iter_jsonl(source, readers.ReadCounts())]
  if not records:
    raise ConfigError(f"config.eval.qa_source={source!r} holds no records.")
  return records[:n]


def training_eval(config, model_cfg, tokenizer, lora=None) -> tuple:
  """fn(params, frozen) -> {"eval/qa_accuracy", ...}: greedy answers with the sampler."""
  records = _training_records(config)
  if not records:
    return ()
  for r in records:  # fail now, not after the first eval interval
    try:
      question_and_answer(r)
    except (KeyError, TypeError, ValueError) as e:
      raise ConfigError(f"config.eval.qa_source={config.eval.qa_source!r}: a record is not "
                        f"{{'messages': [..., user, assistant?], 'answer'}} ({e!r}).") from e
  smp = Sampler(Transformer(model_cfg), None, tokenizer.pad_id, vocab_limit=tokenizer.vocab_size)

  def evaluate(params, frozen):
    smp.params = (params if lora is None else
                  lora_lib.merge(quantize.as_float(frozen, model_cfg), params, lora))
    result = conversation_accuracy(smp, tokenizer, records,
                                   max_new_tokens=config.eval.max_new_tokens,
                                   batch_size=config.eval.batch_size)
    out = {"eval/qa_accuracy": result["accuracy"]}
    out.update({f"eval/qa_accuracy_{k}": v for k, v in result.get("by_kind", {}).items()})
    return out
  return (evaluate,)
