"""Retrieval for RAG: a BM25 index (bm25s, Snowball stemming), dense retrieval from the model's
own pooled hidden states, prompt assembly within a token budget, and RAG SFT examples.

    passages {"id", "title"?, "text"} --Bm25Index.build--> index (save / load a directory)
    question --index.retrieve(q, k)--> [(passage, score)] --rag_prompt(..., budget)--> user text
"""

import dataclasses
import functools
import json
import logging
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxllm.data import passages as passages_lib
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError
from jaxllm.inference.tools import Tool, ToolError
from jaxllm.parallel import sharding as sharding_lib

PASSAGES_FILE = "passages.jsonl"


def _stemmer():
  import Stemmer  # PyStemmer: Snowball stemmers in C
  return Stemmer.Stemmer("english")


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
  import bm25s
  logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs each index build at INFO
  return bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False,
                        show_progress=False)


def read_passages(path) -> list[dict]:
  """{"id", "text", "title"?} records from a JSONL file (e.g. the world's kb.jsonl)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"{path}: no such passages file; give a JSONL file of "
                    '{"id", "text"} records (the world writes kb.jsonl).')
  passages = []
  for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}:{line_no}: invalid JSON ({e.msg}).") from e
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
      raise UserError(f"{path}:{line_no}: expected an object with a string 'text' field.")
    record.setdefault("id", f"{path.name}:{line_no}")
    passages.append(record)
  if not passages:
    raise UserError(f"{path}: no passages in the file.")
  return passages


@dataclasses.dataclass
class Bm25Index:
  """BM25 (Lucene scoring, k1 1.5, b 0.75) over passages; retrieve() skips zero scores."""
  passages: list[dict]
  retriever: Any

  @classmethod
  def build(cls, passages: Sequence[dict]) -> "Bm25Index":
    import bm25s
    if not passages:
      raise UserError("cannot build an index over no passages.")
    retriever = bm25s.BM25()
    retriever.index(_tokenize([passages_lib.passage_text(p) for p in passages]),
                    show_progress=False)
    return cls(list(passages), retriever)

  def save(self, directory) -> None:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    self.retriever.save(str(directory), show_progress=False)
    with open(directory / PASSAGES_FILE, "w", encoding="utf-8") as f:
      for p in self.passages:
        f.write(json.dumps(p, ensure_ascii=False) + "\n")

  @classmethod
  def load(cls, directory) -> "Bm25Index":
    """An index saved by save(), or one built on the fly from a passages .jsonl file."""
    import bm25s
    directory = pathlib.Path(directory)
    if not directory.exists():
      raise UserError(f"{directory}: no such file or directory; give a passages .jsonl file "
                      "or a directory saved by Bm25Index.save.")
    if directory.is_file():
      return cls.build(read_passages(directory))
    if not (directory / PASSAGES_FILE).is_file():
      raise UserError(f"{directory}: not a saved index (no {PASSAGES_FILE}); build one with "
                      "Bm25Index.build(passages).save(dir), or pass a passages .jsonl file.")
    return cls(read_passages(directory / PASSAGES_FILE),
               bm25s.BM25.load(str(directory), show_progress=False))

  def retrieve(self, query: str, k: int = 3) -> list[tuple[dict, float]]:
    """Up to k (passage, score) pairs, best first; passages sharing no term are left out."""
    k = min(k, len(self.passages))
    docs, scores = self.retriever.retrieve(_tokenize([query]), k=k, show_progress=False)
    return [(self.passages[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]


@dataclasses.dataclass
class DenseIndex:
  """Cosine similarity between embeddings from `embed` (texts -> [n, d] float array)."""
  passages: list[dict]
  vectors_nd: np.ndarray
  embed: Callable[[Sequence[str]], np.ndarray]

  @classmethod
  def build(cls, passages: Sequence[dict], embed: Callable[[Sequence[str]], np.ndarray],
            ) -> "DenseIndex":
    texts = [passages_lib.passage_text(p) for p in passages]
    return cls(list(passages), _unit(embed(texts)), embed)

  def retrieve(self, query: str, k: int = 3) -> list[tuple[dict, float]]:
    scores_n = self.vectors_nd @ _unit(self.embed([query]))[0]
    best = np.argsort(-scores_n, kind="stable")[:k]
    return [(self.passages[i], float(scores_n[i])) for i in best]


def _unit(x_nd: np.ndarray) -> np.ndarray:
  x_nd = np.asarray(x_nd, np.float32)
  return x_nd / np.maximum(np.linalg.norm(x_nd, axis=-1, keepdims=True), 1e-12)


def mean_pooled_embedder(model, params, tokenizer: Tokenizer, max_len: int = 256,
                         batch_size: int = 16) -> Callable[[Sequence[str]], np.ndarray]:
  """texts -> [n, d_model] mean of the model's final hidden states over each text's tokens."""
  import jax
  import jax.numpy as jnp

  @jax.jit
  def pooled(params, tokens_bt, mask_bt):
    _, hidden_btd = model.apply({"params": params}, tokens_bt, return_hidden=True)
    mask = mask_bt[..., None].astype(jnp.float32)
    return (hidden_btd.astype(jnp.float32) * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)

  def embed(texts: Sequence[str]) -> np.ndarray:
    out = []
    for start in range(0, len(texts), batch_size):
      chunk = [tokenizer.encode(t)[:max_len] or tokenizer.bos_ids or [tokenizer.eos_id] for t in
               texts[start:start + batch_size]]
      length = max(8, 1 << (max(map(len, chunk)) - 1).bit_length())  # few shapes
      tokens = np.full((batch_size, length), tokenizer.pad_id, np.int32)
      mask = np.zeros((batch_size, length), bool)
      for i, ids in enumerate(chunk):
        tokens[i, :len(ids)] = ids
        mask[i, :len(ids)] = True
      out.append(sharding_lib.fetch(pooled(params, tokens, mask))[:len(chunk)])
    return np.concatenate(out)

  return embed


def rag_prompt(question: str, passages: Sequence[dict], tokenizer: Tokenizer,
               budget_tokens: int) -> tuple[str, int]:
  """(user message text, passages used): as many passages, in order, as fit the token budget.

  The text is passages_lib.with_passages's "Passages:\\n[1] ...\\n\\nQuestion: ..." (just the
  question if none fit); its token count never exceeds budget_tokens unless the question alone
  does.
  """
  used = 0
  text = question
  for n in range(1, len(passages) + 1):
    candidate = passages_lib.with_passages(question, passages[:n])
    if len(tokenizer.encode(candidate)) > budget_tokens:
      break
    text, used = candidate, n
  return text, used


def rag_sft_examples(questions: Sequence[dict], index, tokenizer: Tokenizer, k: int = 3,
                     budget_tokens: int = 384, system: str | None = None,
                     reply: Callable[[dict], str] = passages_lib.plain_reply) -> list[dict]:
  """SFT conversations {"messages"} whose user turn holds retrieved passages and the question.

  questions: {"question", "answer", ...} records (the world's kb_questions); `reply` turns one
  into the assistant text.
  """
  examples = []
  for q in questions:
    passages = [p for p, _ in index.retrieve(q["question"], k)]
    user, _ = rag_prompt(q["question"], passages, tokenizer, budget_tokens)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": reply(q)}]
    examples.append({"messages": messages, "meta": {"question": q["question"],
                                                    "retrieved": [p["id"] for p in passages]}})
  return examples


def world_rag_conversations(tokenizer: Tokenizer, seed: int = 0, other_worlds: int = 12,
                            k: int = 3, budget_tokens: int = 384) -> list[dict]:
  """RAG fine-tuning data from the embedded world, with cited replies:

  - world `seed`'s train knowledge questions with retrieved passages, and without (answering
    from what pretraining stored);
  - the questions of `other_worlds` freshly generated worlds (seeds seed+1, ...) with retrieved
    passages: people, towns and values the model never saw, so it must read the passages.
  No question is worded like one of world `seed`'s eval questions.
  """
  from jaxllm.data import world
  conversations = []
  held_out: set[str] = set()
  for i, world_seed in enumerate(range(seed, seed + other_worlds + 1)):
    data = world.generate(world_seed)
    by_id = {p["id"]: p for p in data["kb"]}
    questions = data["train"]["kb_questions"]
    if not i:
      held_out = {q["question"] for q in data["eval"]["kb_questions"]}
    else:  # another world: its questions, except any worded like a held-out one (towns and
      # goods share names across worlds)
      questions = [q for q in questions + data["eval"]["kb_questions"]
                   if q["question"] not in held_out]
    reply = functools.partial(passages_lib.cited_reply, passages_by_id=by_id)
    conversations += rag_sft_examples(questions, Bm25Index.build(data["kb"]), tokenizer, k,
                                      budget_tokens, reply=reply)
    if not i:
      conversations += [{"messages": [{"role": "user", "content": q["question"]},
                                      {"role": "assistant", "content": reply(q)}]}
                        for q in questions]
  return conversations


def retrieval_tool(index, k: int = 3) -> Tool:
  """A "search" tool over the index: {"query": "..."} -> the top passages as numbered lines."""
  def search(arguments: dict) -> str:
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
      raise ToolError('search takes {"query": "some words"}.')
    found = [p for p, _ in index.retrieve(query, k)]
    return passages_lib.format_passages(found) if found else "no passage matches."

  return Tool("search", 'finds passages in the knowledge base: {"query": "Greta Park job"}', search)
