"""Orbax checkpoints of the train state and the data iterator position, with integrity checks.

Orbax writes each step into a temporary folder and renames it when every process has finished,
then deletes the steps beyond `keep`: so the newest complete checkpoint is never removed before
a newer one is complete, and a run killed mid-save leaves only a temporary folder that is never
read. On top of that, `Checkpoints` seals every finished step with a manifest (size and SHA-256
of each file, MANIFEST in the step folder, written by process 0 off the training thread) and
`Checkpoints.restore_latest` checks it: a truncated or altered checkpoint is moved to
WORKDIR/checkpoints_damaged/ with a warning and the run falls back to the previous good one.
Every step also carries checksums of the state's arrays as they were in memory (in its data
item, written by orbax with the step), compared on every restore: so the newest step, which a
kill between its save and its seal leaves without a manifest, is checked too, and a step whose
files are missing or cut off is damage whether sealed or not.
"""

import concurrent.futures
import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxllm import storage
from jaxllm.errors import ConfigError, UserError

MANIFEST = "jaxllm_manifest.json"
# tensorstore's status codes for damaged or cut-off files, and orbax's word for an item folder
# that is gone, as opposed to a checkpoint that does not fit the config (orbax's structure and
# shape errors), which are raised.
_DAMAGE_MARKERS = ("DATA_LOSS", "OUT_OF_RANGE", "was not found in the checkpoint")


def make_manager(directory: str | Path, keep: int,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints under `directory`, one subfolder per step."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(storage.absolute(directory), options=options,
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


def _as_uint32(x: jax.Array) -> jax.Array:
  """The bits of `x`, one uint32 per element (narrower types zero-extended)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _checksums(leaves: list[jax.Array]) -> jax.Array:
  """[leaves, 2] uint32: per leaf the wrapping sum of its bits and the sum weighted by position,
  exact whatever the sharding (integer sums wrap the same in any order)."""
  out = []
  for x in leaves:
    bits = _as_uint32(x).reshape(-1)
    weights = jnp.arange(1, bits.size + 1, dtype=jnp.uint32)
    out.append(jnp.stack([jnp.sum(bits, dtype=jnp.uint32),
                          jnp.sum(bits * weights, dtype=jnp.uint32)]))
  return jnp.stack(out) if out else jnp.zeros((0, 2), jnp.uint32)


def state_checksums(state: Any) -> dict[str, list[int]]:
  """A checksum of every leaf of `state` (two uint32, keyed by its path): computed from the
  arrays in memory when a checkpoint is saved and compared with the arrays read back when it is
  restored, so a changed bit is found even in a step the manifest has not sealed yet."""
  leaves = jax.tree_util.tree_leaves_with_path(state)
  sums = np.asarray(jax.device_get(_checksums([x for _, x in leaves]))).tolist()
  return {jax.tree_util.keystr(path): pair for (path, _), pair in zip(leaves, sums)}


def _checksum_problem(restored: Any, data: dict) -> str | None:
  """What differs between restored arrays (all of a state, or some: its params) and the
  checksums saved with them (None: all equal, or a checkpoint saved without them)."""
  saved = data.get("checksums")
  if not isinstance(saved, dict):
    return None
  now = state_checksums(restored)
  bad = [path for path, pair in now.items() if path in saved and saved[path] != pair]
  return (f"{len(bad)} array(s) differ from what was saved (checksum), first {bad[0]}"
          if bad else None)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
  """Saves state and every process's data position, with the state's checksums. Returns once
  device arrays are copied (safe to donate)."""
  data = {"processes": _all_processes(data_state), "checksums": state_checksums(state)}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=ocp.args.JsonSave(data)), force=True)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  """(state on the shardings carried by `abstract_state`, this process's data position).

  The state is resharded onto whatever mesh `abstract_state` describes. A checkpoint written by
  another number of processes restores when the data positions are per shard (a "shards" dict,
  jaxllm/data/batching.py): this process gets the union of every writer's shards; or when they
  are one position of the whole job, the same in every process and marked so
  ("same_in_every_process": RL's prompt order, jaxllm/rl/rollout.py).
  """
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  problem = _checksum_problem(out["state"], out["data"])
  if problem is not None:
    raise CheckpointDamaged(problem)
  processes = out["data"]["processes"]
  if len(processes) == jax.process_count():
    return out["state"], processes[jax.process_index()]
  if all(p.get("same_in_every_process") and p == processes[0] for p in processes):
    return out["state"], processes[0]  # a position of the whole job (RL's prompts)
  merged = merge_shard_positions(processes)
  if merged is None:
    raise ConfigError(
        f"checkpoint step {step} was written by {len(processes)} processes and this run has "
        f"{jax.process_count()}; its data positions are per process (a text-file stream or "
        "config.data.num_workers > 0), so resume with the same number of processes "
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


# -- integrity --

def _digest(path) -> str:
  h = hashlib.sha256()
  with path.open("rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def write_manifest(step_dir) -> bool:
  """Records the size and SHA-256 of every file of a finished step; False if the step is gone
  (deleted by the manager meanwhile)."""
  step_dir = storage.path(step_dir)
  try:
    files = {str(p.relative_to(step_dir)): {"size": storage.size(p), "sha256": _digest(p)}
             for p in storage.files_under(step_dir) if p.name != MANIFEST}
    storage.write_text(step_dir / MANIFEST, json.dumps({"files": files}, indent=0) + "\n")
    return True
  except FileNotFoundError:
    return False


def check_manifest(step_dir) -> str | None:
  """What is wrong with a step folder against its manifest, or None. A step without a manifest
  (the run stopped between the save and the sealing) passes; its restore is still guarded."""
  step_dir = storage.path(step_dir)
  path = step_dir / MANIFEST
  if not path.exists():
    return None
  try:
    files = json.loads(path.read_text())["files"]
    if not all(isinstance(w, dict) and isinstance(w.get("size"), int)
               and isinstance(w.get("sha256"), str) for w in files.values()):
      raise ValueError("an entry without its size and digest")
  except (ValueError, KeyError, TypeError, AttributeError):  # a damaged manifest is damage too
    return f"{path} is unreadable"
  for name, want in files.items():
    file = step_dir / name
    if not file.is_file():
      return f"{file} is missing"
    if storage.size(file) != want["size"]:
      return f"{file} has {storage.size(file)} bytes, {want['size']} were written"
    if _digest(file) != want["sha256"]:
      return f"{file} differs from what was written (SHA-256 mismatch)"
  return None


# What the OS says when a checkpoint cannot be written (tensorstore and orbax pass it on).
_WRITE_FAILURES = ("No space left on device", "Read-only file system", "Permission denied",
                   "Disk quota exceeded")


def _chain(error: BaseException | None):
  """`error`, then the errors it was raised from (orbax wraps tensorstore's in its own)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def write_failure(error: BaseException | None) -> str | None:
  """The OS's reason when `error` (or an error it was raised from) is a failed write: a full
  disk, a read-only or forbidden directory; None for anything else."""
  for link in _chain(error):
    if isinstance(link, OSError) and link.strerror in _WRITE_FAILURES:
      return link.strerror
    found = next((m for m in _WRITE_FAILURES if m in str(link)), None)
    if found:
      return found
  return None


class CheckpointDamaged(Exception):
  """The restored arrays differ from the checksums saved with them."""


def is_damage(error: Exception) -> bool:
  """Whether a restore failed on damaged or missing files rather than on a checkpoint that does
  not fit the config (orbax's structure and shape errors). The errors it was raised from count:
  orbax wraps tensorstore's in its own."""
  return any(isinstance(link, (json.JSONDecodeError, CheckpointDamaged, FileNotFoundError))
             or any(marker in str(link) for marker in _DAMAGE_MARKERS) for link in _chain(error))


def _agree(flag: bool) -> bool:
  """True in every process if it is True in any."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


class Checkpoints:
  """A run's checkpoints: the orbax manager, sealing of finished steps, and restore with
  fallback past damaged steps. Use `save`, `restore_latest`, `close`."""

  def __init__(self, directory: str | Path, keep: int, async_save: bool = True,
               log=lambda message: print(message, file=sys.stderr, flush=True)):
    self.directory = storage.absolute(directory)
    self.manager = make_manager(self.directory, keep, async_save)
    self._log = log
    self._unsealed: list[int] = []
    self._pool = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="seal")
                  if jax.process_index() == 0 else None)
    self._sealing: list[concurrent.futures.Future] = []
    self._failed = False

  def save(self, step: int, state: Any, data_state: dict) -> None:
    """Starts saving `step` (returns once device arrays are copied). The orbax save first waits
    for the previous one, so every earlier step is complete here and gets sealed."""
    with self._writes(step):
      save(self.manager, step, state, data_state)
    self._seal(self._unsealed)
    self._unsealed = [step]

  def check(self) -> None:
    """Raises the error of an asynchronous save that failed in the background (a full disk),
    so that training stops within a log interval rather than at the next save."""
    with self._writes(None):
      self.manager.check_for_errors()

  @contextlib.contextmanager
  def _writes(self, step: int | None):
    """A failed write (full disk, read-only directory) as one UserError naming the directory,
    the reason and where a rerun starts; the steps already saved stay as they are."""
    try:
      yield
    except Exception as e:  # noqa: BLE001  (only write failures are turned into a UserError)
      reason = write_failure(e)
      if reason is None:
        raise
      self._failed = True
      complete = [s for s in self.manager.all_steps() if s != step and s not in self._unsealed]
      newest = max(complete, default=None)
      raise UserError(
          f"{self.directory}: cannot write a checkpoint ({reason}); free space or make the "
          "directory writable, then run the same command again: it resumes from "
          + (f"step {newest}." if newest is not None else "step 0.")) from None

  def _seal(self, steps: list[int]) -> None:
    if self._pool is not None:
      for step in steps:
        self._sealing.append(self._pool.submit(write_manifest, self.directory / str(step)))

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """(step, state, data position) of the newest good checkpoint, or None if there is none.
    Damaged steps are moved to checkpoints_damaged/ (never deleted) with a warning; if every
    step was damaged, a UserError says so (running again then starts from step 0)."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      problem = check_manifest(self.directory / str(step)) if jax.process_index() == 0 else None
      damaged = _agree(problem is not None)
      if not damaged:
        try:
          state, data_state = restore(self.manager, step, abstract_state)
        except Exception as e:  # noqa: BLE001  (only damage is handled; the rest re-raised)
          if not is_damage(e):
            raise
          problem = f"{type(e).__name__}: {str(e)[:300]}"
          damaged = True
        if not _agree(damaged):
          return step, state, data_state
      self._set_aside(step, problem)
    if steps:
      raise UserError(f"every checkpoint in {self.directory} was damaged (steps {steps}); they "
                      f"are in {self._aside_dir()}. Run the same command again to start over "
                      "from step 0, or restore them from a copy.")
    return None

  def _aside_dir(self):
    return self.directory.with_name(self.directory.name + "_damaged")

  def _set_aside(self, step: int, problem: str | None) -> None:
    aside = self._aside_dir() / f"{step}-{time.time_ns()}"
    if jax.process_index() == 0:
      aside.parent.mkdir(parents=True, exist_ok=True)
      storage.move(self.directory / str(step), aside)
      self._log(f"warning: checkpoint step {step} is damaged ({problem or 'in another process'}); "
                f"moved to {aside} and falling back to the previous checkpoint.")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"jaxllm-set-aside-{step}")
    self.manager.reload()

  def wait_until_finished(self) -> None:
    with self._writes(None):
      self.manager.wait_until_finished()
    self._seal(self._unsealed)
    self._unsealed = []
    for future in self._sealing:
      future.result()
    self._sealing = []

  def close(self) -> None:
    """Waits for the last save and its seal, then closes the manager (after a failed write,
    which was reported, without waiting on it again)."""
    try:
      if not self._failed:
        self.wait_until_finished()
    finally:
      if self._pool is not None:
        self._pool.shutdown()
      self.manager.close()


def restore_params(directory: str | Path, abstract_params: Any, step: int | None = None) -> Any:
  """Params only from a run's checkpoints (for fine-tuning from a pretrained run)."""
  manager = ocp.CheckpointManager(storage.absolute(directory), item_names=("state", "data"))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint found in {directory}")
  problem = check_manifest(storage.absolute(directory) / str(step))
  if problem is not None:
    raise UserError(f"checkpoint step {step} of {directory} is damaged: {problem}. Resume that "
                    "run once (it sets the damaged step aside and falls back), or name another "
                    "step.")
  abstract = {"params": abstract_params}
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=abstract, restore_args=ocp.checkpoint_utils
                                     .construct_restore_args(abstract), partial_restore=True),
        data=ocp.args.JsonRestore()))
    problem = _checksum_problem(out["state"], out["data"])
    if problem is not None:
      raise CheckpointDamaged(problem)
  except Exception as e:  # noqa: BLE001
    if is_damage(e):
      raise UserError(f"checkpoint step {step} of {directory} is damaged ({str(e)[:300]}); "
                      "resume that run once, or name another step.") from e
    raise
  finally:
    manager.close()
  return out["state"]["params"]
