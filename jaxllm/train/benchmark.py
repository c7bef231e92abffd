"""Speed of the compiled train step and of the KV-cache sampler, on synthetic tokens.

Both build exactly what a run builds (model, mesh, shardings, optimizer, the train step with
donation and config.train.xla_options; the Sampler with its preallocated cache and bucketed
shapes) from a pretraining config, so the numbers are those of `experiments/pretrain.py` minus
the data batching. Times are wall clock after compilation and warm-up, one blocked call each.

Model FLOPs utilisation = train_flops_per_token(cfg, T) * tokens/s / (peak FLOP/s per device *
devices), with the per-token count of jaxllm/train/metrics.py (6 N + 12 L T H_q D_h) and the
peak of metrics.PEAK_FLOPS_BF16 (or config.train.peak_flops_per_device).
"""

import functools
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxllm import config as config_lib
from jaxllm.inference import sampler as sampler_lib
from jaxllm.models import params as params_lib
from jaxllm.models.transformer import Transformer
from jaxllm.objectives import lm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.train import loop as loop_lib
from jaxllm.train import metrics as metrics_lib
from jaxllm.train import optimizer as optimizer_lib
from jaxllm.train import state as state_lib


def spread(seconds: list[float]) -> dict[str, float]:
  """Median, 10th and 90th percentile, min and max of a list of timings (seconds)."""
  s = np.asarray(seconds, np.float64)
  return {"median": float(np.median(s)), "p10": float(np.percentile(s, 10)),
          "p90": float(np.percentile(s, 90)), "min": float(s.min()), "max": float(s.max()),
          "n": int(s.size)}


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
  """Seconds for each of n calls of fn, each blocked until its outputs are ready."""
  out = []
  for _ in range(n):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - start)
  return out


def peak_memory() -> dict[str, float]:
  """Peak bytes in use on device 0 (accelerators) and the process's peak resident host memory."""
  out = {}
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["device_peak_bytes"] = float(stats["peak_bytes_in_use"])
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
  out["host_peak_rss_bytes"] = float(rss if sys.platform == "darwin" else rss * 1024)
  return out


def synthetic_batch(config, vocab_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """This process's rows of a batch of uniform random tokens, every position a target."""
  rows = config.train.batch_size // jax.process_count()
  tokens = rng.integers(0, vocab_size, (rows, config.data.seq_len + 1), dtype=np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "loss_mask": np.ones((rows, config.data.seq_len), np.float32)}


def benchmark_train(config, steps: int, warmup: int) -> tuple[dict[str, Any], Any]:
  """Times `steps` train steps after compiling and `warmup` more; returns (results, params)."""
  model_cfg = config_lib.validate(config)
  model = Transformer(model_cfg)
  tc, seq_len = config.train, config.data.seq_len
  mesh = mesh_lib.make_mesh(config.mesh)
  loop_lib.check_mesh_fits(config, mesh, model_cfg)
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  tx = optimizer_lib.make_optimizer(config.optimizer, tc.num_steps)
  loss_fn = functools.partial(lm.lm_loss, z_loss=tc.z_loss, chunk=tc.loss_chunk)
  results: dict[str, Any] = {}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, shardings = state_lib.state_shardings(model, tx, mesh, rules, seq_len)
    state = state_lib.create_state(model, tx, jax.random.key(config.seed), shardings, seq_len)
    batch = sharding_lib.global_batch(
        synthetic_batch(config, model_cfg.vocab_size, np.random.default_rng(config.seed)), mesh)
    schedule = optimizer_lib.learning_rate_schedule(config.optimizer, tc.num_steps)
    step = loop_lib.jit_train_step(config, loss_fn, model, tx, schedule, shardings, mesh)
    rng = jax.random.key(1)
    start = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    results["compile_seconds"] = time.perf_counter() - start
    holder = {"state": state}

    def one_step():
      holder["state"], metrics = compiled(holder["state"], batch, rng)
      return metrics

    time_calls(one_step, warmup)
    seconds = time_calls(one_step, steps)
    loss = float(jax.device_get(one_step()["loss"]))
    params = holder["state"]["params"]
  tokens = tc.batch_size * seq_len
  step_s = spread(seconds)
  flops_per_token = metrics_lib.train_flops_per_token(model_cfg, seq_len)
  peak = metrics_lib.peak_flops_per_device(jax.devices()[0].device_kind,
                                           tc.peak_flops_per_device)
  results.update(
      step_seconds=step_s, tokens_per_step=tokens,
      tokens_per_second=tokens / step_s["median"],
      tokens_per_second_per_device=tokens / step_s["median"] / jax.device_count(),
      flops_per_token=flops_per_token, num_params=params_lib.count_params(params),
      last_loss=loss, **peak_memory())
  if peak:
    results["peak_flops_per_device"] = peak
    results["mfu"] = flops_per_token * results["tokens_per_second"] / (peak * jax.device_count())
  return results, params


def benchmark_sampler(config, params: Any, batch: int, prompt_len: int, new_tokens: int,
                      repeats: int) -> dict[str, Any]:
  """Prefill and decode speed of the Sampler (greedy, no stop tokens, random prompts).

  Prefill: a call generating 1 token (the prompt's forward pass plus one pick). Decode: the
  extra time of a call generating `new_tokens`, per generated token after the first.
  """
  model_cfg = config_lib.validate(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  smp = sampler_lib.Sampler(Transformer(model_cfg), params, pad_id=0, mesh=mesh, rules=rules)
  rng = np.random.default_rng(config.seed)
  prompts = rng.integers(1, model_cfg.vocab_size, (batch, prompt_len)).tolist()
  prefill = lambda: smp.generate(prompts, 1, temperature=0.0)
  full = lambda: smp.generate(prompts, new_tokens, temperature=0.0)
  prefill(), full()  # compile both programs
  prefill_s = spread(time_calls(prefill, repeats))
  full_s = spread(time_calls(full, repeats))
  decode_s = max(full_s["median"] - prefill_s["median"], 1e-9)
  return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
          "prefill_seconds": prefill_s, "generate_seconds": full_s,
          "prefill_tokens_per_second": batch * prompt_len / prefill_s["median"],
          "decode_tokens_per_second": batch * (new_tokens - 1) / decode_s,
          "decode_ms_per_step": 1000 * decode_s / (new_tokens - 1)}
