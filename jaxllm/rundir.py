"""A run directory's safety: one writer at a time, files replaced whole, and a config that a
resume may change only where that is safe.

  @rundir.claims_workdir          # on a recipe's run(config, workdir, ...)
  def run(config, workdir): ...

`claims_workdir` takes WORKDIR/run.lock for the call (the holder's host, pid, command and start
time are in it) and, when the run already has a checkpoint, compares the config with the run's
config.json before anything is written. The training loop compares again, field for field, once
the recipe has resolved the config (the init run's model, its step), just before it rewrites
config.json (`check_resume`).

Fields that may change on resume (`RESUMABLE`): the step count, eval, logging and checkpoint
cadence, the mesh and process layout, performance-only settings (remat, attention kernel,
microbatches, loss chunking, XLA options, prefetching), and the eval and benchmark sections.
Paths (`PATHS`: the data sources, the tokenizer file, the init run) are not compared as strings,
so a run can be moved: what they point at is checked by content (the data position's
fingerprint, jaxllm/data/batching.py; the tokenizer, jaxllm/data/inputs.py save_run_tokenizer;
the init run's model and step, in the loop's comparison).

The run directory may be local or on cloud storage (gs://, jaxllm/storage.py). The holder renews
its lock every minute; a stale lock (its process is gone, on the same host; or not renewed for
ten minutes, from any host: a preempted VM) is cleared on the next start, with a warning.
"""

import contextlib
import datetime
import functools
import json
import os
import pathlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from jaxllm import config as config_lib
from jaxllm import storage
from jaxllm.errors import UserError
from jaxllm.parallel import mesh as mesh_lib

LOCK = "run.lock"
# Fields (or whole sections) a resumed run may change: they decide when things happen, how
# the work is laid out on the devices, or how fast it runs, not what is computed.
RESUMABLE = (
    "train.num_steps", "train.log_every", "train.eval_every", "train.eval_at_start",
    "train.eval_batches", "train.checkpoint_every", "train.keep_checkpoints",
    "train.async_checkpointing", "train.max_nonfinite_in_row", "train.peak_flops_per_device",
    "train.device_memory_gib", "train.xla_options", "train.microbatches", "train.loss_chunk",
    "model.remat", "model.attention_impl", "data.prefetch", "data.read_threads",
    "data.num_workers", "data.data_dir", "data.manual_dir", "mesh", "distributed", "eval",
    "benchmark", "logging")
# Paths: compared by what they hold, elsewhere (see the module docstring).
PATHS = ("data.source", "data.text_source", "data.eval_input", "data.tokenizer",
         "init.checkpoint", "init.hf_path", "teacher.checkpoint")
# Set by the recipe from what the run starts from, so a config given on the command line lacks
# them; compared after resolution, in the loop (`check_resume`).
RESOLVED = ("model", "init.step", "init.stage", "value_head", "compressed")

_held: dict[str, int] = {}  # lock files this process holds, with their depth
# A held lock is renewed every RENEW_SECONDS; one older than LEASE_SECONDS belongs to a run
# whose machine was lost, and the next run clears it.
RENEW_SECONDS = 60
LEASE_SECONDS = 10 * 60


write_text = storage.write_text  # whole or not at all (jaxllm/storage.py)


def latest_step(workdir) -> int | None:
  """The newest complete step under WORKDIR/checkpoints (None when there is none). A step
  orbax has not finished (a temporary folder; on gs://, one without its commit file) is not
  counted."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel  (heavy)
  checkpoints = storage.path(workdir) / "checkpoints"
  if not checkpoints.is_dir():
    return None
  steps = ocp.path.step.checkpoint_steps(checkpoints)
  return max(steps) if steps else None


# -- the lock --

def _holder() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv
          else "python",
          "since": datetime.datetime.now().isoformat(timespec="seconds")}


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def _read_holder(path) -> dict | None:
  try:
    holder = json.loads(path.read_text())
    return holder if isinstance(holder, dict) else {}
  except FileNotFoundError:
    return None
  except ValueError:  # written half-way: treat as held, the message says how to clear it
    return {}


def _create(path, text: str) -> None:
  """Creates the lock file, or FileExistsError. Locally atomic (O_EXCL); on cloud storage a
  check then an upload, so two jobs started within the same second could both pass."""
  if storage.is_remote(path):
    if path.exists():
      raise FileExistsError(str(path))
    path.write_text(text)
    return
  fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  with os.fdopen(fd, "w") as f:
    f.write(text)


def _stale(path, holder: dict) -> str | None:
  """Why the lock at `path` is stale (None while its holder may be running): its process is
  gone (this host), or it was not renewed for LEASE_SECONDS (any host: a lost machine)."""
  if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
      and not _alive(holder["pid"]):
    return f"pid {holder['pid']} is gone"
  try:
    age = time.time() - path.stat().mtime
  except FileNotFoundError:
    return None
  if age > LEASE_SECONDS:
    return f"not renewed for {age:.0f} s"
  return None


def _renew(path, text: str, stop: threading.Event) -> None:
  """Rewrites the lock every RENEW_SECONDS while the run holds it, so that other hosts can tell
  a live run from one whose machine was lost (a preempted VM cannot remove its lock)."""
  while not stop.wait(RENEW_SECONDS):
    try:
      if storage.is_remote(path):
        path.write_text(text)
      else:
        os.utime(path)
    except OSError:  # a network blip: the next renewal tries again
      pass


@contextlib.contextmanager
def lock(workdir, what: str = "--workdir"):
  """Holds WORKDIR/run.lock while the block runs (re-entrant within a process).

  Refuses, naming the holder, while another live process holds it. The holder renews the lock
  every RENEW_SECONDS; a lock whose process is gone (same host) or that was not renewed for
  LEASE_SECONDS (a lost machine, on a shared or gs:// directory) is cleared with a warning. A
  local directory it created is removed again when nothing was written into it. Only process
  0 of a multi-process job locks (the others write nothing the lock protects).
  """
  workdir = storage.absolute(workdir)
  path = workdir / LOCK
  key = str(path)
  if key in _held or _process_index() != 0:
    _held[key] = _held.get(key, 0) + 1
    try:
      yield
    finally:
      _held[key] -= 1
      if not _held[key]:
        del _held[key]
    return
  remote = storage.is_remote(workdir)
  created = not remote and not workdir.exists()  # removed again if nothing gets written
  workdir.mkdir(parents=True, exist_ok=True)
  text = json.dumps(_holder())
  for _ in range(2):
    try:
      _create(path, text)
      break
    except FileExistsError:
      holder = _read_holder(path)
      if holder is None:  # released meanwhile
        continue
      reason = _stale(path, holder)
      if reason:
        print(f"warning: {path}: cleared a stale lock ({reason}; it ran "
              f"{holder.get('command', '?')!r} on {holder.get('host', '?')} since "
              f"{holder.get('since', '?')}).", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
        continue
      who = (f"{holder.get('command', '?')!r} (pid {holder.get('pid', '?')} on host "
             f"{holder.get('host', '?')}, since {holder.get('since', '?')})" if holder
             else "another process (its lock file is unreadable)")
      raise UserError(f"{workdir} is in use by {who}; wait for it to finish or use another "
                      f"{what}. If that process is gone (a lost machine), delete {path}, or "
                      f"wait: a lock not renewed for {LEASE_SECONDS // 60} minutes is cleared."
                      ) from None
  else:
    raise UserError(f"{path}: could not take the lock; delete it if no run is using {workdir}.")
  _held[key] = 1
  stop = threading.Event()
  renewer = threading.Thread(target=_renew, args=(path, text, stop), daemon=True,
                             name="jaxllm-lock")
  renewer.start()
  try:
    yield
  finally:
    stop.set()
    renewer.join()
    del _held[key]
    path.unlink(missing_ok=True)
    if created and not any(workdir.iterdir()):
      workdir.rmdir()


def _process_index() -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index()


# -- the config on resume --

def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f"{prefix}{key}."))
    return out or {prefix[:-1]: {}}
  return {prefix[:-1]: tree}


def _as_saved(config) -> dict:
  """A ConfigDict or dict as config.json holds it (tuples as lists)."""
  tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return json.loads(json.dumps(tree, default=repr))


def _covered(path: str, fields: Iterable[str]) -> bool:
  return any(path == f or path.startswith(f + ".") for f in fields)


def config_changes(saved: dict, config, ignore: Iterable[str] = ()) -> list[str]:
  """"field: SAVED in the run, NEW now" for each field the run's saved config and `config`
  (a ConfigDict or dict) both have and that differ, outside RESUMABLE, PATHS and `ignore`;
  a top-level section only one of them has counts as a change ("lora: absent in the run")."""
  new = _as_saved(config)
  skip = (*RESUMABLE, *PATHS, *ignore)
  out = []
  for key in sorted(set(saved) ^ set(new)):
    if isinstance(saved.get(key, new.get(key)), dict) and not _covered(key, skip):
      out.append(f"{key}: {'absent' if key not in saved else 'a section'} in the run, "
                 f"{'absent' if key not in new else 'a section'} now")
  flat_saved, flat_new = _flat(saved), _flat(new)
  for path in sorted(set(flat_saved) & set(flat_new)):
    if not _covered(path, skip) and flat_saved[path] != flat_new[path]:
      out.append(f"{path}: {flat_saved[path]!r} in the run, {flat_new[path]!r} now")
  return out


def defining_fields(config, keep: Iterable[str] = ()) -> dict[str, Any]:
  """The config's fields (flattened, "train.batch_size": 8) that define what a run computes:
  all but RESUMABLE and PATHS, with the fields in `keep` brought back."""
  flat = _flat(_as_saved(config))
  skip = [f for f in (*RESUMABLE, *PATHS) if f not in keep]
  return {k: v for k, v in flat.items() if _covered(k, keep) or not _covered(k, skip)}


def _refuse(workdir, changes: list[str]) -> None:
  shown = "; ".join(f"config.{c}" for c in changes[:6])
  more = f" (and {len(changes) - 6} more)" if len(changes) > 6 else ""
  raise UserError(
      f"--workdir={workdir} holds a run trained with another config ({shown}{more}); resume "
      f"it with its own settings (its config.json), or start in a new --workdir. A resume may "
      f"change only the step count, eval, logging and checkpoint cadence, the mesh, and "
      f"speed settings (jaxllm/rundir.py RESUMABLE).")


def saved_config(workdir) -> dict | None:
  """The config.json of a run that has a checkpoint (None for a fresh or never-saved run)."""
  path = storage.path(workdir) / "config.json"
  if latest_step(workdir) is None or not path.is_file():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError:
    raise UserError(f"{path} is not JSON; the run's config was damaged: restore it from a "
                    "copy, or start in a new --workdir.") from None


def check_resume(config, workdir) -> None:
  """UserError naming the fields when the resolved `config` differs from the config.json of
  the run in `workdir` that it would resume (no-op for a run without checkpoints)."""
  saved = saved_config(workdir)
  if saved is not None:
    changes = config_changes(saved, config)
    if changes:
      _refuse(workdir, changes)


def check_resume_early(config, workdir) -> None:
  """check_resume on a config as given, before the recipe resolves it: fields the recipe sets
  from the init run (RESOLVED) are left to the loop's check; init.step -1 means "the newest"."""
  saved = saved_config(workdir)
  if saved is None:
    return
  ignore = [*RESOLVED]
  if config.get("init", {}).get("step", -1) >= 0:
    ignore.remove("init.step")
  if not (config.get("init", {}).get("checkpoint") or config.get("init", {}).get("hf_path")):
    ignore.remove("model")  # no init run: the model is the config's own
  if config.get("stage") == "distill" or config.get("model", {}).get("vocab_size") == 0:
    ignore.append("model.vocab_size")  # the teacher's, or 0: the tokenizer's, rounded up
  changes = config_changes(saved, config, ignore)
  if changes:
    _refuse(workdir, changes)


def claims_workdir(run: Callable) -> Callable:
  """Wraps a recipe's `run(config, workdir, ...)`: the run directory's lock for the call, and
  the resume check on the config as given, before anything is written."""
  @functools.wraps(run)
  def wrapped(config, workdir, *args, **kwargs):
    config_lib.validate_early(config)  # the model and base fields, before anything is written
    if "distributed" in config:  # first, so that the lock knows which process this is
      mesh_lib.maybe_initialize_distributed(config.distributed)
    with lock(workdir):
      check_resume_early(config, workdir)
      return run(config, workdir, *args, **kwargs)
  return wrapped
