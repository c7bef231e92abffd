"""A run's inputs from config: mixtures, the tokenizer it trains or loads, pretraining on files."""

import json

import pytest

from jaxllm.data import inputs
from jaxllm.data import tokenizer as tokenizer_lib
from jaxllm.errors import ConfigError
from jaxllm.recipes import pretrain, reward_model
from tests.helpers import read_metrics


def test_parse_mixture():
  assert inputs.parse_mixture("world") == [("world", 1.0)]
  assert inputs.parse_mixture("world@0.3; data/*.jsonl@0.7") == [("world", 0.3),
                                                                 ("data/*.jsonl", 0.7)]
  with pytest.raises(ConfigError, match="weight 'x'"):
    inputs.parse_mixture("world@x")
  with pytest.raises(ConfigError, match="config.data.source is empty"):
    inputs.parse_mixture(" ; ")


def test_vocab_size_zero_follows_the_tokenizer(tiny_config):
  tiny_config.model.vocab_size = 0
  inputs.check_vocab(tiny_config, 1031)
  assert tiny_config.model.vocab_size == 1152
  tiny_config.model.vocab_size = 512
  with pytest.raises(ConfigError, match="config.model.vocab_size=512 is smaller"):
    inputs.check_vocab(tiny_config, 1031)


def _corpus(directory, n=300):
  directory.mkdir()
  words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven",
           "cats", "watch", "quietly"]
  for part in range(2):
    with open(directory / f"part{part}.jsonl", "w") as f:
      for i in range(n):
        text = " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(5 + i % 30))
        f.write(json.dumps({"text": f"{i}: {text}."}) + "\n")
  return str(directory / "*.jsonl")


@pytest.mark.slow
def test_pretrain_on_local_files_trains_a_bpe_and_learns(tiny_config, tmp_path):
  tiny_config.data.source = _corpus(tmp_path / "corpus")
  tiny_config.data.eval_fraction = 0.05
  tiny_config.data.tokenizer_vocab_size = 300
  tiny_config.model.vocab_size = 0
  tiny_config.train.num_steps = 20
  tiny_config.train.eval_every = 10
  pretrain.run(tiny_config, tmp_path / "run")
  tok = tokenizer_lib.Tokenizer.from_file(tmp_path / "run" / "tokenizer.json")
  assert tok.uses_tiktoken and 256 < tok.vocab_size <= 300
  assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["vocab_size"] == 384
  evals = [m["eval/loss"] for m in read_metrics(tmp_path / "run") if "eval/loss" in m]
  assert len(evals) == 2 and evals[1] < evals[0]
  # A given tokenizer file is used as it is (and copied into the run), in a mixture with the
  # embedded world.
  tiny_config.data.source = f"{tiny_config.data.source}@1;world@1"
  tiny_config.data.tokenizer = str(tmp_path / "run" / "tokenizer.json")
  tiny_config.model.vocab_size = 0
  tiny_config.train.num_steps = 2
  pretrain.run(tiny_config, tmp_path / "mix")
  assert json.loads((tmp_path / "mix" / "tokenizer.json").read_text()) == json.loads(
      (tmp_path / "run" / "tokenizer.json").read_text())


def test_world_record_counts_come_from_config(tmp_path):
  c = reward_model.default_config("tiny")
  c.data.world_sizes.preferences = 60
  train, _ = inputs.open_sources(c.data, "preferences", "train", tmp_path)
  held_out, _ = inputs.open_sources(c.data, "preferences", "validation", tmp_path)
  assert (len(train[0]), len(held_out[0])) == (60, 12)
  assert [p.name for p in (tmp_path / "data").glob("world-seed0*")] != ["world-seed0"]
