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
  return {"params": {"w": jnp.full((64, 32), float(step)), "b": jnp.arange(32.0) + step},
          "step": jnp.int32(step)}


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


@pytest.mark.parametrize("damage", [_truncate, _flip_one_bit, _damage_the_manifest,
                                    _delete_a_file, _cut_data_json_unsealed])
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


def test_restore_params_refuses_a_damaged_step(tmp_path):
  directory = _saved(tmp_path, steps=(1,))
  _flip_one_bit(directory / "1")
  with pytest.raises(UserError, match="checkpoint step 1 of .* is damaged"):
    checkpoint.restore_params(directory, _abstract()["params"])


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
