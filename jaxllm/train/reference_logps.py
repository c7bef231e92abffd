"""Reference log-probs computed once before preference training, stored in the run directory.

`load_or_compute` runs the frozen reference model (the init run's params) over every pair of the
train and validation sources in one pass and keeps, per (prompt, reply) sequence, the sum of the
reply's log-probs: {sequence_key: logp}. The table goes to WORKDIR/reference_logps.json with the
settings it depends on (init run and step, tokenizer, seq_len, sources); a run that resumes with
the same settings reads it instead of computing again. Batches then carry ref_chosen_logps and
ref_rejected_logps (jaxllm/data/preferences.py), so the train step needs no reference forward
pass and no second copy of the params: about a third less compute per step.

Every process takes part in each batch (a process's rows are its slice of the global batch) and
receives the replicated result, so each ends with the whole table; process 0 writes it.
"""

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxllm import storage
from jaxllm.data import preferences
from jaxllm.models import params as params_lib
from jaxllm.objectives.preference import reference_logps
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib

FILE = "reference_logps.json"


def compute_table(model, params: Any, sources: Sequence[Any], tokenizer, seq_len: int,
                  batch_size: int, mesh) -> dict[str, float]:
  """{sequence_key: sum of reply log-probs} over every pair of `sources`; `batch_size` is
  global (divisible by the process count and by the mesh's data axes)."""
  to_example = preferences.pair_example(tokenizer, seq_len)
  replicated = NamedSharding(mesh, P())
  fn = jax.jit(lambda p, b: reference_logps(p, b, model), out_shardings=replicated)
  local = batch_size // jax.process_count()
  first = jax.process_index() * local
  table: dict[str, float] = {}
  records = (source[i] for source in sources for i in range(len(source)))

  def run(chunk: list[dict]) -> None:
    rows = [to_example(r) for r in chunk]
    rows += [{k: np.zeros_like(v) for k, v in rows[0].items()}] * (batch_size - len(rows))
    mine = rows[first:first + local]
    batch = {k: np.stack([row[k] for row in mine]) for k in mine[0]}
    chosen, rejected = jax.device_get(fn(params, sharding_lib.global_batch(batch, mesh)))
    for record, c, r in zip(chunk, chosen, rejected):
      table[preferences.sequence_key(record["prompt"], record["chosen"])] = float(c)
      table[preferences.sequence_key(record["prompt"], record["rejected"])] = float(r)

  chunk: list[dict] = []
  for record in records:
    chunk.append(record)
    if len(chunk) == batch_size:
      run(chunk)
      chunk = []
  if chunk:
    run(chunk)
  return table


def load_or_compute(workdir, settings: dict, compute) -> dict[str, float]:
  """WORKDIR/reference_logps.json if it was computed with `settings`, else `compute()` (on
  every process) written by process 0."""
  path = storage.path(workdir) / FILE
  settings = json.loads(json.dumps(settings))
  if path.is_file():
    saved = json.loads(path.read_text())
    if saved.get("settings") == settings:
      return saved["logps"]
    print(f"{path} was computed with other settings; computing it again.", flush=True)
  table = compute()
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(path, json.dumps({"settings": settings, "logps": table}))
  return table


def for_run(config, workdir, model, params: Any,
            tokenizer) -> Callable[[Sequence[Any]], dict[str, float]]:
  """sources -> the reference table of a run: `model` with `params` (the init run's), placed
  on the run's mesh; batches of config.train.batch_size / microbatches pairs."""
  def table(sources: Sequence[Any]) -> dict[str, float]:
    seq_len = config.data.seq_len
    settings = {"init": config.init.checkpoint or config.init.get("hf_path", ""),
                "step": config.init.step, "seq_len": seq_len,
                "vocab_size": tokenizer.vocab_size,
                "sources": [[s.name, s.split, len(s)] for s in sources]}

    def compute():
      mesh = mesh_lib.make_mesh(config.mesh)
      rules = sharding_lib.rules_from_config(config.mesh.rules)
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        placed = jax.device_put(params, params_lib.params_shardings(model, mesh, rules, seq_len))
        batch = config.train.batch_size // config.train.microbatches
        start = time.perf_counter()
        out = compute_table(model, placed, sources, tokenizer, seq_len, batch, mesh)
      if jax.process_index() == 0:
        print(f"reference log-probs of {len(out):,} sequences in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
      return out
    return load_or_compute(workdir, settings, compute)
  return table
