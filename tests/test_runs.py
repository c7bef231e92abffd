"""Run directories: what a run is comes from the fields its recipe writes (config.stage,
config.value_head, config.init.stage), never from which config sections exist."""

import ml_collections
import pytest

from jaxllm import runs
from jaxllm.errors import UserError
from jaxllm.recipes import distill, dpo, pretrain, prune, reward_model, rl, sft


@pytest.mark.parametrize("recipe", [pretrain, sft, reward_model, dpo, rl, distill, prune])
def test_every_training_recipe_writes_its_own_stage(recipe):
  config = recipe.default_config("tiny")
  assert config.stage == recipe.__name__.rsplit(".", 1)[1]
  assert runs.stage_of(config) == config.stage and config.value_head is False


def _config(stage, init_stage="", **sections):
  return ml_collections.ConfigDict({"stage": stage, "value_head": False,
                                    "init": {"stage": init_stage}, **sections})


@pytest.mark.parametrize("stage,init_stage,kind", [
    ("pretrain", "", "base"), ("sft", "pretrain", "chat"), ("dpo", "sft", "chat"),
    ("rl", "dpo", "chat"), ("reward_model", "sft", "reward_model"), ("distill", "", "base"),
    ("hf_import", "", "base"), ("prune", "sft", "chat"), ("prune", "pretrain", "base"),
    ("quantize", "rl", "chat"), ("quantize", "distill", "base")])
def test_the_kind_of_a_run_follows_its_stage_and_what_it_compressed(stage, init_stage, kind):
  assert runs.model_kind(_config(stage, init_stage)) == kind


def test_the_written_stage_wins_over_the_config_sections():
  # An SFT config that happens to carry rl and reward sections is still an SFT run.
  config = _config("sft", "pretrain", rl={"advantage": "gae"}, reward={"lm_weight": 0.0})
  assert runs.stage_of(config) == "sft" and runs.model_kind(config) == "chat"
  assert not runs.is_reward_model(config) and not runs.has_value_head(config)
  ppo = _config("rl", "sft", rl={"advantage": "gae"})
  ppo.value_head = True
  assert runs.has_value_head(ppo)
  with pytest.raises(UserError, match="config.stage='train' is not one of"):
    runs.stage_of(_config("train"))


def test_runs_written_before_the_stage_field_are_read_as_then():
  legacy = lambda **sections: ml_collections.ConfigDict({"init": {}, **sections})
  assert runs.stage_of(legacy(reward={})) == "reward_model"
  assert runs.stage_of(legacy(rl={"advantage": "grpo"}, lora={})) == "rl"
  assert runs.stage_of(legacy(preference={}, lora={})) == "dpo"
  assert runs.stage_of(legacy(lora={})) == "sft"
  assert runs.stage_of(legacy()) == "pretrain"
  assert runs.has_value_head(legacy(rl={"advantage": "gae"}))
  assert not runs.has_value_head(legacy(rl={"advantage": "gae"}, compressed={}))


def test_save_run_needs_the_stage(tmp_path):
  with pytest.raises(ValueError, match="config.stage"):
    runs.save_run(tmp_path / "run", ml_collections.ConfigDict({"model": {}}), {}, None, 0)


def test_a_bad_init_run_is_named_by_its_flag_with_the_nearest_run(tmp_path):
  (tmp_path / "pretrain_tiny").mkdir()
  (tmp_path / "pretrain_tiny" / "config.json").write_text("{}")
  runs.require_run_dir(tmp_path / "pretrain_tiny", "config.init.checkpoint")
  with pytest.raises(UserError, match=r"config.init.checkpoint='.*pretrain_tny' is not a run "
                     r"directory: it has no config.json \(did you mean '.*pretrain_tiny'\?\)"):
    runs.require_run_dir(tmp_path / "pretrain_tny", "config.init.checkpoint")
  with pytest.raises(UserError, match="config.init.checkpoint='/nowhere/run' is not a run"):
    runs.require_run_dir("/nowhere/run", "config.init.checkpoint")


def test_a_lora_runs_base_is_found_where_recorded_or_beside_a_moved_run(tmp_path):
  for name in ("pretrain", "moved/pretrain"):
    (tmp_path / name / "checkpoints").mkdir(parents=True)
  config = ml_collections.ConfigDict({"init": {"checkpoint": str(tmp_path / "pretrain")}})
  assert runs.lora_base_dir(config, tmp_path / "sft") == tmp_path / "pretrain"
  # The pipeline directory moved whole: the recorded path is gone, the base is beside the run.
  config.init.checkpoint = str(tmp_path / "gone" / "pretrain")
  assert runs.lora_base_dir(config, tmp_path / "moved" / "sft") == tmp_path / "moved" / "pretrain"
  with pytest.raises(UserError, match="is a LoRA run whose base run config.init.checkpoint="):
    runs.lora_base_dir(config, tmp_path / "elsewhere" / "sft")
