"""Quantize a trained run to int8 weights (weight-only, symmetric, one scale per output channel).

  python experiments/quantize.py --workdir=RUN --out=RUN_INT8

writes RUN_INT8, a run directory: config.json (config.model.quant="int8"), checkpoints/STEP
(int8 kernels and embedding, float32 scales, norms and biases), the tokenizer, and
quantize.json: parameter memory in float32 and int8, held-out perplexity of both models on the
same texts (the run's world's held-out documents, or --texts=GLOBS), and how often their greedy
continuations agree. sample.py, chat.py and evaluate.py take RUN_INT8 as --workdir;
sft.py with config.lora.rank > 0 takes it as --config.init.checkpoint (LoRA over an int8 base,
QLoRA-style). A LoRA run is merged into its base first; a reward model is not quantized.
"""

import json
import pathlib

from absl import flags

from jaxllm import cli
from jaxllm.compress import quantize
from jaxllm.errors import UserError
from jaxllm.eval import compression
from jaxllm.inference import runs
from jaxllm.models import Transformer
from jaxllm.train.state import param_bytes

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory to quantize.")
flags.DEFINE_string("out", None, "New run directory for the int8 model.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_string("texts", "", "Globs of .txt/.jsonl/.html files to measure perplexity on "
                    "(default: the run's world's held-out documents).")
flags.DEFINE_integer("max_texts", 500, "Score at most this many documents (0: all).")
flags.DEFINE_integer("prompts", 64, "Greedy continuations compared (0: none).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  run = runs.load_run(FLAGS.workdir, FLAGS.step)
  if runs.is_reward_run(run.config):
    raise UserError(f"{FLAGS.workdir} is a reward-model run; quantize a language model.")
  cfg = run.model.cfg
  if cfg.quant != "none":
    raise UserError(f"{FLAGS.workdir} is quantized already (config.model.quant={cfg.quant!r}).")
  qcfg = quantize.quantized_config(cfg)
  qparams = quantize.quantize_params(run.params, cfg)
  qmodel = Transformer(qcfg)

  config = run.config
  config.model.quant = qcfg.quant
  if "lora" in config:  # the adapters are merged into the quantized params
    config.lora.rank = 0
  config.compressed = {"method": "int8 weight-only, per output channel",
                       "source": str(pathlib.Path(FLAGS.workdir).absolute()), "step": run.step}
  out = runs.save_run(FLAGS.out, config, qparams, run.tokenizer, run.step)

  texts = compression.held_out_texts(run.config, FLAGS.texts, FLAGS.max_texts)
  seq_len = run.config.data.seq_len
  report = {
      "source": str(FLAGS.workdir), "step": run.step,
      "bytes": {"float32": param_bytes(run.params), "int8": param_bytes(qparams)},
      **compression.perplexities({"float32": (run.model, run.params), "int8": (qmodel, qparams)},
                             run.tokenizer, texts, seq_len),
  }
  report["bytes"]["saved_fraction"] = 1 - report["bytes"]["int8"] / report["bytes"]["float32"]
  report["perplexity_change"] = report["int8"]["perplexity"] / report["float32"]["perplexity"] - 1
  if FLAGS.prompts:
    report["greedy"] = compression.greedy_agreement(run.model, run.params, qmodel, qparams,
                                                run.tokenizer, texts[:FLAGS.prompts])
  (out / "quantize.json").write_text(json.dumps(report, indent=1) + "\n")
  b = report["bytes"]
  print(f"params: {b['float32'] / 2**20:.2f} MiB float32 -> {b['int8'] / 2**20:.2f} MiB int8 "
        f"({b['saved_fraction']:.1%} saved)")
  print(f"held-out perplexity: {report['float32']['perplexity']:.4f} -> "
        f"{report['int8']['perplexity']:.4f} ({report['perplexity_change']:+.2%}) on "
        f"{report['int8']['tokens']} tokens")
  if "greedy" in report:
    g = report["greedy"]
    print(f"greedy continuations: {g['token_agreement']:.1%} of tokens and "
          f"{g['sequence_agreement']:.1%} of sequences the same ({g['prompts']} prompts)")
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
