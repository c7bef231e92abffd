"""Evaluate a trained run: exact token-weighted perplexity and bits per byte on held-out text.

  python experiments/evaluate.py --workdir=/tmp/jaxllm/tiny
  python experiments/evaluate.py --workdir=RUN --texts='held_out/*.jsonl' --seq_len=512

Without --texts it scores the embedded world's eval pretraining text (the run's world seed).
Prints one JSON object and writes it to WORKDIR/eval/perplexity.json.
"""

import json
import pathlib

from absl import flags

from jaxllm import cli
from jaxllm.data import readers, world
from jaxllm.eval import perplexity
from jaxllm.inference import runs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory (config.json, checkpoints/, tokenizer.json).")
flags.DEFINE_string("texts", "", "Comma-separated globs of .txt / .jsonl(.gz) files (readers).")
flags.DEFINE_integer("seq_len", 0, "Window length (0: the run's config.data.seq_len).")
flags.DEFINE_integer("batch_size", 8, "Windows per forward pass.")
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


def main(argv):
  del argv
  run = runs.load_run(FLAGS.workdir, FLAGS.step)
  name, texts = held_out_texts(run)
  seq_len = FLAGS.seq_len or run.config.data.seq_len
  result = perplexity.evaluate_perplexity(run.model, run.params, run.tokenizer, texts,
                                          seq_len=seq_len, batch_size=FLAGS.batch_size)
  result = {"texts_from": name, "step": run.step, "seq_len": seq_len, **result}
  out = pathlib.Path(FLAGS.workdir) / "eval" / "perplexity.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result))


if __name__ == "__main__":
  cli.run(main)
