"""Evaluate a trained run: suites over the embedded world and probes, into RUN/eval.json.

  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py
  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py \\
      --config.suites=lm,qa --config.qa.questions=400 --step=600

The suites (jaxllm/eval/suites.py): held-out perplexity and bits per byte, question answering
(exact match, token F1), format compliance, refusals, word problems with pass@k, tool use, RAG
with and without retrieval, reward-model accuracy or score, memorisation and a templated bias
probe. Suites that do not apply to the run (a base model has no chat template; a reward model
does not generate) are listed under "skipped". Prints a table and writes RUN/eval.json.
"""

import json
import pathlib

from absl import flags
from ml_collections import config_flags

from jaxllm import cli
from jaxllm.eval import suites
from jaxllm.inference import runs

FLAGS = flags.FLAGS
DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "eval" / "default.py"
config_flags.DEFINE_config_file("config", str(DEFAULT_CONFIG),
                                "Eval config (see configs/eval/).", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (config.json, checkpoints/, tokenizer.json).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  run = runs.load_run(FLAGS.workdir, FLAGS.step)
  result = {"workdir": str(FLAGS.workdir), **suites.evaluate(run, FLAGS.config),
            "config": FLAGS.config.to_dict()}
  out = pathlib.Path(FLAGS.workdir) / "eval.json"
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(suites.table(result))
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
