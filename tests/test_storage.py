"""Run directories on cloud storage (jaxllm/storage.py), against the local GCS emulator: files
written whole, folders listed, moved and copied, appended logs uploaded whole, the run lock, a
checkpoint's manifest, and which steps count as saved."""

import json
import os
import socket
import time

import pytest

from jaxllm import rundir, runs, storage
from jaxllm.data import tokenizer as tokenizer_lib
from jaxllm.errors import UserError
from jaxllm.train import checkpoint


@pytest.fixture
def remote(gcs, request):
  """A fresh gs:// folder for the test."""
  return storage.path(gcs.url("unit", request.node.name))


def test_files_are_written_listed_moved_and_copied(remote, tmp_path):
  storage.write_text(remote / "a" / "b" / "c.txt", "hello")
  storage.write_text(remote / "a" / "d.txt", "world")
  assert [str(p.relative_to(remote)) for p in storage.files_under(remote)] == [
      "a/b/c.txt", "a/d.txt"]
  assert storage.size(remote / "a" / "d.txt") == 5
  storage.move(remote / "a", remote / "moved")
  assert not (remote / "a").exists()
  assert (remote / "moved" / "b" / "c.txt").read_text() == "hello"
  storage.copy_tree(remote / "moved", tmp_path / "down")  # gs:// -> local
  assert (tmp_path / "down" / "b" / "c.txt").read_text() == "hello"
  assert not list(tmp_path.glob(".down.*"))  # the staging folder was renamed into place
  storage.copy_tree(tmp_path / "down", remote / "up")  # local -> gs://
  assert (remote / "up" / "d.txt").read_text() == "world"


def test_appended_files_are_uploaded_whole_and_a_resume_appends_to_them(remote):
  mirror = storage.Mirror(remote, ("metrics.jsonl", "tensorboard"))
  assert not str(mirror.local).startswith("gs:")
  (mirror.local / "metrics.jsonl").write_text('{"step": 1}\n')
  (mirror.local / "tensorboard").mkdir()
  (mirror.local / "tensorboard" / "events").write_bytes(b"\x00\x01")
  mirror.sync()
  assert (remote / "metrics.jsonl").read_text() == '{"step": 1}\n'
  mirror.close()
  assert not mirror.local.exists()
  again = storage.Mirror(remote, ("metrics.jsonl", "tensorboard"))  # a resumed run
  with open(again.local / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 2}\n')
  again.close()
  assert (remote / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
  assert (remote / "tensorboard" / "events").read_bytes() == b"\x00\x01"


def test_the_lock_on_cloud_storage_refuses_a_live_holder_and_clears_an_expired_one(
    remote, capsys):
  with rundir.lock(remote):
    holder = json.loads((remote / rundir.LOCK).read_text())
    assert holder["pid"] == os.getpid()
  assert not (remote / rundir.LOCK).exists()
  other = {"host": "another-vm", "pid": 1, "command": "pretrain.py", "since": "2026-01-01"}
  (remote / rundir.LOCK).write_text(json.dumps(other))
  with pytest.raises(UserError, match="in use by 'pretrain.py' .*another-vm.*not renewed for "
                     "10 minutes is cleared"), rundir.lock(remote):
    pass
  time.sleep(1.1)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(rundir, "LEASE_SECONDS", 1)  # as if ten minutes had gone by unrenewed
    with rundir.lock(remote):  # a preempted VM's lock: expired, cleared
      pass
  assert "cleared a stale lock (not renewed for " in capsys.readouterr().err


def test_a_lock_from_a_lost_machine_on_a_shared_disk_expires(tmp_path, capsys):
  path = tmp_path / rundir.LOCK
  path.write_text(json.dumps({"host": socket.gethostname() + "-other", "pid": 1}))
  with pytest.raises(UserError, match="in use by"), rundir.lock(tmp_path):
    pass
  stale = time.time() - rundir.LEASE_SECONDS - 1
  os.utime(path, (stale, stale))
  with rundir.lock(tmp_path):
    pass
  assert "cleared a stale lock (not renewed" in capsys.readouterr().err


def test_the_lock_is_renewed_while_held(tmp_path, monkeypatch):
  monkeypatch.setattr(rundir, "RENEW_SECONDS", 0.05)
  with rundir.lock(tmp_path):
    path = tmp_path / rundir.LOCK
    stale = time.time() - 3600
    os.utime(path, (stale, stale))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 60


def test_only_committed_steps_count_on_cloud_storage(remote):
  """On gs:// orbax writes a step in place and commits it last (commit_success.txt): a step
  without it was cut off and is not a checkpoint."""
  storage.write_text(remote / "checkpoints" / "4" / "commit_success.txt", "ok")
  storage.write_text(remote / "checkpoints" / "8" / "state" / "partial", "x")
  assert rundir.latest_step(remote) == 4


def test_a_checkpoint_manifest_on_cloud_storage_finds_a_changed_file(remote):
  step = remote / "checkpoints" / "3"
  storage.write_text(step / "state" / "array", "0123456789")
  storage.write_text(step / "commit_success.txt", "ok")
  assert checkpoint.write_manifest(step)
  assert checkpoint.check_manifest(step) is None
  storage.write_text(step / "state" / "array", "0123456788")
  assert "differs from what was written" in checkpoint.check_manifest(step)
  storage.write_text(step / "state" / "array", "01234")
  assert "has 5 bytes, 10 were written" in checkpoint.check_manifest(step)


def test_a_tokenizer_is_saved_to_and_loaded_from_cloud_storage(remote):
  tok = tokenizer_lib.train_tokenizer(["one two three four"] * 20, kind="bpe", vocab_size=300)
  tok.save(remote / "tokenizer.json")
  again = tokenizer_lib.Tokenizer.from_file(remote)
  assert again.encode("two three") == tok.encode("two three")


def test_commands_that_write_local_files_refuse_a_gs_workdir():
  with pytest.raises(UserError, match=r"--workdir='gs://b/x': a sweep appends .* local "
                     "directory"):
    storage.require_local("gs://b/x", "--workdir", "a sweep appends each point's log")
  storage.require_local("/tmp/x", "--workdir", "unused")
  with pytest.raises(UserError, match=r"--out='gs://b/hf': a Hugging Face directory"):
    runs.export_hf("/no/such/run", "gs://b/hf")  # refused before the run is read
