"""BM25 and dense retrieval, prompt budgets, RAG SFT examples, the search tool."""

import json

import numpy as np
import pytest

from jaxllm.data import passages, world
from jaxllm.data.tokenizer import train_tokenizer
from jaxllm.errors import UserError
from jaxllm.inference import retrieval


@pytest.fixture(scope="module")
def kb():
  return world.generate(seed=0)["kb"]


@pytest.fixture(scope="module")
def tok(kb):
  return train_tokenizer([p["text"] for p in kb], vocab_size=600)


def test_bm25_ranks_the_planted_passage_first():
  rng = np.random.default_rng(0)
  filler = ["The harbour was quiet in the morning and the boats stayed in.",
            "Bread and cheese were sold at the square every week.",
            "A long road runs between the hills and the old bridge."]
  passages = [{"id": f"f{i}", "text": filler[i % 3] + f" Note {rng.integers(1000)}."}
              for i in range(60)]
  planted = {"id": "planted", "text": "The lighthouse keeper Mira Olsen repairs clocks."}
  passages.insert(37, planted)
  index = retrieval.Bm25Index.build(passages)
  found = index.retrieve("Who repairs clocks at the lighthouse?", k=3)
  assert found[0][0]["id"] == "planted"
  assert index.retrieve("zebra xylophone", k=3) == []  # nothing shares a term


def test_bm25_on_the_world_answers_kb_questions_and_saves(kb, tmp_path):
  index = retrieval.Bm25Index.build(kb)
  questions = [q for q in world.generate(seed=0)["eval"]["kb_questions"] if q["answerable"]]
  top1 = np.mean([index.retrieve(q["question"], 1)[0][0]["id"] in q["doc_ids"]
                  for q in questions])
  assert top1 >= 0.9, top1
  index.save(tmp_path / "idx")
  loaded = retrieval.Bm25Index.load(tmp_path / "idx")
  q = questions[0]["question"]
  assert [p["id"] for p, _ in loaded.retrieve(q, 3)] == [p["id"] for p, _ in index.retrieve(q, 3)]
  path = tmp_path / "kb.jsonl"
  path.write_text("".join(json.dumps(p) + "\n" for p in kb))
  assert retrieval.Bm25Index.load(path).retrieve(q, 1)[0][0] == index.retrieve(q, 1)[0][0]
  with pytest.raises(UserError, match="not a saved index"):
    retrieval.Bm25Index.load(tmp_path)
  (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": 3}\n')
  with pytest.raises(UserError, match="bad.jsonl:2"):
    retrieval.read_passages(tmp_path / "bad.jsonl")


def test_rag_prompt_respects_the_budget(kb, tok):
  passages = kb[:6]
  question = "What is Greta Park's job?"
  for budget in (5, 40, 80, 150, 10_000):
    text, used = retrieval.rag_prompt(question, passages, tok, budget)
    if used:
      assert len(tok.encode(text)) <= budget
      assert text.startswith("Passages:\n[1] ") and text.endswith(f"Question: {question}")
      assert used == 6 or len(tok.encode(retrieval.rag_prompt(
          question, passages[:used + 1], tok, 10_000)[0])) > budget
    else:
      assert text == question
  assert retrieval.rag_prompt(question, passages, tok, 10_000)[1] == 6


def test_rag_sft_examples_hold_retrieved_passages_and_the_answer(kb, tok):
  index = retrieval.Bm25Index.build(kb)
  questions = world.generate(seed=0)["train"]["kb_questions"][:20]
  examples = retrieval.rag_sft_examples(questions, index, tok, k=2, budget_tokens=400,
                                        system="Answer from the passages.")
  for q, ex in zip(questions, examples):
    system, user, assistant = ex["messages"]
    assert system["role"] == "system" and user["content"].endswith(q["question"])
    assert assistant["content"] in (f"The answer is {q['answer']}.", "I don't know.")
    assert len(ex["meta"]["retrieved"]) <= 2


def test_dense_index_with_a_given_embedder():
  vocab = ["apple", "river", "clock", "bread"]

  def embed(texts):  # bag of words over a 4-word vocabulary
    return np.array([[t.lower().count(w) for w in vocab] for t in texts], np.float32)

  passages = [{"id": w, "text": f"All about the {w}, the {w} again."} for w in vocab]
  index = retrieval.DenseIndex.build(passages, embed)
  assert index.retrieve("where is the clock", 1)[0][0]["id"] == "clock"


def test_search_tool(kb):
  tool = retrieval.retrieval_tool(retrieval.Bm25Index.build(kb), k=2)
  out = tool.fn({"query": "Greta Park"})
  assert out.startswith("[1] Greta Park.")
  assert tool.fn({"query": "zebra xylophone"}) == "no passage matches."
  with pytest.raises(Exception, match="query"):
    tool.fn({})


def test_dense_retrieval_from_the_models_pooled_hidden_states(kb, tok):
  import jax
  import jax.numpy as jnp

  from jaxllm.models import config as model_config
  from jaxllm.models import transformer
  from jaxllm.train.state import unbox
  model = transformer.Transformer(model_config.get_size("tiny", vocab_size=640))
  params = unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  embed = retrieval.mean_pooled_embedder(model, params, tok, batch_size=4)
  vectors = embed([p["text"] for p in kb[:10]])
  assert vectors.shape == (10, 64)
  # A text's vector is the mean of the model's final hidden states over its tokens.
  _, hidden = model.apply({"params": params}, jnp.asarray([tok.encode(kb[0]["text"])]),
                          return_hidden=True)
  np.testing.assert_allclose(vectors[0], np.asarray(hidden[0]).mean(0), atol=1e-5)
  # Batching and padding do not change a text's vector.
  np.testing.assert_allclose(embed([kb[3]["text"]])[0], vectors[3], atol=1e-5)
  index = retrieval.DenseIndex.build(kb[:10], embed)
  for p in kb[:10]:  # a passage's own text finds it first
    assert index.retrieve(passages.passage_text(p), 1)[0][0]["id"] == p["id"]


def test_world_rag_conversations_cite_evidence_and_keep_eval_questions_out(tok):
  convs = retrieval.world_rag_conversations(tok, seed=0, other_worlds=1, k=3, budget_tokens=400)
  w0, w1 = world.generate(0), world.generate(1)
  n0, n1 = len(w0["train"]["kb_questions"]), len(w1["train"]["kb_questions"])
  eval_questions = {q["question"] for q in w0["eval"]["kb_questions"]}
  n1 += sum(q["question"] not in eval_questions for q in w1["eval"]["kb_questions"])
  n1 -= sum(q["question"] in eval_questions for q in w1["train"]["kb_questions"])
  assert len(convs) == 2 * n0 + n1
  users = [c["messages"][0]["content"] for c in convs]
  assert not any(u.rsplit("Question: ", 1)[-1] in eval_questions for u in users)
  by_id = {p["id"]: p for p in w0["kb"]}
  q = next(q for q in w0["train"]["kb_questions"] if q["answerable"] and q["doc_ids"] and
           q["doc_ids"][0].startswith("person/"))
  reply = passages.cited_reply(q, by_id)
  assert reply.endswith(f"The answer is {q['answer']}.") and reply.split(". ")[0] + "." in \
      by_id[q["doc_ids"][0]]["text"]
