"""Evaluation of a trained run: the suites over the embedded world and the probes
(jaxllm/eval/suites.py), into RUN/eval.json.

  python experiments/evaluate.py --workdir=RUN
  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py \\
      --config.suites=lm,qa --config.qa.questions=400 --step=600

Suites that do not apply to the run (a base model has no chat template; a reward model does
not generate) are listed under "skipped". Prints a table and writes RUN/eval.json.
"""

import json
import pathlib

import ml_collections

from jaxllm import cli, runs
from jaxllm.errors import ConfigError
from jaxllm.eval import suites


def default_config() -> ml_collections.ConfigDict:
  """Every field the harness reads (configs/eval/default.py starts from it)."""
  c = ml_collections.ConfigDict()
  c.suites = suites.SUITES
  c.world_seed = -1  # -1: the run's config.data.world_seed
  c.batch_size = 64  # prompts per sampler call
  c.max_new_tokens = 96
  c.lm = ml_collections.ConfigDict({"texts": "", "seq_len": 0})  # globs; 0: the run's seq_len
  c.qa = ml_collections.ConfigDict({"questions": 200, "prompt": "auto", "shots": 3})
  c.refusal = ml_collections.ConfigDict({"questions": 0})  # of the world's refusal kind; 0: all
  c.math = ml_collections.ConfigDict(
      {"questions": 200, "pass_k": 4, "samples": 8, "temperature": 1.0})
  c.tool = ml_collections.ConfigDict({"questions": 16, "max_rounds": 2})
  # index: passages .jsonl or a saved BM25 index directory; "": BM25 over the world's documents
  c.rag = ml_collections.ConfigDict(
      {"questions": 100, "k": 3, "budget_tokens": 384, "index": ""})
  c.reward = ml_collections.ConfigDict({"model": "", "pairs": 200})
  c.memorization = ml_collections.ConfigDict(
      {"documents": 200, "prefix_tokens": 16, "continuation_tokens": 16, "texts": ""})
  c.bias = ml_collections.ConfigDict({"templates": ""})  # .jsonl; "": probes.DEFAULT_TEMPLATES
  c.skills = ml_collections.ConfigDict({"prompts": 60})  # per skill
  return c


def get_config(arg=None):
  """The default config: experiments/evaluate.py's --config when none is given."""
  del arg
  return default_config()


def validate(config: ml_collections.ConfigDict) -> None:
  suites.selected(config)  # names every unknown suite
  if config.qa.prompt not in ("auto", "chat", "plain"):
    raise ConfigError(f"config.qa.prompt={config.qa.prompt!r}: use auto, chat or plain.")
  if config.math.pass_k > config.math.samples:
    raise ConfigError(f"config.math.pass_k={config.math.pass_k} needs at least as many samples "
                      f"(config.math.samples={config.math.samples}).")


def run(config, workdir, step: int | None = None, shared: dict | None = None) -> dict:
  """Evaluates WORKDIR's newest (or given) checkpoint into WORKDIR/eval.json; returns it.

  `shared` (a dict kept across calls) reuses compiled samplers and loaded reward models when
  several runs are evaluated in one process (the pipeline's eval stage).
  """
  validate(config)
  loaded = runs.load_run(workdir, step)
  result = {"workdir": str(workdir), **suites.evaluate(loaded, config, shared),
            "config": config.to_dict()}
  out = pathlib.Path(workdir) / "eval.json"
  out.write_text(json.dumps(result, indent=1) + "\n")
  return result


def main():
  """python -m jaxllm.recipes.evaluate --workdir=RUN [--config=FILE] (experiments/evaluate.py)."""
  def run_and_print(config, workdir, step=None):
    result = run(config, workdir, step)
    print(suites.table(result))
    print(f"wrote {pathlib.Path(workdir) / 'eval.json'}")
  cli.run_on_run(run_and_print, __file__, "Eval config (default: this recipe's; see "
                 "configs/eval/).")


if __name__ == "__main__":
  main()
