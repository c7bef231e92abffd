"""Evaluate a trained run on held-out data.

  python experiments/evaluate.py --workdir=/tmp/jaxllm/tiny                    # perplexity
  python experiments/evaluate.py --workdir=RUN --texts='held_out/*.jsonl' --seq_len=512
  python experiments/evaluate.py --workdir=RUN --task=kb                       # no retrieval
  python experiments/evaluate.py --workdir=RUN --task=kb --rag_index=WORLD/kb.jsonl
  python experiments/evaluate.py --workdir=RUN --task=qa                       # chat model
  python experiments/evaluate.py --workdir=RUN --task=qa --prompted --shots=3  # base model

perplexity: exact token-weighted perplexity and bits per byte; without --texts it scores the
embedded world's eval pretraining text (the run's world seed).
kb: greedy answers to the world's eval knowledge questions through the chat template, scored
with world.score; --rag_index puts the top --rag_k passages before each question.
qa: exact match of greedy answers to the world's held-out SFT questions (worked problems and
facts; system prompts kept) through the chat template; --prompted asks a base model in the
plain-text format it was pretrained on ("Problem: ...\nSolution:\n"), after --shots solved
training examples.
Prints one JSON object and writes it to WORKDIR/eval/{task}.json.
"""

import json
import pathlib

from absl import flags

from jaxllm import cli
from jaxllm.data import readers, world
from jaxllm.eval import perplexity, qa
from jaxllm.inference import retrieval, runs, sampler

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory (config.json, checkpoints/, tokenizer.json).")
flags.DEFINE_enum("task", "perplexity", ["perplexity", "kb", "qa"], "What to evaluate.")
flags.DEFINE_string("texts", "", "perplexity: comma-separated globs of .txt / .jsonl(.gz) files.")
flags.DEFINE_integer("seq_len", 0, "perplexity: window length (0: the run's config.data.seq_len).")
flags.DEFINE_integer("batch_size", 8, "Windows (perplexity) or questions (kb) per batch.")
flags.DEFINE_string("rag_index", "", "kb: passages .jsonl or saved BM25 index directory.")
flags.DEFINE_integer("rag_k", 3, "kb: passages per question.")
flags.DEFINE_integer("rag_budget", 384, "kb: tokens the passages and question may take at most.")
flags.DEFINE_integer("questions", 0, "qa: the first N held-out questions (0: all 400).")
flags.DEFINE_bool("prompted", False, "qa: plain-text prompt for a base model, not the chat "
                  "template.")
flags.DEFINE_integer("shots", 3, "qa --prompted: solved training examples before the question.")
flags.DEFINE_integer("max_new_tokens", 96, "kb, qa: tokens per answer at most.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir"])


def held_out_texts(run) -> tuple[str, list[str]]:
  if FLAGS.texts:
    counts = readers.ReadCounts()
    texts = [d.text for path in readers.expand_inputs(FLAGS.texts)
             for d in readers.iter_documents(path, counts)]
    return FLAGS.texts, texts
  seed = run.config.data.get("world_seed", 0)
  return f"world(seed={seed}) eval/pretrain", list(world.generate(seed)["eval"]["pretrain"])


def evaluate_perplexity(run) -> dict:
  name, texts = held_out_texts(run)
  seq_len = FLAGS.seq_len or run.config.data.seq_len
  result = perplexity.evaluate_perplexity(run.model, run.params, run.tokenizer, texts,
                                          seq_len=seq_len, batch_size=FLAGS.batch_size)
  return {"texts_from": name, "seq_len": seq_len, **result}


def evaluate_kb(run) -> dict:
  seed = run.config.data.get("world_seed", 0)
  questions = world.generate(seed)["eval"]["kb_questions"]
  index = retrieval.Bm25Index.load(FLAGS.rag_index) if FLAGS.rag_index else None
  tok = run.tokenizer
  smp = sampler.Sampler(run.model, run.params, tok.pad_id, vocab_limit=tok.vocab_size)
  result = qa.kb_accuracy(smp, tok, questions, index=index, k=FLAGS.rag_k,
                          budget_tokens=FLAGS.rag_budget, batch_size=FLAGS.batch_size)
  return {"questions_from": f"world(seed={seed}) eval/kb_questions",
          "retrieval": f"bm25 k={FLAGS.rag_k}" if index else "none", **result}


def evaluate_qa(run) -> dict:
  seed = run.config.data.get("world_seed", 0)
  data = world.generate(seed)
  records = data["eval"]["sft"][:FLAGS.questions or None]
  tok = run.tokenizer
  smp = sampler.Sampler(run.model, run.params, tok.pad_id, vocab_limit=tok.vocab_size)
  common = dict(max_new_tokens=FLAGS.max_new_tokens, batch_size=FLAGS.batch_size)
  if FLAGS.prompted:
    # Solved examples of both kinds from the train split, the same for every question.
    train = data["train"]["sft"]
    by_kind = ([r for r in train if r["meta"]["kind"] == "fact"],
               [r for r in train if r["meta"]["kind"] != "fact"])
    shots = [by_kind[i % 2][i // 2] for i in range(FLAGS.shots)]
    result = qa.prompted_accuracy(smp, tok, records, shots, **common)
    prompt = f"plain text, {FLAGS.shots}-shot"
  else:
    result = qa.conversation_accuracy(smp, tok, records, **common)
    prompt = "chat template"
  return {"questions_from": f"world(seed={seed}) eval/sft", "prompt": prompt, **result}


TASKS = {"perplexity": evaluate_perplexity, "kb": evaluate_kb, "qa": evaluate_qa}


def main(argv):
  del argv
  run = runs.load_run(FLAGS.workdir, FLAGS.step)
  result = {"task": FLAGS.task, "step": run.step, **TASKS[FLAGS.task](run)}
  name = FLAGS.task + ("_prompted" if FLAGS.task == "qa" and FLAGS.prompted else "")
  out = pathlib.Path(FLAGS.workdir) / "eval" / f"{name}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result))


if __name__ == "__main__":
  cli.run(main)
