"""metrics.jsonl reading (a cut-off last line is dropped, damage elsewhere is named) and the
FLOPs accounting behind MFU."""

import pytest

from jaxllm.errors import UserError
from jaxllm.train.metrics import MetricWriter, read_metrics


def test_read_metrics_drops_only_a_cut_off_last_line(tmp_path):
  assert read_metrics(tmp_path) == []
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "tr')
  assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 2.0}]
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(UserError, match=r"metrics.jsonl:2 is not a JSON object"):
    read_metrics(tmp_path)


def test_timings_go_to_perf_jsonl_and_resume_truncates_both(tmp_path):
  writer = MetricWriter(tmp_path)
  for step in (1, 2, 3):
    writer.write(step, {"train/loss": 1.0 / step, "perf/tokens_per_second": 100.0 * step,
                        "time/sample_seconds": 0.5})
  writer.write(3, {"eval/loss": float("nan")})
  writer.close()
  assert read_metrics(tmp_path) == [
      {"step": 1, "train/loss": 1.0}, {"step": 2, "train/loss": 0.5},
      {"step": 3, "train/loss": 1 / 3}, {"step": 3, "eval/loss": "nan"}]
  assert [m["perf/tokens_per_second"] for m in read_metrics(tmp_path, "perf.jsonl")] == [
      100.0, 200.0, 300.0]
  assert MetricWriter(tmp_path).truncate_after(1) == 3
  assert len(read_metrics(tmp_path)) == len(read_metrics(tmp_path, "perf.jsonl")) == 1


def test_train_flops_per_token_matches_a_hand_count():
  """GPT-2 124M at T = 1024, counted by hand (forward FLOPs, times 3 for forward + backward).

  Per layer: q, k, v, o are 768 x 768 matmuls (4 x 589,824 weights), the MLP 768 x 3072 and back
  (2 x 2,359,296): 7,077,888 weights; 12 layers 84,934,656, plus the 768 x 50,257 head 38,597,376
  = 123,532,032 weights in matmuls, 2 FLOPs each per token: 247,064,064. Attention scores and
  the weighted sum over all 1024 positions: 2 x 2 x 1024 x 768 per layer, x 12 = 37,748,736.
  Forward 284,812,800; x 3 = 854,438,400.
  """
  from jaxllm.models import get_size
  from jaxllm.train.metrics import matmul_params, train_flops_per_token
  cfg = get_size("gpt2-124m")
  assert matmul_params(cfg) == 123_532_032
  assert train_flops_per_token(cfg, 1024) == 854_438_400
  # Grouped-query attention: k and v are num_kv_heads x head_dim wide (llama-125m: 4 x 64).
  llama = get_size("llama-125m")
  per_layer = 2 * 768 * 768 + 2 * 768 * 256 + 3 * 768 * 3072
  assert matmul_params(llama) == 12 * per_layer + 768 * 32000


def test_peak_flops_lookup_by_device_kind():
  from jaxllm.train.metrics import peak_flops_per_device
  assert peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
  assert peak_flops_per_device("TPU v5 lite") == 197e12
  assert peak_flops_per_device("TPU v5p") == 459e12
  assert peak_flops_per_device("cpu") is None
  assert peak_flops_per_device("cpu", override=3e11) == 3e11
