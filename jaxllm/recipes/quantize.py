"""int8 weight-only quantization of a trained run (symmetric, one scale per output channel),
written as a new run directory, with what it cost.

  python experiments/quantize.py --workdir=RUN --out=RUN_INT8 [--config.max_texts=100]

writes RUN_INT8, a run directory of stage "quantize" whose lineage is RUN's (jaxllm/runs.py):
config.json (config.model.quant="int8"), checkpoints/STEP (int8 kernels and embedding, float32
scales, norms and biases), the tokenizer, and quantize.json: parameter memory in float32 and
int8, held-out perplexity of both models on the same texts (the run's world's held-out
documents, or config.texts), and how often their greedy continuations agree. sample.py,
chat.py and evaluate.py take RUN_INT8 as --workdir; sft.py with config.lora.rank > 0 takes it as
--config.init.checkpoint (LoRA over an int8 base, QLoRA-style). A LoRA run is merged into its
base first; a reward model is not quantized.
"""

import json

import ml_collections

from jaxllm import cli, rundir, runs, storage
from jaxllm.compress import quantize
from jaxllm.errors import ConfigError, UserError
from jaxllm.eval import compression
from jaxllm.models import Transformer
from jaxllm.models.params import param_bytes


def default_config() -> ml_collections.ConfigDict:
  """What quantize.json measures (the params are quantized the one way above)."""
  c = ml_collections.ConfigDict()
  c.texts = ""  # globs of .txt/.jsonl/.html files; "": the run's world's held-out documents
  c.max_texts = 500  # documents scored at most (0: all)
  c.prompts = 64  # greedy continuations compared (0: none)
  return c


def get_config(arg=None):
  """The default config: experiments/quantize.py's --config when none is given."""
  del arg
  return default_config()


def validate(config: ml_collections.ConfigDict) -> None:
  for name in ("max_texts", "prompts"):
    if config[name] < 0:
      raise ConfigError(f"config.{name}={config[name]} must be >= 0.")


def run(config, workdir, out, step: int | None = None) -> dict:
  """Quantizes WORKDIR's newest (or given) checkpoint into the new run directory `out`;
  returns quantize.json's contents."""
  validate(config)
  source = runs.load_run(workdir, step)
  runs.require_language_model(source, "--workdir", workdir)
  cfg = source.model.cfg
  if cfg.quant != "none":
    raise UserError(f"{workdir} is quantized already (config.model.quant={cfg.quant!r}).")
  qcfg = quantize.quantized_config(cfg)
  qparams = quantize.quantize_params(source.params, cfg)
  qmodel = Transformer(qcfg)

  written = ml_collections.ConfigDict(source.config.to_dict())
  written.init.stage = runs.lineage(source.config)
  written.stage = "quantize"
  written.value_head = False  # the LM's params only
  written.model.quant = qcfg.quant
  written.init.checkpoint = str(storage.absolute(workdir))
  written.init.step = source.step
  if "hf_path" in written.init:
    written.init.hf_path = ""
  if "lora" in written:  # the adapters are merged into the quantized params
    written.lora.rank = 0
  written.compressed = {"method": "int8 weight-only, per output channel",
                        "source": str(storage.absolute(workdir)), "step": source.step}
  out = runs.save_run(out, written, qparams, source.tokenizer, source.step)

  texts = compression.held_out_texts(source.config, config.texts, config.max_texts)
  seq_len = source.config.data.seq_len
  report = {
      "source": str(workdir), "step": source.step,
      "bytes": {"float32": param_bytes(source.params), "int8": param_bytes(qparams)},
      **compression.perplexities(
          {"float32": (source.model, source.params), "int8": (qmodel, qparams)},
          source.tokenizer, texts, seq_len),
  }
  report["bytes"]["saved_fraction"] = 1 - report["bytes"]["int8"] / report["bytes"]["float32"]
  report["perplexity_change"] = report["int8"]["perplexity"] / report["float32"]["perplexity"] - 1
  if config.prompts:
    report["greedy"] = compression.greedy_agreement(source.model, source.params, qmodel, qparams,
                                                    source.tokenizer, texts[:config.prompts])
  rundir.write_text(out / "quantize.json", json.dumps(report, indent=1) + "\n")
  _summary(report, out)
  return report


def _summary(report: dict, out) -> None:
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


def main():
  """python -m jaxllm.recipes.quantize --workdir=RUN --out=DIR (experiments/quantize.py)."""
  cli.run_on_run(run, __file__, "Quantization settings (default: this recipe's).",
                 out_help="New run directory for the int8 model.")


if __name__ == "__main__":
  main()
