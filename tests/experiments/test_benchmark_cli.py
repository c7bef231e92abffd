"""experiments/benchmark.py: train-step and sampler numbers for a config, as a report and JSON."""

import json

import pytest

from tests.experiments.conftest import run_script

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses


def test_benchmark_reports_step_time_throughput_memory_and_sampler_speed(tmp_path):
  done = run_script("benchmark.py", "--config=configs/pretrain/tiny.py",
                    "--config.benchmark.steps=4", "--config.benchmark.warmup=1",
                    "--config.benchmark.sample_batch=2", "--config.benchmark.prompt_len=8",
                    "--config.benchmark.new_tokens=16", "--config.benchmark.repeats=2",
                    "--config.train.batch_size=4", "--config.data.seq_len=32",
                    "--config.train.peak_flops_per_device=1e12", f"--workdir={tmp_path}")
  assert done.returncode == 0, done.stderr
  for words in ("compile", "step         median", "tokens/s", "MFU", "host peak RSS",
                "prefill", "decode"):
    assert words in done.stdout
  r = json.loads((tmp_path / "benchmark.json").read_text())
  train = r["train"]
  assert train["step_seconds"]["n"] == 4
  assert 0 < train["step_seconds"]["p10"] <= train["step_seconds"]["median"] <= train[
      "step_seconds"]["p90"]
  assert train["tokens_per_step"] == 4 * 32
  assert train["tokens_per_second"] == 4 * 32 / train["step_seconds"]["median"]
  assert train["mfu"] == (train["flops_per_token"] * train["tokens_per_second"] / 1e12)
  assert train["compile_seconds"] > 0 and train["host_peak_rss_bytes"] > 0
  assert 0 < train["last_loss"] < 10  # ln(1024) = 6.9 at the start
  s = r["sampler"]
  assert s["prefill_tokens_per_second"] > 0 and s["decode_tokens_per_second"] > 0
  assert s["decode_ms_per_step"] == 1000 * (s["generate_seconds"]["median"] - s[
      "prefill_seconds"]["median"]) / 15


def test_benchmark_refuses_bad_settings():
  done = run_script("benchmark.py", "--config=configs/pretrain/tiny.py",
                    "--config.benchmark.new_tokens=1")
  assert done.returncode == 2
  assert "config.benchmark: new_tokens=1 (>= 2)" in done.stderr
