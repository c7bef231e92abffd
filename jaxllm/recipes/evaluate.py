"""Evaluation of a trained run: the suites over the embedded world and the probes
(jaxllm/eval/suites.py), into RUN/eval.json.

  python experiments/evaluate.py --workdir=RUN
  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py \\
      --config.suites=lm,qa --config.qa.questions=400 --step=600

Suites that do not apply to the run (a base model has no chat template; a reward model does
not generate) are listed under "skipped". Prints a table and writes RUN/eval.json. A second
evaluation of the same checkpoint merges into it: the suites asked again are replaced, the
others kept (each with its settings under "settings"); the results of another checkpoint are
kept beside it as RUN/eval_stepN.json.
"""

import json

import jax
import ml_collections

from jaxllm import cli, rundir, runs, storage
from jaxllm import config as config_lib
from jaxllm.errors import ConfigError
from jaxllm.eval import suites
from jaxllm.parallel import mesh as mesh_lib


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
  c.distributed = config_lib.distributed_config()  # several processes: every host runs it
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
  several runs are evaluated in one process (the pipeline's eval stage). With several processes
  (config.distributed) every process evaluates and process 0 writes eval.json.
  """
  validate(config)
  if "distributed" in config:
    mesh_lib.maybe_initialize_distributed(config.distributed)
  loaded = runs.load_run(workdir, step)
  result = {"workdir": str(workdir), **suites.evaluate(loaded, config, shared),
            "config": config.to_dict()}
  result["settings"] = {suite: config[suite].to_dict() for suite in result["suites"]
                        if suite in config and hasattr(config[suite], "to_dict")}
  out = storage.path(workdir) / "eval.json"
  previous = json.loads(out.read_text()) if out.is_file() else None
  if previous is not None and _same_model_and_world(previous, result):
    result = merge(previous, result, suites.selected(config))
  if jax.process_index() == 0:  # with several processes, one writes
    if previous is not None and not _same_model_and_world(previous, result):
      # another checkpoint (or world): its results are kept beside, under their step
      aside = out.with_name(f"eval_step{previous.get('step')}.json")
      if not aside.exists():
        rundir.write_text(aside, json.dumps(previous, indent=1) + "\n")
    rundir.write_text(out, json.dumps(result, indent=1) + "\n")
  return result


def _same_model_and_world(a: dict, b: dict) -> bool:
  return all(a.get(k) == b.get(k) for k in ("step", "world_seed", "stage"))


def merge(previous: dict, new: dict, asked: list[str]) -> dict:
  """`new` (the suites in `asked`, run now) over `previous` (an eval.json of the same
  checkpoint): the suites asked now replace their earlier results, the others stay. Each
  suite's settings are kept with it under "settings" (the config's section of that name)."""
  merged = {**new, "suites": {**previous.get("suites", {})}, "skipped": {}, "seconds": {},
            "settings": {**previous.get("settings", {})}}
  for suite in asked:
    merged["suites"].pop(suite, None)
    merged["settings"].pop(suite, None)
  merged["suites"].update(new["suites"])
  merged["settings"].update(new.get("settings", {}))
  merged["metrics"] = {k: v for k, v in previous.get("metrics", {}).items()
                       if k.split("/")[0] not in asked}
  merged["metrics"].update(new["metrics"])
  for key in ("skipped", "seconds"):
    merged[key] = {k: v for k, v in previous.get(key, {}).items() if k not in asked}
    merged[key].update(new.get(key, {}))
  return merged


def main():
  """python -m jaxllm.recipes.evaluate --workdir=RUN [--config=FILE] (experiments/evaluate.py)."""
  def run_and_print(config, workdir, step=None):
    result = run(config, workdir, step)
    if jax.process_index() == 0:
      print(suites.table(result))
      print(f"wrote {storage.path(workdir) / 'eval.json'}")
  cli.run_on_run(run_and_print, __file__, "Eval config (default: this recipe's; see "
                 "configs/eval/).")


if __name__ == "__main__":
  main()
