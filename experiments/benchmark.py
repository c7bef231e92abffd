"""Speed of a pretraining config: train step time, tokens/s, MFU, memory, compile time, and the
sampler's prefill and decode tokens/s (jaxllm/train/benchmark.py). Synthetic tokens, no I/O.

  python experiments/benchmark.py --config=configs/pretrain/llama_125m.py:seq_len=1024 \\
      --config.benchmark.steps=50 [--workdir=DIR]

With --workdir the results are also written to DIR/benchmark.json.
"""

import json

import jax
from absl import flags
from ml_collections import config_flags

from jaxllm import cli, storage
from jaxllm.errors import ConfigError
from jaxllm.train import benchmark

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Pretraining config file (configs/pretrain/).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Optional: write benchmark.json here.")
flags.mark_flags_as_required(["config"])
cli.define_print_config()


def run(config) -> dict:
  b = config.benchmark
  if b.steps < 1 or b.warmup < 0 or b.repeats < 1:
    raise ConfigError(f"config.benchmark: steps={b.steps} (>= 1), warmup={b.warmup} (>= 0) and "
                      f"repeats={b.repeats} (>= 1) are out of range.")
  if b.sampler and (b.new_tokens < 2 or b.prompt_len < 1 or b.sample_batch < 1):
    raise ConfigError(f"config.benchmark: new_tokens={b.new_tokens} (>= 2), prompt_len="
                      f"{b.prompt_len} and sample_batch={b.sample_batch} (>= 1) are out of range.")
  train, params = benchmark.benchmark_train(config, b.steps, b.warmup)
  results = {"device": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
             "backend": jax.default_backend(), "jax": jax.__version__,
             "seq_len": config.data.seq_len, "batch_size": config.train.batch_size,
             "dtype": config.model.dtype, "train": train}
  if b.sampler:
    results["sampler"] = benchmark.benchmark_sampler(config, params, b.sample_batch,
                                                     b.prompt_len, b.new_tokens, b.repeats)
  return results


def report(r: dict) -> str:
  t, s = r["train"], r["train"]["step_seconds"]
  lines = [
      f"{r['num_devices']} x {r['device']} ({r['backend']}, jax {r['jax']}), {r['dtype']}, "
      f"batch {r['batch_size']} x {r['seq_len']} tokens, {t['num_params']:,} params",
      f"compile      {t['compile_seconds']:.1f} s",
      f"step         median {1000 * s['median']:.2f} ms (p10 {1000 * s['p10']:.2f}, p90 "
      f"{1000 * s['p90']:.2f}, {s['n']} steps)",
      f"throughput   {t['tokens_per_second']:,.0f} tokens/s "
      f"({t['tokens_per_second_per_device']:,.0f} per device)",
      "MFU          " + (f"{t['mfu']:.1%} of {t['peak_flops_per_device'] / 1e12:.0f} TFLOP/s per "
                         "device" if "mfu" in t else
                         "n/a (unknown peak: set config.train.peak_flops_per_device)"),
      "memory       " + (f"device peak {t['device_peak_bytes'] / 2**30:.2f} GiB, "
                          if "device_peak_bytes" in t else "")
      + f"host peak RSS {t['host_peak_rss_bytes'] / 2**30:.2f} GiB",
  ]
  if "sampler" in r:
    m = r["sampler"]
    lines.append(f"sampler      batch {m['batch']}, prompt {m['prompt_len']}, "
                 f"{m['new_tokens']} new: prefill {m['prefill_tokens_per_second']:,.0f} tok/s, "
                 f"decode {m['decode_tokens_per_second']:,.0f} tok/s "
                 f"({m['decode_ms_per_step']:.2f} ms/step)")
  return "\n".join(lines)


def main(argv):
  del argv
  if cli.print_config(FLAGS.config):
    return
  results = run(FLAGS.config)
  print(report(results), flush=True)
  if FLAGS.workdir:
    path = storage.path(FLAGS.workdir)  # a local folder or gs://
    path.mkdir(parents=True, exist_ok=True)
    storage.write_text(path / "benchmark.json", json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
  cli.run(main)
