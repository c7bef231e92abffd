"""Checkpoint integrity: every finished step is sealed with a manifest; a truncated, altered or
unreadable step is set aside (never deleted) and the restore falls back to the previous one; a
checkpoint that does not fit the config is an error, not damage; the newest complete step is
never deleted before a newer one is complete."""

import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.errors import UserError
from jaxllm.train import checkpoint


def _state(step):
  noise = jax.random.normal(jax.random.key(step), (128, 128))  # values that do not compress
  return {"params": {"w": jnp.full((64, 32), float(step)), "b": jnp.arange(32.0) + step,
                     "noise": noise}, "step": jnp.int32(step)}


def _abstract():
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))


def _saved(tmp_path, steps=(1, 2, 3), keep=3, async_save=True):
  ckpts = checkpoint.Checkpoints(tmp_path / "checkpoints", keep, async_save, log=lambda m: None)
  for s in steps:
    ckpts.save(s, _state(s), {"position": s})
  ckpts.close()
  return tmp_path / "checkpoints"


def _largest(step_dir):
  return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(step_dir):
  f = _largest(step_dir)
  f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_one_bit(step_dir):
  f = _largest(step_dir)
  data = bytearray(f.read_bytes())
  data[len(data) // 2] ^= 0x04
  f.write_bytes(bytes(data))


def _damage_the_manifest(step_dir):
  """A bit flip that lands in the manifest itself: one entry loses its digest key."""
  manifest = step_dir / checkpoint.MANIFEST
  manifest.write_text(manifest.read_text().replace('"sha256"', '"sha2u6"', 1))


def _delete_a_file(step_dir):
  (step_dir / "state" / "_METADATA").unlink()


def _cut_data_json_unsealed(step_dir):
  """Damage a step that has no manifest (killed between save and seal): found on reading."""
  (step_dir / checkpoint.MANIFEST).unlink()
  meta = step_dir / "data" / "metadata"
  meta.write_text(meta.read_text()[:10])


def test_every_finished_step_is_sealed_and_restores(tmp_path):
  directory = _saved(tmp_path)
  for s in (1, 2, 3):
    files = json.loads((directory / str(s) / checkpoint.MANIFEST).read_text())["files"]
    assert any(name.startswith("state/") for name in files)
    assert checkpoint.check_manifest(directory / str(s)) is None
  ckpts = checkpoint.Checkpoints(directory, 3, log=lambda m: None)
  step, state, data = ckpts.restore_latest(_abstract())
  ckpts.close()
  assert step == 3 and data == {"position": 3}
  np.testing.assert_array_equal(state["params"]["w"], np.full((64, 32), 3.0))


def _unsealed(damage):
  """The same damage to a step killed between its save and its seal (no manifest yet)."""
  def damage_unsealed(step_dir):
    (step_dir / checkpoint.MANIFEST).unlink()
    damage(step_dir)
  damage_unsealed.__name__ = f"{damage.__name__}_unsealed"
  return damage_unsealed


def _flip_a_value_bit(step_dir):
  """One bit in the middle of the largest array data file (random values, stored as they
  are): the files still read, a value differs (only the checksum saved with the step finds it;
  tensorstore checks its index nodes, not the values)."""
  f = max((p for p in (step_dir / "state" / "ocdbt.process_0" / "d").iterdir()),
          key=lambda p: p.stat().st_size)
  data = bytearray(f.read_bytes())
  data[len(data) // 2] ^= 0x01
  f.write_bytes(bytes(data))


def _empty_the_folder(step_dir):
  for p in sorted(step_dir.rglob("*"), reverse=True):
    p.rmdir() if p.is_dir() else p.unlink()


def _delete_the_data_file(step_dir):
  (step_dir / "data" / "metadata").unlink()


@pytest.mark.parametrize("damage", [
    _truncate, _flip_one_bit, _damage_the_manifest, _delete_a_file, _cut_data_json_unsealed,
    _unsealed(_flip_a_value_bit), _unsealed(_empty_the_folder), _unsealed(_delete_the_data_file),
    _unsealed(_truncate)], ids=lambda f: f.__name__)
def test_a_damaged_latest_step_is_set_aside_and_the_previous_restores(tmp_path, damage):
  directory = _saved(tmp_path)
  damage(directory / "3")
  messages = []
  ckpts = checkpoint.Checkpoints(directory, 3, log=messages.append)
  step, state, data = ckpts.restore_latest(_abstract())
  ckpts.close()
  assert step == 2 and data == {"position": 2}
  np.testing.assert_array_equal(state["params"]["b"], np.arange(32.0) + 2)
  assert len(messages) == 1 and "checkpoint step 3 is damaged" in messages[0]
  aside = list((tmp_path / "checkpoints_damaged").iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("3-")  # kept for inspection
  assert sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) == [1, 2]


def test_when_every_step_is_damaged_the_error_says_where_they_went(tmp_path):
  directory = _saved(tmp_path, steps=(1, 2))
  for s in (1, 2):
    _truncate(directory / str(s))
  ckpts = checkpoint.Checkpoints(directory, 3, log=lambda m: None)
  with pytest.raises(UserError, match="every checkpoint .* was damaged .*checkpoints_damaged"):
    ckpts.restore_latest(_abstract())
  assert ckpts.restore_latest(_abstract()) is None  # a second run starts over
  ckpts.close()


def test_a_checkpoint_that_does_not_fit_is_an_error_not_damage(tmp_path):
  directory = _saved(tmp_path)
  other = jax.tree.map(lambda x: x, _abstract())
  other["params"]["w"] = jax.ShapeDtypeStruct((64, 16), jnp.float32)
  ckpts = checkpoint.Checkpoints(directory, 3, log=lambda m: None)
  with pytest.raises(ValueError) as info:
    ckpts.restore_latest(other)
  ckpts.close()
  assert not checkpoint.is_damage(info.value)
  assert sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) == [1, 2, 3]
  assert not (tmp_path / "checkpoints_damaged").exists()


@pytest.mark.parametrize("damage", [_flip_one_bit, _unsealed(_flip_a_value_bit)],
                         ids=lambda f: f.__name__)
def test_restore_params_refuses_a_damaged_step(tmp_path, damage):
  directory = _saved(tmp_path, steps=(1,))
  damage(directory / "1")
  with pytest.raises(UserError, match="checkpoint step 1 of .* is damaged"):
    checkpoint.restore_params(directory, _abstract()["params"])


def test_the_checksums_see_every_bit_and_its_place():
  state = _state(3)
  sums = checkpoint.state_checksums(state)
  assert sums == checkpoint.state_checksums(jax.tree.map(jnp.copy, state))
  w = np.asarray(state["params"]["w"]).copy()
  w.view(np.uint32)[5, 7] ^= 1  # the lowest mantissa bit of one value
  assert checkpoint.state_checksums({**state, "params": {**state["params"], "w": w}}) != sums
  b = np.asarray(state["params"]["b"]).copy()
  b[[0, 1]] = b[[1, 0]]  # two values swapped: the plain sum is the same, the weighted one not
  swapped = checkpoint.state_checksums({**state, "params": {**state["params"], "b": b}})
  key = "['params']['b']"
  assert swapped[key][0] == sums[key][0] and swapped[key][1] != sums[key][1]


def test_the_newest_complete_step_exists_at_every_moment_of_later_saves(tmp_path):
  """keep=1 with asynchronous saves: orbax deletes the old step only after the new one is
  committed, so a kill at any moment leaves a complete checkpoint."""
  directory = tmp_path / "checkpoints"
  ckpts = checkpoint.Checkpoints(directory, 1, async_save=True, log=lambda m: None)
  ckpts.save(1, _state(1), {})
  ckpts.wait_until_finished()
  stop, gaps = threading.Event(), []

  def complete():
    return [p for p in directory.iterdir()
            if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()]

  def watch():
    while not stop.is_set():
      if not complete() and not complete():  # twice: a listing taken just before a rename
        gaps.append(sorted(p.name for p in directory.iterdir()))
  watcher = threading.Thread(target=watch)
  watcher.start()
  for s in range(2, 12):
    ckpts.save(s, _state(s), {})
  ckpts.close()
  stop.set()
  watcher.join()
  assert not gaps, gaps[:3]
  assert sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == ["11"]


def test_a_full_disk_or_read_only_directory_is_one_error_and_the_saved_steps_stay(
    tmp_path, monkeypatch):
  directory = _saved(tmp_path, steps=(1, 2))
  ckpts = checkpoint.Checkpoints(directory, 3, async_save=False, log=lambda m: None)
  real_save = checkpoint.save

  def full(manager, step, state, data_state):
    try:  # as tensorstore reports it, wrapped by orbax
      raise OSError(28, "No space left on device")
    except OSError as e:
      raise ValueError(f"RESOURCE_EXHAUSTED: Error writing step {step}") from e
  monkeypatch.setattr(checkpoint, "save", full)
  with pytest.raises(UserError, match=r"checkpoints: cannot write a checkpoint \(No space left "
                     r"on device\); free space .* resumes from step 2\."):
    ckpts.save(3, _state(3), {"position": 3})
  ckpts.close()  # reported once: closing does not wait on the failed save again
  monkeypatch.setattr(checkpoint, "save", real_save)
  assert checkpoint.make_manager(directory, 3).all_steps() == [1, 2]
  assert checkpoint.write_failure(OSError(30, "Read-only file system")) == "Read-only file system"
  assert checkpoint.write_failure(ValueError("DATA_LOSS: a checksum")) is None
