"""metrics.jsonl reading: a cut-off last line is dropped, damage elsewhere is named."""

import pytest

from jaxllm.errors import UserError
from jaxllm.train.metrics import read_metrics


def test_read_metrics_drops_only_a_cut_off_last_line(tmp_path):
  assert read_metrics(tmp_path) == []
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "tr')
  assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 2.0}]
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(UserError, match=r"metrics.jsonl:2 is not a JSON object"):
    read_metrics(tmp_path)
