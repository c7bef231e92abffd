"""Orbax checkpoints of the train state and the data iterator position."""

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxllm.errors import ConfigError


def make_manager(directory: str | Path, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints under `directory`, one subfolder per step."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                               item_names=("state", "data"))


def _all_processes(data_state: dict) -> list[dict]:
  """Every process's data position (each reads its own shard), gathered in every process."""
  if jax.process_count() == 1:
    return [data_state]
  encoded = np.frombuffer(json.dumps(data_state).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.int32(len(encoded)))
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(encoded)] = encoded
  rows = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:n])) for row, n in zip(rows, lengths)]


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
  """Saves state and every process's data position. Returns once device arrays are copied
  (safe to donate)."""
  data = {"processes": _all_processes(data_state)}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=ocp.args.JsonSave(data)), force=True)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  """(state on the shardings carried by `abstract_state`, this process's data position).

  The state is resharded onto whatever mesh `abstract_state` describes. A checkpoint written by
  another number of processes restores when the data positions are per shard (a "shards" dict,
  jaxllm/data/pipeline.py): this process gets the union of every writer's shards.
  """
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  processes = out["data"]["processes"]
  if len(processes) == jax.process_count():
    return out["state"], processes[jax.process_index()]
  merged = merge_shard_positions(processes)
  if merged is None:
    raise ConfigError(
        f"checkpoint step {step} was written by {len(processes)} processes and this run has "
        f"{jax.process_count()}; its data positions are per process (a text-file stream, RL "
        "prompts, or config.data.num_workers > 0), so resume with the same number of processes "
        "or start in a new --workdir.")
  return out["state"], merged


def merge_shard_positions(positions: list[dict]) -> dict | None:
  """One data position holding every process's shards, or None when they are not per shard
  or disagree on anything but their shards."""
  if not all(isinstance(p.get("shards"), dict) for p in positions):
    return None
  rest = [{k: v for k, v in p.items() if k != "shards"} for p in positions]
  if any(r != rest[0] for r in rest):
    return None
  shards = {}
  for p in positions:
    shards.update(p["shards"])
  return {**rest[0], "shards": shards}


def restore_params(directory: str | Path, abstract_params: Any, step: int | None = None) -> Any:
  """Params only from a run's checkpoints (for fine-tuning from a pretrained run)."""
  manager = ocp.CheckpointManager(Path(directory).absolute(), item_names=("state", "data"))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint found in {directory}")
  abstract = {"params": abstract_params}
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=abstract, restore_args=ocp.checkpoint_utils
                                   .construct_restore_args(abstract), partial_restore=True)))
  manager.close()
  return out["state"]["params"]
