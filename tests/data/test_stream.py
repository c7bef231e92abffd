"""One text file as a token stream: character vocabulary, 90/10 split, random windows, resume."""

import numpy as np
import pytest

from jaxllm import config as config_lib
from jaxllm.data import stream
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError
from jaxllm.recipes import pretrain
from tests.helpers import ROOT, read_metrics

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def test_char_tokenizer_is_the_sorted_characters_and_round_trips(tmp_path):
  tok = stream.char_tokenizer(TEXT)
  chars = sorted(set(TEXT))
  assert tok.vocab_size == len(chars) and tok.bos_id is None and tok.eos_id is None
  assert tok.encode(TEXT) == [chars.index(c) for c in TEXT]
  assert tok.decode(tok.encode(TEXT)) == TEXT
  again = Tokenizer.from_file(tok.save(tmp_path / "tokenizer.json"))
  assert again.encode(TEXT) == tok.encode(TEXT) and again.decode(again.encode(TEXT)) == TEXT


def test_split_and_windows_follow_the_stream():
  tokens = np.arange(1000, dtype=np.int32)
  train, validation = stream.split_tokens(tokens)
  assert len(train) == 900 and validation[0] == 900
  it = stream.RandomWindows(train, batch=5, seq_len=16, seed=3)
  batch = next(it)
  assert batch["inputs"].shape == (5, 16)
  np.testing.assert_array_equal(batch["targets"], batch["inputs"] + 1)  # the next token
  assert batch["targets"].max() < 900 and batch["loss_mask"].all()
  state = it.get_state()
  following = next(it)
  resumed = stream.RandomWindows(train, batch=5, seq_len=16, seed=3)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["inputs"], following["inputs"])
  with pytest.raises(UserError, match="data position was written with"):
    stream.RandomWindows(train, batch=6, seq_len=16, seed=3).set_state(state)
  first = [b["inputs"] for b in stream.eval_windows(validation, 4, 16, 3, seed=0)]
  second = [b["inputs"] for b in stream.eval_windows(validation, 4, 16, 3, seed=0)]
  assert len(first) == 3 and all((a == b).all() for a, b in zip(first, second))
  with pytest.raises(UserError, match="not more than config.data.seq_len=200"):
    stream.RandomWindows(validation, batch=1, seq_len=200, seed=0)


@pytest.mark.slow
def test_pretraining_on_a_text_file_with_the_char_config(tmp_path):
  path = tmp_path / "input.txt"
  path.write_text(TEXT * 40)
  config = config_lib.load_config_file(ROOT / "configs" / "pretrain" / "shakespeare_char.py",
                                       "steps=6")
  config.data.path = str(path)
  config.train.eval_every = 6
  config.train.eval_batches = 2
  config.train.log_every = 2
  config.train.batch_size = 8  # over the 8 test devices
  pretrain.run(config, tmp_path / "run")
  metrics = read_metrics(tmp_path / "run")
  assert [m["step"] for m in metrics if "train/loss" in m] == [2, 4, 6]
  assert any("eval/loss" in m for m in metrics)
  tok = Tokenizer.from_file(tmp_path / "run" / "tokenizer.json")
  assert tok.vocab_size == len(set(TEXT))
  with pytest.raises(UserError, match="config.data.path='.*missing.txt' does not exist"):
    stream.read_text(tmp_path / "missing.txt")
