"""Orbax checkpoints of the train state and the data iterator position."""

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


def make_manager(directory: str | Path, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints under `directory`, one subfolder per step."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                               item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
  """Saves state and data position. Returns once device arrays are copied (safe to donate)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=ocp.args.JsonSave(data_state)), force=True)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs)."""
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  return out["state"], out["data"]


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
