"""The one training loop, for every objective: step, eval, checkpoint, metrics, preemption.

The loop knows no stage. A recipe hands it a model, a loss (the objective contract of
jaxllm/objectives/lm.py), its batches (an iterator, or an `OnPolicySource` whose batches depend
on the params being trained), optional frozen params and evals, and the keys its progress line
shows (`progress`).
"""

import abc
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxllm import rundir, storage
from jaxllm.errors import ConfigError, UserError
from jaxllm.models import params as params_lib
from jaxllm.models import splash
from jaxllm.models.config import ModelConfig
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.parallel import target
from jaxllm.train import checkpoint as ckpt_lib
from jaxllm.train import memory as memory_lib
from jaxllm.train import metrics as metrics_lib
from jaxllm.train import optimizer as optimizer_lib
from jaxllm.train import progress as progress_lib
from jaxllm.train import state as state_lib
from jaxllm.train import step as step_lib
from jaxllm.train import wandb_logging


class TrainingDiverged(UserError):
  """Too many non-finite steps in a row."""


class OnPolicySource(abc.ABC):
  """Batches made with the params being trained (RL rollouts, jaxllm/rl/rollout.py).

  For each step the loop calls `next_for(params, frozen)` instead of `next(...)`, and writes
  `last_metrics` ("rollout/...", "time/...") at the step that trains on that batch. Like a
  plain iterator it has get_state/set_state (checkpointed with the model) and close.
  """

  last_metrics: dict[str, float]

  @abc.abstractmethod
  def next_for(self, params: Any, frozen: Any) -> dict[str, np.ndarray]:
    """This process's rows of the next global batch, made with `params` (and `frozen`)."""

  @abc.abstractmethod
  def get_state(self) -> dict:
    """The position to checkpoint."""

  @abc.abstractmethod
  def set_state(self, state: dict) -> None:
    """Continues from a checkpointed position."""

  @abc.abstractmethod
  def close(self) -> None:
    """Releases what the source holds."""


# What every progress line shows (metric key, format), around the keys a recipe adds.
PROGRESS_HEAD = (("train/loss", "loss {:.4f}"), ("train/accuracy", "acc {:.3f}"),
                 ("train/grad_norm", "gnorm {:.3f}"), ("train/lr", "lr {:.2e}"),
                 ("eval/loss", "eval loss {:.4f}"), ("eval/perplexity", "eval ppl {:.3f}"),
                 ("eval/accuracy", "eval acc {:.3f}"))
PROGRESS_TAIL = (("perf/tokens_per_second", "{:,.0f} tok/s"), ("perf/mfu", "MFU {:.1%}"))


class _PreemptionFlag:
  """Set by SIGTERM or a first Ctrl-C (SIGINT): the loop saves a checkpoint after the current
  step and returns. A second Ctrl-C stops at once (KeyboardInterrupt), without that save.
  Restores the previous handlers when closed."""

  def __init__(self):
    self.raised = False
    self._previous = {sig: signal.signal(sig, self._handle)
                      for sig in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      if self.raised:
        raise KeyboardInterrupt
      print("Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again to stop "
            "at once, without saving).", file=sys.stderr, flush=True)
    self.raised = True

  def requested(self) -> bool:
    """True on every process once any process got SIGTERM (they must save the same step)."""
    if jax.process_count() == 1:
      return self.raised
    flags = multihost_utils.process_allgather(np.int32(self.raised))
    return bool(np.any(flags))

  def close(self):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


def check_mesh_fits(config, mesh, model_cfg: ModelConfig, minibatches: int = 1) -> None:
  """Errors for shapes the mesh cannot split evenly, naming the fields."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  per_micro = config.train.batch_size // config.train.microbatches // minibatches
  if per_micro % shards:
    split = (" / config.rl.minibatches" if minibatches > 1 else "")
    raise ConfigError(
        f"config.train.batch_size / config.train.microbatches{split} = {per_micro} sequences "
        f"per microbatch is not divisible by the {shards} data x fsdp shards of the mesh; "
        "change the batch size, microbatches or config.mesh.")
  for axis, names in (("tensor", ("num_heads", "num_kv_heads", "mlp_dim", "vocab_size")),
                      ("fsdp", ("d_model",))):
    size = mesh.shape[axis]
    for name in names:
      if getattr(model_cfg, name) % size:
        raise ConfigError(
            f"config.model.{name}={getattr(model_cfg, name)} is not divisible by "
            f"config.mesh.{axis}={size}; change the mesh"
            + (" or pad the vocabulary (e.g. to a multiple of 128)." if name == "vocab_size"
               else "."))
  processes = target.process_count(mesh.devices.flat)
  if processes > 1 and shards % processes:
    raise ConfigError(
        f"config.mesh: the {shards} data x fsdp shards cannot be split over "
        f"{processes} processes (each process feeds its own rows); keep "
        "config.mesh.tensor within one host and data x fsdp a multiple of the process count.")
  impl, backend = model_cfg.attention_impl, target.platform()
  if impl == "cudnn" and (backend != "gpu" or model_cfg.dtype == "float32"):
    raise ConfigError(
        f"config.model.attention_impl='cudnn' needs a GPU and 16-bit compute (backend "
        f"{backend!r}, config.model.dtype={model_cfg.dtype!r}); use 'auto'.")
  if impl == "splash" and (backend != "tpu" or splash.block_size(config.data.seq_len) is None):
    raise ConfigError(
        f"config.model.attention_impl='splash' needs a TPU and config.data.seq_len a multiple "
        f"of 128 (backend {backend!r}, seq_len {config.data.seq_len}); use 'auto'.")


def jit_train_step(config, loss_fn: Callable, model, tx, schedule, shardings, mesh,
                   updates_per_step: tuple[int, int] = (1, 1)):
  """The jitted train step a run uses: state donated and kept on `shardings`, metrics
  replicated, compiled with config.train.xla_options."""
  epochs, minibatches = updates_per_step
  step = step_lib.make_train_step(loss_fn, model, tx, schedule, config.train.microbatches,
                                  epochs, minibatches)
  return jax.jit(step, out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=(0,),
                 compiler_options=step_lib.xla_options(config.train.xla_options))


def evaluate(eval_step, params, batches: Iterable[dict], mesh, frozen=None) -> dict[str, float]:
  """Weighted mean of every metric over the eval batches, plus perplexity."""
  totals: dict[str, float] = {}
  for batch in batches:
    sums = jax.device_get(eval_step(params, sharding_lib.global_batch(batch, mesh), frozen))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  weight = max(totals.pop("weight", 0.0), 1.0)
  out = metrics_lib.add_std({f"eval/{k}": v / weight for k, v in totals.items()})
  if "eval/nll" in out:
    out["eval/perplexity"] = float(np.exp(min(out["eval/nll"], 50.0)))
  return out


def train(config, workdir, model: nn.Module, loss_fn: Callable,
          train_iter: Iterator[dict[str, np.ndarray]] | OnPolicySource,
          eval_batches: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None,
          init_params: Any = None, hooks: tuple[Callable[[int], None], ...] = (),
          frozen_params: Any = None,
          evals: tuple[Callable[[Any, Any], dict[str, float]], ...] = (),
          sequences_per_row: int = 1, updates_per_step: tuple[int, int] = (1, 1),
          progress: Sequence[tuple[str, str]] = ()):
  """Trains `model` on `loss_fn` for config.train.num_steps steps; returns the final state.

  `train_iter` yields this process's rows of each global batch and has get_state/set_state.
  `init_params` replace the fresh params (fine-tuning). `frozen_params` are params the model
  reads but does not train (a LoRA base: `model` then has `with_frozen` and `frozen_model`);
  they are placed on the mesh, passed to every step, and not checkpointed. `evals` are called
  as `fn(params, frozen_params)` at every eval step (and at step 0 of a fresh run with
  config.train.eval_at_start; under the mesh) and return more "eval/..." metrics, e.g. sampled
  answers' accuracy. `sequences_per_row` counts the sequences of seq_len tokens in a batch row
  (2 for preference pairs), for tokens/s.
  `updates_per_step` = (epochs, minibatches): optimizer updates per step over the batch (RL;
  see step.make_train_step); the learning-rate schedule spans num_steps * epochs * minibatches.

  An `OnPolicySource` (the RL rollouts) makes each batch with the params being trained.
  `progress`: (metric key, format) pairs the recipe adds to the console progress line, between
  PROGRESS_HEAD and PROGRESS_TAIL.
  Running again with the same workdir resumes from the newest checkpoint: params, optimizer,
  step, RNG (derived from seed and step) and data position, so results are bit-identical.
  SIGTERM (or a first Ctrl-C) saves a checkpoint at the current step and returns cleanly. No
  checkpoint is saved inside a streak of non-finite steps.
  """
  workdir = storage.path(workdir)  # a local folder or gs://
  main = jax.process_index() == 0
  model_cfg = model.cfg
  tc = config.train
  seq_len = config.data.seq_len
  rundir.check_resume(config, workdir)  # the resolved config, before config.json is replaced
  if main:
    workdir.mkdir(parents=True, exist_ok=True)
    rundir.write_text(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")

  epochs, minibatches = updates_per_step
  num_updates = tc.num_steps * epochs * minibatches
  on_policy = isinstance(train_iter, OnPolicySource)
  progress_keys = (*PROGRESS_HEAD, *progress, *PROGRESS_TAIL)
  mesh = mesh_lib.make_mesh(config.mesh)
  check_mesh_fits(config, mesh, model_cfg, minibatches)
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  tx = optimizer_lib.make_optimizer(config.optimizer, num_updates)
  schedule = optimizer_lib.learning_rate_schedule(config.optimizer, num_updates)
  base_rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.fold_in(base_rng, 0), jax.random.fold_in(base_rng, 1)
  with contextlib.ExitStack() as stack:  # callbacks run in reverse order
    preemption = _PreemptionFlag()
    stack.callback(preemption.close)  # last: a second SIGTERM cannot cut the final save short
    wandb_run = (wandb_logging.WandbRun(workdir, config.logging.wandb, config.to_dict())
                 if main and wandb_logging.enabled(config) else None)
    writer = metrics_lib.MetricWriter(workdir, enabled=main, wandb_run=wandb_run)
    stack.callback(writer.close)
    console = progress_lib.Progress(tc.num_steps, show=main)
    checkpoints = ckpt_lib.Checkpoints(workdir / "checkpoints", tc.keep_checkpoints,
                                       tc.async_checkpointing, log=console.log)
    stack.callback(checkpoints.close)
    stack.callback(console.close)  # the bar goes before the final save's lines
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(rules))
    abstract_state, shardings = state_lib.state_shardings(model, tx, mesh, rules, seq_len)
    restored = checkpoints.restore_latest(abstract_state)
    if restored is not None:
      latest, state, data_state = restored
      train_iter.set_state(data_state)
      dropped = writer.truncate_after(latest)
      console.log(f"resumed from {workdir / 'checkpoints'} at step {latest}"
           + (f" ({dropped} later metric lines dropped)" if dropped else ""))
      if latest >= tc.num_steps:
        console.log(f"{workdir} is already complete at step {latest} (config.train.num_steps="
             f"{tc.num_steps}); nothing to train. Raise --config.train.num_steps to go on.")
    else:
      writer.truncate_after(0)  # lines of an earlier attempt that never checkpointed
      state = state_lib.create_state(model, tx, init_rng, shardings, seq_len, init_params)
    frozen = None
    if frozen_params is not None:
      frozen = jax.device_put(frozen_params, params_lib.params_shardings(
          model.frozen_model, mesh, rules, seq_len))
    num_params = params_lib.count_params(state["params"])
    described = f"{num_params:,} parameters"
    if frozen is not None:
      num_frozen = params_lib.count_params(frozen)
      described = (f"{num_params:,} trainable parameters, {num_frozen:,} frozen "
                   f"({params_lib.param_bytes(frozen) / 2**20:,.2f} MiB; trainable = "
                   f"{num_params / num_frozen:.2%} of frozen)")
    console.log(f"model: {described}; mesh {dict(mesh.shape)}; "
         f"{jax.device_count()} {jax.devices()[0].platform} devices, "
         f"{jax.process_count()} processes")

    step_fn = jit_train_step(config, loss_fn, model, tx, schedule, shardings, mesh,
                             updates_per_step)
    eval_fn = jax.jit(step_lib.make_eval_step(loss_fn, model),
                      out_shardings=NamedSharding(mesh, P()),
                      compiler_options=step_lib.xla_options(tc.xla_options))

    flops_per_token = metrics_lib.train_flops_per_token(model_cfg, seq_len)
    peak = metrics_lib.peak_flops_per_device(jax.devices()[0].device_kind,
                                             tc.peak_flops_per_device)
    tokens_per_step = tc.batch_size * seq_len * sequences_per_row * epochs
    step = int(jax.device_get(state["step"]))
    first_step = step + 1  # of this call: its progress line is shown whatever log_every says
    pending = None  # (step, metrics) of the previous step, read after the next is dispatched
    compiled, compiled_shapes = None, None
    window_start, window_steps = None, 0
    console.start(first_step - 1)

    def finish(step_done: int, metrics: dict) -> None:
      nonlocal window_start, window_steps
      values = metrics_lib.add_std(
          {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()})
      if values["train/nonfinite_streak"] >= tc.max_nonfinite_in_row:
        saved = checkpoints.manager.latest_step()
        raise TrainingDiverged(
            f"{int(values['train/nonfinite_streak'])} steps in a row had a non-finite loss or "
            f"gradient (last at step {step_done}); lower config.optimizer.lr, raise "
            "config.optimizer.warmup_steps, or raise config.train.max_nonfinite_in_row. No "
            "checkpoint is saved inside such a streak: running again starts from "
            + (f"step {saved} (the newest checkpoint)." if saved is not None else "step 0."))
      window_steps += 1
      console.advance(step_done, values.get("train/loss"))
      if step_done % tc.log_every and step_done != tc.num_steps:
        if step_done == first_step:  # on the console only: metrics.jsonl keeps its cadence
          console.log(_progress_line(step_done, tc.num_steps, values, progress_keys)
                      + console.line(step_done))
        return
      now = time.perf_counter()
      if window_start is not None and window_steps:
        seconds = (now - window_start) / window_steps
        values["perf/step_seconds"] = seconds
        values["perf/tokens_per_second"] = tokens_per_step / seconds
        if peak:
          values["perf/mfu"] = flops_per_token * tokens_per_step / seconds / (
              peak * jax.device_count())
      window_start, window_steps = now, 0
      checkpoints.check()  # a save that failed in the background stops the run here
      writer.write(step_done, values)
      console.log(_progress_line(step_done, tc.num_steps, values, progress_keys)
                  + console.line(step_done))

    def run_evals(at_step: int) -> None:
      with console.paused():  # the evals may print their own progress
        eval_values = ({} if eval_batches is None else
                       evaluate(eval_fn, state["params"], eval_batches(), mesh, frozen))
        for fn in evals:
          eval_values.update(fn(state["params"], frozen))
      writer.write(at_step, eval_values)
      console.log(_progress_line(at_step, tc.num_steps, eval_values, progress_keys))

    if (evals or eval_batches is not None) and step == 0 and tc.get("eval_at_start", False):
      run_evals(0)
    while step < tc.num_steps:
      if on_policy:
        if pending is not None:  # the update's line before the next rollout's: in step order
          finish(*pending)
          pending = None
        with console.paused():
          local = train_iter.next_for(state["params"], frozen)
        writer.write(step + 1, train_iter.last_metrics)
        console.log(_progress_line(step + 1, tc.num_steps, train_iter.last_metrics,
                                   progress_keys))
      else:
        local = next(train_iter)
      batch = sharding_lib.global_batch(local, mesh)
      if compiled is None:  # compiled ahead of the first step, to check its memory first
        start = time.perf_counter()
        try:
          compiled = step_fn.lower(state, batch, train_rng, frozen).compile()
        except Exception as e:  # the TPU compiler refuses a step that does not fit
          needs = memory_lib.compiler_out_of_memory(str(e))
          if needs is None:
            raise
          raise UserError(f"the train step needs {needs[0] / 2**30:.2f} GiB per device (XLA: "
                          f"{str(e).splitlines()[0][:200]}); {memory_lib.ADVICE}") from None
        compiled_shapes = _shapes(batch)
        console.log(f"compiled the train step in {time.perf_counter() - start:.1f} s; "
                    + memory_lib.check(compiled, tc.device_memory_gib))
        console.compiled()  # the ETA counts steps, not the compile
      if _shapes(batch) == compiled_shapes:
        state, metrics = compiled(state, batch, train_rng, frozen)
      else:  # a batch of another shape (a ragged last batch): jit compiles for it
        state, metrics = step_fn(state, batch, train_rng, frozen)
      step += 1
      for hook in hooks:
        hook(step)
      if pending is not None:
        finish(*pending)
      elif window_start is None:
        jax.block_until_ready(metrics)  # first step includes compilation: time from here on
        window_start, window_steps = time.perf_counter(), -1
      pending = (step, metrics)
      preempted = preemption.requested() or checkpoints.manager.reached_preemption(step)
      if step % tc.checkpoint_every == 0 or step == tc.num_steps or preempted:
        finish(*pending)
        pending = None
        streak = int(jax.device_get(state["nonfinite_streak"]))
        if streak:  # the params may be what made the steps diverge: keep the last good save
          console.log(f"step {step}: no checkpoint saved, the last {streak} steps were "
                      "non-finite (skipped).")
        else:
          checkpoints.save(step, state, train_iter.get_state())
          writer.flush()  # the metrics up to a checkpoint are in the run directory with it
      if (eval_batches is not None or evals) and (step % tc.eval_every == 0
                                                   or step == tc.num_steps):
        if pending is not None:
          finish(*pending)
          pending = None
        run_evals(step)
        window_start, window_steps = time.perf_counter(), 0
      if preempted:
        newest = checkpoints.manager.latest_step()
        console.log("stop requested (SIGTERM or Ctrl-C): " + (
            f"saved a checkpoint at step {step}" if newest == step else
            f"the newest checkpoint is step {newest}") + "; run the same command to resume.")
        break
    if pending is not None:
      finish(*pending)
  return state


def _progress_line(step: int, num_steps: int, values: dict[str, float],
                   keys: Sequence[tuple[str, str]]) -> str:
  parts = [f"step {step}/{num_steps}"]
  parts += [fmt.format(values[key]) for key, fmt in keys if key in values]
  if values.get("train/skipped"):
    parts.append("SKIPPED (non-finite)")
  return " | ".join(parts)


def _shapes(batch: dict) -> dict[str, tuple]:
  """Each array's shape and dtype: what the compiled step was built for."""
  return {k: (v.shape, v.dtype) for k, v in batch.items()}

