"""The generic loop: run directory contract, exact resume after SIGTERM or from the checkpoint
before a damaged one, divergence stop."""

import io
import os
import re
import signal

import jax
import numpy as np
import pytest

from jaxllm.errors import ConfigError, UserError
from jaxllm.models import ModelConfig, Transformer
from jaxllm.models import params as params_lib
from jaxllm.recipes import pretrain, sft
from jaxllm.train import checkpoint, loop
from tests.helpers import read_metrics, train_losses


def _params(state):
  return [np.asarray(x) for x in jax.tree.leaves(state["params"])]


@pytest.mark.slow
def test_run_directory_contract(tiny_config, tmp_path):
  state = pretrain.run(tiny_config, tmp_path)
  assert (tmp_path / "config.json").exists()
  assert any((tmp_path / "tensorboard").iterdir())
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [5, 10]
  metrics = read_metrics(tmp_path)
  assert [m["step"] for m in metrics if "train/loss" in m] == list(range(1, 11))
  evals = [m for m in metrics if "eval/loss" in m]
  assert [m["step"] for m in evals] == [5, 10]
  assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
  assert not any(k.startswith("perf/") for m in metrics for k in m)  # timings: perf.jsonl
  perf = read_metrics(tmp_path, "perf.jsonl")
  assert [m["step"] for m in perf] == list(range(2, 11))  # from the first timed window on
  assert all(m["perf/tokens_per_second"] > 0 and m["perf/step_seconds"] > 0 for m in perf)
  # A later stage restores just the params of the newest checkpoint.
  model = Transformer(ModelConfig.from_dict(tiny_config.model))
  abstract = params_lib.unbox(jax.eval_shape(params_lib.init_params_fn(model, 8),
                                             jax.random.key(0)))
  params = checkpoint.restore_params(tmp_path / "checkpoints", abstract)
  for a, b in zip(jax.tree.leaves(params), _params(state)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_rerun_after_finish_is_a_no_op(tiny_config, tmp_path, capsys):
  first = pretrain.run(tiny_config, tmp_path)
  capsys.readouterr()
  again = pretrain.run(tiny_config, tmp_path)
  assert f"{tmp_path} is already complete at step 10" in capsys.readouterr().out
  assert int(again["step"]) == 10
  for a, b in zip(_params(first), _params(again)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_is_set_aside_and_the_run_redoes_its_steps(
    tiny_config, tmp_path, capsys):
  first = pretrain.run(tiny_config, tmp_path)  # checkpoints at 5 and 10
  losses = train_losses(tmp_path)
  largest = max((p for p in (tmp_path / "checkpoints" / "10").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:100])  # truncated, as by a full disk
  capsys.readouterr()
  again = pretrain.run(tiny_config, tmp_path)
  out = capsys.readouterr().out
  assert "warning: checkpoint step 10 is damaged" in out and "at step 5" in out
  assert [p.name.split("-")[0] for p in (tmp_path / "checkpoints_damaged").iterdir()] == ["10"]
  assert train_losses(tmp_path) == losses
  for a, b in zip(_params(first), _params(again)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_the_memory_guard_stops_before_the_first_step(tiny_config, tmp_path, capsys):
  pretrain.run(tiny_config, tmp_path / "fits")
  line = next(ln for ln in capsys.readouterr().out.splitlines() if "memory per device" in ln)
  used_mib = float(line.split("(compiled step): ")[1].split(" MiB")[0])
  assert 0 < used_mib < 100 and "temporaries" in line and " GiB" in line  # of the host's share
  tiny_config.train.device_memory_gib = used_mib / 2 / 1024
  with pytest.raises(UserError, match=r"needs .* MiB per device .*remat=full .*microbatches"
                                      r".*mesh.fsdp=-1"):
    pretrain.run(tiny_config, tmp_path / "too_big")
  assert not read_metrics(tmp_path / "too_big")
  assert not any((tmp_path / "too_big" / "checkpoints").iterdir())


def test_ctrl_c_saves_like_sigterm_and_a_second_one_stops_at_once(tiny_config, tmp_path):
  from jaxllm.objectives import lm
  model = Transformer(ModelConfig.from_dict(tiny_config.model))

  def ctrl_c(times):
    def hook(step):
      for _ in range(times if step == 3 else 0):
        os.kill(os.getpid(), signal.SIGINT)  # a real signal, as a terminal sends it
    return hook
  state = loop.train(tiny_config, tmp_path / "once", model, lm.lm_loss,
                     _Batches([_lm_batch(8, 32)]), hooks=(ctrl_c(1),))
  assert int(state["step"]) == 3
  assert checkpoint.make_manager(tmp_path / "once" / "checkpoints", 3).all_steps() == [3]
  with pytest.raises(KeyboardInterrupt):
    loop.train(tiny_config, tmp_path / "twice", model, lm.lm_loss,
               _Batches([_lm_batch(8, 32)]), hooks=(ctrl_c(2),))
  assert checkpoint.make_manager(tmp_path / "twice" / "checkpoints", 3).all_steps() == []
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_no_checkpoint_is_saved_inside_a_non_finite_streak(tiny_config, tmp_path):
  """Steps 4 on are non-finite: the save at step 4 is skipped, and the message says a rerun
  starts from step 2."""
  from jaxllm.objectives import lm
  tiny_config.train.checkpoint_every = 2
  tiny_config.train.max_nonfinite_in_row = 3

  def poisoned_loss(params, batch, rng, model, **kwargs):
    loss, metrics = lm.lm_loss(params, {k: v for k, v in batch.items() if k != "poison"}, rng,
                               model, **kwargs)
    return loss + batch["poison"].mean(), metrics
  good = {**_lm_batch(8, 32), "poison": np.zeros((8,), np.float32)}
  bad = {**good, "poison": np.full((8,), np.nan, np.float32)}
  model = Transformer(ModelConfig.from_dict(tiny_config.model))
  with pytest.raises(loop.TrainingDiverged, match="running again starts from step 2"):
    loop.train(tiny_config, tmp_path, model, poisoned_loss,
               _Batches([good, good, good, bad, bad, bad, bad, bad]))
  assert checkpoint.make_manager(tmp_path / "checkpoints", 3).all_steps() == [2]


@pytest.mark.slow
def test_divergence_stops_with_a_clear_message(tiny_config, tmp_path):
  tiny_config.optimizer.lr = 1e30  # every update overflows: non-finite, skipped
  tiny_config.train.max_nonfinite_in_row = 3
  with pytest.raises(loop.TrainingDiverged, match="3 steps in a row.*config.optimizer.lr.*"
                     "running again starts from step 0"):
    pretrain.run(tiny_config, tmp_path)
  metrics = read_metrics(tmp_path)
  assert [m["train/skipped"] for m in metrics if "train/skipped" in m] == [1.0, 1.0]
  # Fixing the config and rerunning starts afresh (no checkpoint) and drops the stale lines.
  tiny_config.optimizer.lr = 1e-3
  pretrain.run(tiny_config, tmp_path)
  steps = [m["step"] for m in read_metrics(tmp_path) if "train/loss" in m]
  assert steps == list(range(1, 11))


@pytest.mark.slow
def test_a_non_finite_learning_rate_is_refused_before_the_run(tiny_config, tmp_path):
  tiny_config.optimizer.lr = float("nan")
  with pytest.raises(ConfigError, match="config.optimizer.lr=nan must be a finite number"):
    pretrain.run(tiny_config, tmp_path)


@pytest.mark.slow
def test_a_resume_with_another_batch_size_is_refused(tiny_config, tmp_path):
  pretrain.run(tiny_config, tmp_path)
  tiny_config.train.num_steps = 12
  tiny_config.train.batch_size = 16
  # The run directory's check, before anything is read (the data position's own check is in
  # tests/data/test_batching.py).
  with pytest.raises(UserError, match="config.train.batch_size: 8 in the run, 16 now"):
    pretrain.run(tiny_config, tmp_path)


@pytest.mark.parametrize("field,value,axis,message", [
    ("vocab_size", 1025, "tensor", "vocab_size=1025 is not divisible by config.mesh.tensor=2"),
    ("d_model", 36, "fsdp", "d_model=36 is not divisible by config.mesh.fsdp=8"),
    ("attention_impl", "cudnn", None, "attention_impl='cudnn' needs a GPU"),
    ("attention_impl", "splash", None, "attention_impl='splash' needs a TPU"),
])
def test_mesh_and_backend_mismatches_name_the_fields(tiny_config, tmp_path, field, value, axis,
                                                     message):
  tiny_config.model[field] = value
  if axis == "tensor":
    tiny_config.mesh.update(data=-1, tensor=2)
  elif axis == "fsdp":
    tiny_config.model.head_dim = 16
    tiny_config.mesh.update(data=1, fsdp=-1)
  with pytest.raises(ConfigError, match=message):
    pretrain.run(tiny_config, tmp_path)


def _lora_sft_config(init_dir, mesh=None):
  c = sft.default_config("tiny")
  c.init.checkpoint = str(init_dir)
  c.data.seq_len = 64
  c.train.num_steps = 8
  c.train.batch_size = 8
  c.train.log_every = 1
  c.train.eval_every = 8
  c.train.eval_batches = 1
  c.train.checkpoint_every = 4
  c.train.async_checkpointing = False
  c.lora.rank, c.lora.dropout = 4, 0.1  # dropout: the resumed RNG must match too
  c.train.eval_at_start = True  # the held-out loss before and after, on the same batches
  c.eval.qa_questions = 0
  if mesh:
    c.mesh.update(mesh)
  return c


@pytest.mark.slow
def test_lora_sft_sharded_and_resumed_matches(tiny_config, tmp_path):
  """LoRA through the loop: adapters and frozen base sharded over fsdp x tensor give the losses
  of plain data parallelism; SIGTERM and rerun continue bit-identically (the base is reloaded
  from the init run, the adapters and their optimizer state from the checkpoint)."""
  pretrain.run(tiny_config, tmp_path / "pre")
  sharded = {"data": 2, "fsdp": 2, "tensor": 2}
  full = sft.run(_lora_sft_config(tmp_path / "pre", sharded), tmp_path / "full")
  data_parallel = sft.run(_lora_sft_config(tmp_path / "pre"), tmp_path / "dp")
  full_losses = train_losses(tmp_path / "full")
  np.testing.assert_allclose(list(train_losses(tmp_path / "dp").values()),
                             list(full_losses.values()), rtol=2e-5)
  # The gradients themselves (AdamW would cancel a wrong constant scale in the params).
  grad_norms = {name: [m["train/grad_norm"] for m in read_metrics(tmp_path / name)
                       if "train/grad_norm" in m] for name in ("full", "dp")}
  assert len(grad_norms["full"]) == 8
  np.testing.assert_allclose(grad_norms["dp"], grad_norms["full"], rtol=1e-5)
  evals = [m["eval/loss"] for m in read_metrics(tmp_path / "full") if "eval/loss" in m]
  assert len(evals) == 2 and evals[1] < evals[0]  # the adapters learned
  for a, b in zip(_params(full), _params(data_parallel)):
    np.testing.assert_allclose(a, b, atol=1e-5)

  def sigterm_at_5(step):
    if step == 5:
      os.kill(os.getpid(), signal.SIGTERM)

  part = sft.run(_lora_sft_config(tmp_path / "pre", sharded), tmp_path / "resumed",
                 hooks=(sigterm_at_5,))
  assert int(part["step"]) == 5
  resumed = sft.run(_lora_sft_config(tmp_path / "pre", sharded), tmp_path / "resumed")
  assert train_losses(tmp_path / "resumed") == full_losses
  for a, b in zip(_params(resumed), _params(full)):
    np.testing.assert_array_equal(a, b)


class _Position:
  """A checkpointable position, as every data source has."""

  position = 0

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]

  def close(self):
    pass


class _Batches(_Position):
  """Fixed LM batches (a list, cycled)."""

  def __init__(self, batches):
    self.batches = batches

  def __next__(self):
    batch = self.batches[self.position % len(self.batches)]
    self.position += 1
    return batch


class _SumSource(_Position, loop.OnPolicySource):
  """An on-policy source whose every batch records the params it was made with."""

  def __init__(self, batch):
    self.batch, self.param_sums, self.last_metrics = batch, [], {}

  def next_for(self, params, frozen):
    total = float(sum(np.sum(np.asarray(x)) for x in jax.tree.leaves(params)))
    self.param_sums.append(total)
    self.position += 1
    self.last_metrics = {"rollout/param_sum": total}
    return self.batch


def _lm_batch(rows, seq_len, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 300, (rows, seq_len + 1)).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "loss_mask": np.ones((rows, seq_len), np.float32)}


def test_an_on_policy_source_makes_each_batch_with_the_params_being_trained(tiny_config,
                                                                            tmp_path, capsys):
  from jaxllm.objectives import lm
  tiny_config.train.num_steps = 3
  source = _SumSource(_lm_batch(8, 32))
  model = Transformer(ModelConfig.from_dict(tiny_config.model))
  loop.train(tiny_config, tmp_path, model, lm.lm_loss, source,
             progress=(("rollout/param_sum", "param sum {:.2f}"),))
  assert len(source.param_sums) == 3 and len(set(source.param_sums)) == 3  # updated each step
  # Each step's rollout line, then its update line, in step order.
  printed = [(int(m.group(1)), "param sum" in line) for line in capsys.readouterr().out.splitlines()
             if (m := re.match(r"step (\d+)/3 \|", line))]
  assert printed == [(1, True), (1, False), (2, True), (2, False), (3, True), (3, False)]
  logged = [m["rollout/param_sum"] for m in read_metrics(tmp_path) if "rollout/param_sum" in m]
  assert logged == pytest.approx(source.param_sums)


def test_a_batch_of_another_shape_trains_through_its_own_compile(tiny_config, tmp_path):
  from jaxllm.objectives import lm
  tiny_config.train.num_steps = 4
  batches = _Batches([_lm_batch(8, 32), _lm_batch(8, 16, seed=1)])
  model = Transformer(ModelConfig.from_dict(tiny_config.model))
  state = loop.train(tiny_config, tmp_path, model, lm.lm_loss, batches)
  assert int(state["step"]) == 4
  assert sorted(train_losses(tmp_path)) == [1, 2, 3, 4]


def test_the_progress_line_shows_the_loop_keys_then_the_recipe_keys():
  keys = (*loop.PROGRESS_HEAD, ("rollout/reward_mean", "reward {:.2f}"), *loop.PROGRESS_TAIL)
  line = loop._progress_line(3, 10, {"train/loss": 1.5, "rollout/reward_mean": 0.25,
                                     "perf/tokens_per_second": 1234.0, "other": 1.0}, keys)
  assert line == "step 3/10 | loss 1.5000 | reward 0.25 | 1,234 tok/s"


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_a_terminal_gets_a_bar_over_the_lines_and_a_file_only_the_lines(tiny_config, tmp_path,
                                                                         monkeypatch, capsys):
  from jaxllm.objectives import lm
  tiny_config.train.num_steps = 4
  tiny_config.train.log_every = 2
  model = Transformer(ModelConfig.from_dict(tiny_config.model))
  terminal = _Terminal()
  monkeypatch.setattr("sys.stdout", terminal)
  loop.train(tiny_config, tmp_path / "tty", model, lm.lm_loss, _Batches([_lm_batch(8, 32)] * 4))
  shown = terminal.getvalue()
  monkeypatch.undo()
  assert re.search(r"\r 50%.*\| 2/4 \[.*loss \d\.\d{4}", shown)  # redrawn under step 2's line
  lines = [ln.split("\r")[-1] for ln in shown.split("\n")]
  assert sum(ln.startswith("step ") for ln in lines) == 3  # steps 1, 2 and 4, whole lines

  loop.train(tiny_config, tmp_path / "file", model, lm.lm_loss,
             _Batches([_lm_batch(8, 32)] * 4))
  written = capsys.readouterr().out
  assert "\r" not in written and "it/s" not in written and "step/s" not in written
  assert [ln[:8] for ln in written.splitlines() if ln.startswith("step ")] == [
      "step 1/4", "step 2/4", "step 4/4"]
