"""The whole pipeline as a sequence of stages, each in its own directory under one workdir.

  data       the world's prose as a web crawl with junk planted (jaxllm/data/crawl.py),
             cleaned FineWeb-style          -> DIR/data/ (shards, stats.json, crawl_check.json);
             its math (drills, worked problems), which web filters would drop, kept apart as
             a curated math set                                 -> DIR/math/
  tokenizer  byte-level BPE on both                            -> DIR/tokenizer/tokenizer.json
  pretrain   next-token prediction on the mixture (config.math_weight of math)
                                                               -> DIR/pretrain/
  sft        chat SFT from pretrain                            -> DIR/sft/
  reward     Bradley-Terry reward model from sft               -> DIR/reward/
  dpo        DPO from sft                                      -> DIR/dpo/
  rl         GRPO with verifiable rewards from dpo             -> DIR/rl/
  eval       every stage's checkpoint through the eval suites  -> DIR/<stage>/eval.json
then DIR/report.md with plots (jaxllm/workflow/report.py).

A stage is complete when its output exists (data, tokenizer), its newest checkpoint is at
train.num_steps (training stages), or its eval.json matches the newest checkpoint (eval);
complete stages are skipped, so running the same command again resumes. A stage is complete
only for the settings and inputs it ran with (`stage_key`, recorded in DIR/pipeline.json): after
a change (another world seed, another pretraining step count, ...) the stale stages' directories
are moved to DIR/stale/ and they are done again. A training stage that
stops early (SIGTERM saves a checkpoint and returns) stops the pipeline there. Each training
stage starts from the stage named in config.init_from ("sft": "pretrain", ...); the stage it
starts from must be complete, whether it ran in this call or an earlier one.

Each stage is its recipe (jaxllm/recipes/): data preparation, tokenizer, the training stages
and evaluate; `main` is experiments/pipeline.py.
"""

import dataclasses
import functools
import glob
import gzip
import hashlib
import json
import pathlib
import shutil
import time

import jax
import ml_collections
from etils import epath

from jaxllm import cli, rundir, runs, storage
from jaxllm.data import crawl, readers, world
from jaxllm.errors import ConfigError, UserError
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.recipes import dpo, evaluate, prepare_data, pretrain, reward_model, rl, sft, tokenizer
from jaxllm.train import wandb_logging
from jaxllm.workflow import report

STAGES = ("data", "tokenizer", "pretrain", "sft", "reward", "dpo", "rl", "eval")
TRAINING = ("pretrain", "sft", "reward", "dpo", "rl")
_KEYED = ("data", "tokenizer", *TRAINING)  # stages whose output a changed config makes stale
RECIPES = {"pretrain": pretrain, "sft": sft, "reward": reward_model, "dpo": dpo, "rl": rl}
POLICIES = ("pretrain", "sft", "dpo", "rl")  # stages whose run answers questions


def selected(config) -> list[str]:
  """config.stages ("all" or comma-separated names) in pipeline order."""
  names = [s.strip() for s in config.stages.split(",") if s.strip()]
  if names == ["all"]:
    return list(STAGES)
  unknown = [s for s in names if s not in STAGES]
  if unknown or not names:
    raise ConfigError(f"config.stages={config.stages!r}: {unknown or 'nothing'} is not a stage; "
                      f"give 'all' or comma-separated names from {','.join(STAGES)}.")
  return [s for s in STAGES if s in names]


@dataclasses.dataclass(frozen=True)
class Paths:
  root: epath.Path  # the pipeline directory: local, or gs:// (jaxllm/storage.py)

  @property
  def local(self) -> pathlib.Path:
    """DIR itself, or for a gs:// DIR its local folder (jaxllm/storage.py local_folder): the
    data readers open the cleaned pages and the math set there (`readable_data`)."""
    return storage.local_folder(self.root)

  def of(self, stage: str):
    """The stage's directory, DIR/<stage>."""
    return self.root / stage

  @property
  def shards(self) -> str:
    """The cleaned pages, as a glob the data readers take (in `local`)."""
    return str(self.local / "data" / "*.jsonl.gz")

  @property
  def math_file(self):
    return self.root / _MATH

  @property
  def local_math_file(self) -> pathlib.Path:
    return self.local / _MATH

  @property
  def tokenizer_file(self) -> pathlib.Path:
    return self.root / "tokenizer" / "tokenizer.json"

  @property
  def status(self) -> pathlib.Path:
    return self.root / "pipeline.json"


_MATH = "math/math.jsonl.gz"
_DATA_FOLDERS = ("data", "math")  # what the data stage writes and later stages read


def readable_data(paths: Paths) -> None:
  """For a gs:// DIR: copies DIR/data and DIR/math into the local folder where missing (each
  process on its own machine), since the data readers open local files. No-op when local."""
  if not storage.is_remote(paths.root):
    return
  for name in _DATA_FOLDERS:
    if not (paths.local / name).is_dir() and (paths.root / name).is_dir():
      storage.copy_tree(paths.root / name, paths.local / name)


def stage_config(config, stage: str, paths: Paths) -> ml_collections.ConfigDict:
  """The stage's own config with the pipeline's paths and world seed filled in."""
  c = ml_collections.ConfigDict(config[stage].to_dict())
  c.data.world_seed = config.world_seed
  if "logging" in config:  # the pipeline's W&B settings, its stages grouped
    c.logging = wandb_settings(config, paths, stage)
  if stage == "pretrain":
    w = config.math_weight
    if not 0 <= w < 1:
      raise ConfigError(f"config.math_weight={w}: the share of math in pretraining batches, "
                        "in [0, 1).")
    c.data.source = (f"{paths.shards}@{1 - w};{paths.local_math_file}@{w}" if w
                     else paths.shards)
    c.data.tokenizer = str(paths.tokenizer_file)
  else:
    c.init.checkpoint = str(paths.of(config.init_from[stage]))
  if stage == "sft" and c.data.text_weight and not c.data.text_source:
    c.data.text_source = f"{paths.shards};{paths.local_math_file}"  # what pretraining read
  return c


# What each stage's output depends on, besides its own config section.
_READS = {"data": ("world_seed", "crawl", "clean"), "tokenizer": ("tokenizer",),
          "pretrain": ("math_weight",)}


def stage_key(config, stage: str, paths: Paths) -> str:
  """A digest of what a stage's output depends on: its settings (the resumable ones aside, its
  step count kept; jaxllm/rundir.py) and the keys of the stages it reads. A stage whose
  recorded key differs from this one is stale."""
  if stage == "data":
    settings, upstream = {k: config[k] for k in _READS["data"]}, []
  elif stage == "tokenizer":
    settings, upstream = config.tokenizer.to_dict(), ["data"]
  else:
    settings = rundir.defining_fields(stage_config(config, stage, paths),
                                      keep=("train.num_steps",))
    upstream = ["data", "tokenizer"] if stage == "pretrain" else [config.init_from[stage]]
    if stage == "pretrain":
      settings["math_weight"] = config.math_weight
  text = json.dumps([stage, settings, [stage_key(config, s, paths) for s in upstream]],
                    sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _status(paths: Paths) -> dict:
  """DIR/pipeline.json: per stage its seconds, completion and key ({} before the first stage)."""
  return json.loads(paths.status.read_text()) if paths.status.is_file() else {}


def _recorded_key(stage: str, paths: Paths) -> str | None:
  status = _status(paths)
  return status.get(stage, {}).get("key")


def is_stale(config, stage: str, paths: Paths) -> bool:
  """Whether the stage ran with other settings or inputs than `config` gives it now (a
  directory written before keys were recorded counts as current)."""
  recorded = _recorded_key(stage, paths)
  return recorded is not None and recorded != stage_key(config, stage, paths)


def is_complete(config, stage: str, paths: Paths) -> bool:
  if stage in _KEYED and is_stale(config, stage, paths):
    return False
  if stage == "data":
    return paths.math_file.is_file() and all(
        (paths.of("data") / name).is_file() for name in ("stats.json", "crawl_check.json"))
  if stage == "tokenizer":
    return paths.tokenizer_file.is_file() and (paths.of("tokenizer") / "stats.json").is_file()
  if stage in TRAINING:
    step = runs.latest_step(paths.of(stage))
    return step is not None and step >= config[stage].train.num_steps
  return all(_eval_current(paths.of(s)) for s in TRAINING
             if is_complete(config, s, paths))


def _eval_current(workdir) -> bool:
  path = workdir / "eval.json"
  return path.is_file() and json.loads(path.read_text()).get("step") == runs.latest_step(workdir)


def run_data(config, paths: Paths) -> dict:
  """Writes the crawl of the world's prose to DIR/raw/crawl.jsonl, cleans it into DIR/data and
  checks the result against the planted labels (DIR/data/crawl_check.json); writes the world's
  math documents to DIR/math/math.jsonl.gz. For a gs:// DIR all is written in its local
  folder (the cleaning reads and writes local files), then data/ and math/ are uploaded."""
  math, documents = [], []
  for d in world.generate(config.world_seed)["train"]["pretrain"]:
    (math if world.is_math(d) else documents).append(d)
  remote = storage.is_remote(paths.root)
  for name in _DATA_FOLDERS:  # an earlier, unfinished attempt's files
    shutil.rmtree(paths.local / name, ignore_errors=True)
  paths.local_math_file.parent.mkdir(parents=True, exist_ok=True)
  with gzip.open(paths.local_math_file, "wt", encoding="utf-8") as f:
    f.writelines(json.dumps({"text": d, "id": f"math-{i:05d}"}) + "\n" for i, d in enumerate(math))
  records = crawl.make_crawl(documents, config.world_seed, **config.crawl.to_dict())
  raw = paths.local / "raw" / "crawl.jsonl"
  raw.parent.mkdir(parents=True, exist_ok=True)
  raw.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  clean = ml_collections.ConfigDict(config.clean.to_dict())
  clean.input = str(raw)
  prepare_data.run(clean, paths.local / "data")
  counts = readers.ReadCounts()
  kept = [doc.id for path in readers.expand_inputs(paths.shards)
          for doc in readers.iter_documents(path, counts)]
  check = crawl.check(records, kept)
  rundir.write_text(paths.local / "data" / "crawl_check.json", json.dumps(check, indent=1) + "\n")
  if remote:
    for name in _DATA_FOLDERS:
      if (paths.root / name).exists():
        (paths.root / name).rmtree()
      storage.copy_tree(paths.local / name, paths.root / name)
  print(f"cleaning kept {check['content_kept']:.1%} of the world's pages and removed "
        f"{check['junk_removed']:.1%} of the planted junk; {len(math)} math documents kept "
        "apart")
  return check


def run_eval(config, paths: Paths) -> None:
  """Evaluates each complete training stage's newest checkpoint into DIR/<stage>/eval.json;
  policies get the pipeline's reward model's score of their replies when it is complete, and
  memorisation is measured on the cleaned pages pretraining read."""
  shared: dict = {}  # compiled samplers and the reward model, across the runs
  # Chosen before any eval.json is written, by process 0: every process evaluates these runs
  # (orbax's restore is a step every process takes together).
  todo = [stage for stage in TRAINING if mesh_lib.process_zero_value(
      is_complete(config, stage, paths) and not _eval_current(paths.of(stage)))]
  for stage in todo:
    workdir = paths.of(stage)
    eval_config = ml_collections.ConfigDict(config.eval.to_dict())
    if stage in POLICIES and is_complete(config, "reward", paths):
      eval_config.reward.model = str(paths.of("reward"))
    if not eval_config.memorization.texts:  # the pages pretraining read
      eval_config.memorization.texts = paths.shards
    start = time.perf_counter()
    result = evaluate.run(eval_config, workdir, shared=shared)
    if jax.process_index() == 0:
      print(f"evaluated {stage} (step {result['step']}) in {time.perf_counter() - start:.0f} s")


def wandb_settings(config, paths: Paths, name: str) -> ml_collections.ConfigDict:
  """config.logging for the W&B run of stage `name` (or "report"): in the pipeline's group
  (config.logging.wandb.group, else the directory's name), named GROUP-NAME."""
  settings = ml_collections.ConfigDict(config.logging.to_dict())
  group = settings.wandb.group or paths.root.name
  settings.wandb.group = group
  settings.wandb.name = f"{settings.wandb.name or group}-{name}"
  return settings


def report_to_wandb(config, paths: Paths) -> None:
  """A W&B run GROUP-report in the pipeline's group: the report's plots, and each evaluated
  stage's eval.json numbers as its summary ("sft/qa/accuracy", ...)."""
  settings = wandb_settings(config, paths, "report").wandb
  run = wandb_logging.WandbRun(paths.root, settings, config.to_dict(), job_type="report")
  try:
    run.log_images(sorted(paths.root.glob("*.png")))
    numbers = {}
    for stage in TRAINING:
      eval_file = paths.of(stage) / "eval.json"
      if eval_file.is_file():
        metrics = json.loads(eval_file.read_text()).get("metrics", {})
        numbers.update({f"{stage}/{k}": v for k, v in metrics.items()
                        if isinstance(v, int | float)})
    run.summarize(numbers)
  finally:
    run.finish()


def _record(paths: Paths, stage: str, **values) -> None:
  """Adds to DIR/pipeline.json: seconds accumulate over resumed calls."""
  status = _status(paths)
  entry = status.setdefault(stage, {})
  values["seconds"] = round(entry.get("seconds", 0.0) + values.get("seconds", 0.0), 1)
  entry.update(values)
  rundir.write_text(paths.status, json.dumps(status, indent=1) + "\n")


def _progress(paths: Paths, remaining: list[str], began: float) -> str:
  """Elapsed time of this call, and the time the remaining stages took when they last ran here
  (DIR/pipeline.json), when each of them has run before."""
  elapsed = time.perf_counter() - began
  text = f"{int(elapsed) // 60}:{int(elapsed) % 60:02d} elapsed"
  status = _status(paths)
  took = [status.get(s, {}).get("seconds") for s in remaining]
  if all(took):
    left = int(sum(took))
    text += f", about {left // 60}:{left % 60:02d} left (as these stages took here before)"
  return text


def _set_aside(stage: str, paths: Paths) -> None:
  """Moves a stale stage's directory to DIR/stale/STAGE-TIME (kept, not deleted) and forgets its
  record, so it is done again."""
  where = paths.of(stage)
  if where.exists():
    aside = paths.root / "stale" / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    storage.move(where, aside)
    print(f"== {stage}: its settings or the stages it reads changed since it ran; its directory "
          f"moved to {aside}, doing it again")
  status = _status(paths)
  status.pop(stage, None)
  rundir.write_text(paths.status, json.dumps(status, indent=1) + "\n")


@rundir.claims_workdir
def run(config, workdir) -> dict:
  """Runs the selected stages that are not complete, then writes the report; returns
  DIR/pipeline.json's contents.

  With several processes (config.distributed, joined by rundir.claims_workdir) every process
  runs the training stages and the eval together; process 0 alone makes the data and the
  tokenizer and writes the pipeline's own files (config, pipeline.json, report) while the others
  wait, and the choices read from those files (stale, complete) are process 0's. The processes
  share the work directory (a disk every host mounts, or gs://).
  """
  say = print if jax.process_index() == 0 else (lambda *a, **k: None)
  paths = Paths(storage.path(workdir))

  def write_config():
    paths.root.mkdir(parents=True, exist_ok=True)
    rundir.write_text(paths.root / "config.json", config.to_json(indent=1) + "\n")
  mesh_lib.on_process_zero(write_config, "pipeline-config")
  chosen, began = selected(config), time.perf_counter()
  for k, stage in enumerate(chosen, 1):
    # Decisions read from files process 0 rewrites are its own, followed by every process.
    agreed = mesh_lib.process_zero_value
    if agreed(stage in _KEYED and is_stale(config, stage, paths)):
      mesh_lib.on_process_zero(functools.partial(_set_aside, stage, paths),
                               f"pipeline-aside-{stage}")
    if agreed(is_complete(config, stage, paths)):
      say(f"== {stage}: complete, skipped")
      continue
    source = config.init_from.get(stage)
    if source and not is_complete(config, source, paths):
      raise UserError(f"stage {stage} starts from {source}, which is not complete in "
                      f"{paths.root}; add {source} to config.stages.")
    if stage == "pretrain" and not paths.tokenizer_file.is_file():
      raise UserError(f"stage pretrain needs {paths.tokenizer_file}; add tokenizer (and data) "
                      "to config.stages.")
    to_do = [stage] + [s for s in chosen[k:] if not is_complete(config, s, paths)]
    say(f"== stage {k}/{len(chosen)}: {stage} ({_progress(paths, to_do, began)})")
    start = time.perf_counter()
    if stage != "data":
      readable_data(paths)  # gs://: the data readers' local copy, made once per machine
    if stage == "data":
      mesh_lib.on_process_zero(lambda: run_data(config, paths), "pipeline-data")
    elif stage == "tokenizer":
      mesh_lib.on_process_zero(lambda: run_tokenizer(config, paths), "pipeline-tokenizer")
    elif stage == "eval":
      run_eval(config, paths)
    else:
      RECIPES[stage].run(stage_config(config, stage, paths), paths.of(stage))
    seconds = time.perf_counter() - start
    record = functools.partial(_finished, config, stage, paths, seconds)
    done = agreed(bool(mesh_lib.on_process_zero(record, f"pipeline-done-{stage}")))
    if not done:
      say(f"== {stage} stopped before its last step ({seconds:.0f} s); run the same command "
          "again to resume.")
      break
    say(f"== {stage} done in {seconds:.0f} s")
  mesh_lib.on_process_zero(lambda: report.write(paths.root), "pipeline-report")
  if wandb_logging.enabled(config):
    mesh_lib.on_process_zero(lambda: report_to_wandb(config, paths), "pipeline-wandb")
  return _status(paths)


def run_tokenizer(config, paths: Paths) -> None:
  """Trains the BPE tokenizer on the cleaned pages and the math set into DIR/tokenizer."""
  if not glob.glob(paths.shards) or not paths.local_math_file.is_file():
    raise UserError(f"stage tokenizer reads {paths.shards} and {paths.local_math_file}, which are "
                    "missing; add data to config.stages.")
  tok = ml_collections.ConfigDict(config.tokenizer.to_dict())
  tok.input = f"{paths.shards},{paths.local_math_file}"
  tokenizer.run(tok, paths.of("tokenizer"))


def _finished(config, stage: str, paths: Paths, seconds: float) -> bool:
  """Whether the stage is complete now; records its time (and key) in DIR/pipeline.json."""
  done = is_complete(config, stage, paths)
  _record(paths, stage, seconds=round(seconds, 1), complete=done,
          **({"key": stage_key(config, stage, paths)} if done and stage in _KEYED else {}))
  return done


def main():
  """python -m jaxllm.workflow.pipeline --config=FILE --workdir=DIR (experiments/pipeline.py)."""
  cli.run_stage(run, "Pipeline config (see configs/pipeline/).")


if __name__ == "__main__":
  main()
