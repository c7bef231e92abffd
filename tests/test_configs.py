"""Every config file parses, validates and builds its model with eval_shape."""

from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jaxllm import config as config_lib
from jaxllm.errors import ConfigError
from jaxllm.models import Transformer
from jaxllm.recipes import dpo, reward_model, rl, sft
from jaxllm.workflow import pipeline

CONFIG_FILES = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.py"))
PRETRAIN_FILES = [p for p in CONFIG_FILES if p.parent.name == "pretrain"]


_load = config_lib.import_file


def test_there_are_configs():
  assert len(PRETRAIN_FILES) >= 6


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses_and_names_its_command(path):
  module = _load(path)
  script = "python experiments/"
  assert script in module.__doc__, "docstring gives the run command"
  command = module.__doc__.split(script, 1)[1].split()[0]
  assert (Path(__file__).resolve().parents[1] / "experiments" / command).is_file(), command
  assert module.get_config(None).to_dict()


@pytest.mark.parametrize("path", PRETRAIN_FILES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_pretrain_config_builds_model(path):
  config = _load(path).get_config(None)
  model_cfg = config_lib.validate(config)
  shapes = jax.eval_shape(
      lambda r: Transformer(model_cfg).init(r, jnp.zeros((1, 8), jnp.int32)), jax.random.key(0))
  assert jax.tree.leaves(shapes)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_pipeline_configs_hold_valid_stage_configs(name, tmp_path):
  config = _load(Path(__file__).resolve().parents[1] / "configs" / "pipeline" / f"{name}.py"
                 ).get_config(None)
  assert config_lib.validate(config.pretrain).vocab_size == config.tokenizer.vocab_size
  paths = pipeline.Paths(tmp_path)  # each stage's config as the pipeline runs it
  for stage, recipe in (("sft", sft), ("reward", reward_model), ("dpo", dpo), ("rl", rl)):
    assert config[stage].stage == recipe.__name__.rsplit(".", 1)[1]
    recipe.validate(pipeline.stage_config(config, stage, paths))


def test_parse_arg_types_and_errors():
  args = config_lib.parse_arg("steps=5,fast=true,name=x", steps=1, fast=False, name="y")
  assert args.steps == 5 and args.fast is True and args.name == "x"
  with pytest.raises(ConfigError, match="stpes"):
    config_lib.parse_arg("stpes=5", steps=1)


def test_validate_names_bad_fields():
  c = config_lib.base_config("tiny")
  c.train.microbatches = 3
  with pytest.raises(ConfigError, match="batch_size=16.*microbatches=3"):
    config_lib.validate(c)
  c = config_lib.base_config("gpt2-124m")
  c.data.seq_len = 4096
  with pytest.raises(ConfigError, match="seq_len=4096.*max_seq_len=1024"):
    config_lib.validate(c)


@pytest.mark.parametrize("field,value,match", [
    ("packing", "first_fit", "pairs are rows of their own"),
    ("loss", "kto", "config.preference.loss='kto'"),
    ("reference", "cached", "config.preference.reference='cached'"),
    ("beta", 0.0, "config.preference.beta=0.0 must be positive"),
    ("label_smoothing", 0.5, r"label_smoothing=0.5 must be in \[0, 0.5\)"),
    ("sft_weight", -1.0, r"config.preference.sft_weight=-1.0 must be >= 0"),
    ("dpop_lambda", -1.0, r"config.preference.dpop_lambda=-1.0 must be >= 0"),
])
def test_dpo_validation_names_bad_fields(field, value, match):
  c = dpo.default_config("tiny")
  (c.data if field == "packing" else c.preference)[field] = value
  with pytest.raises(ConfigError, match=match):
    dpo.validate(c)
  c = dpo.default_config("tiny")
  c.preference.loss, c.preference.label_smoothing = "ipo", 0.1
  with pytest.raises(ConfigError, match="applies to dpo and simpo"):
    dpo.validate(c)


@pytest.mark.parametrize("field", ["center_coefficient", "lm_weight"])
def test_reward_model_validation_names_bad_fields(field):
  c = reward_model.default_config("tiny")
  reward_model.validate(c)
  c.reward[field] = -0.5
  with pytest.raises(ConfigError, match=f"config.reward.{field}=-0.5 must be >= 0"):
    reward_model.validate(c)
