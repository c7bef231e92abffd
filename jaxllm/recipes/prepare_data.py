"""Data preparation: raw text (.txt, .jsonl(.gz), .html) cleaned FineWeb-style into gzip JSONL
shards with per-step statistics (jaxllm/data/cleaning/runner.py).

  python experiments/prepare_data.py --config=configs/data/clean.py \\
      --config.input='raw/*.jsonl' --workdir=/tmp/jaxllm/clean

Writes WORKDIR/shard-00000-of-0000N.jsonl.gz (one {"text", "id", "url"?, "metadata"?} per line,
readable with jaxllm.data.readers), WORKDIR/stats.json and WORKDIR/config.json, and prints a
table of documents in / kept / dropped per step. With --config.process_count=P the output of
process i goes to WORKDIR/process-0000i-of-0000P/.
"""

import dataclasses

import ml_collections

from jaxllm import cli, rundir, storage
from jaxllm.data.cleaning import runner
from jaxllm.errors import ConfigError


def default_config() -> ml_collections.ConfigDict:
  """Every field a cleaning run reads; step settings default to datatrove's class defaults."""
  c = ml_collections.ConfigDict()
  c.input = ""  # comma-separated globs of .txt, .jsonl, .jsonl.gz, .html files
  c.text_field = "text"  # jsonl field holding the text
  c.separator = ""  # .txt: "" = one document per file, "\n\n" = blank lines, "%" = marker lines
  c.skip_malformed = False  # skip and count bad jsonl lines instead of stopping
  c.steps = tuple(runner.STEP_TYPES)
  for name, step_type in runner.STEP_TYPES.items():
    c[name] = {f.name: f.default for f in dataclasses.fields(step_type) if f.init}
  c.dedup = ml_collections.ConfigDict()
  c.dedup.exact = True  # drop documents equal after normalization (dedup.normalize)
  c.dedup.minhash = True  # drop near-duplicates
  c.dedup.ngram = 5  # datatrove MinhashConfig.n_grams (word shingles)
  c.dedup.bands = 14  # datatrove MinhashConfig.num_buckets
  c.dedup.rows = 8  # datatrove MinhashConfig.hashes_per_bucket
  c.dedup.seed = 1  # datatrove MinhashConfig.seed
  c.num_workers = 0  # 0: all cores
  c.process_index = 0  # this process's share of the input files ...
  c.process_count = 1  # ... out of this many
  c.docs_per_shard = 50_000
  c.examples_per_step = 3  # dropped examples kept in stats.json per step
  return c


def validate(config) -> None:
  """Checks the fields that can be checked before reading anything."""
  if not config.input:
    raise ConfigError("config.input is empty; pass --config.input=GLOB (comma-separated globs).")
  unknown = [s for s in config.steps if s not in runner.STEP_TYPES]
  if unknown or len(set(config.steps)) != len(config.steps):
    raise ConfigError(f"config.steps={tuple(config.steps)} has unknown or repeated names; use "
                      f"each of {tuple(runner.STEP_TYPES)} at most once.")
  if not config.language.languages or not 0 <= config.language.threshold < 1:
    raise ConfigError("config.language needs at least one language in languages and a threshold "
                      f"in [0, 1); got {tuple(config.language.languages)}, "
                      f"{config.language.threshold}.")
  for name in ("ngram", "bands", "rows"):
    if config.dedup[name] < 1:
      raise ConfigError(f"config.dedup.{name}={config.dedup[name]} must be at least 1.")
  if config.num_workers < 0:
    raise ConfigError(f"config.num_workers={config.num_workers} must be >= 0 (0: all cores).")
  if config.docs_per_shard < 1 or config.examples_per_step < 0:
    raise ConfigError("config.docs_per_shard must be >= 1 and config.examples_per_step >= 0.")
  if not 0 <= config.process_index < config.process_count:
    raise ConfigError(f"config.process_index={config.process_index} must be in "
                      f"[0, config.process_count={config.process_count}).")


@rundir.claims_workdir
def run(config, workdir, hooks=()) -> dict:
  """Checks the config, cleans the input into WORKDIR and prints the per-step table; returns
  the stats (also in WORKDIR/stats.json)."""
  del hooks  # no training loop
  storage.require_local(workdir, "--workdir", "the cleaning workers write their shards with "
                        "local file I/O")
  validate(config)
  runner.build_steps(config)  # fail on a bad step setting before starting workers
  stats = runner.run(config, workdir)
  print(runner.summary_table(stats))
  return stats


def main():
  """python -m jaxllm.recipes.prepare_data --config=FILE --workdir=DIR
  (experiments/prepare_data.py)."""
  cli.run_stage(run, "Config file (see configs/data/).")


if __name__ == "__main__":
  main()
