"""Run directories: what a run is comes from the fields its recipe writes (config.stage,
config.value_head, config.init.stage), never from which config sections exist."""

import jax
import ml_collections
import numpy as np
import pytest

from jaxllm import config as config_lib
from jaxllm import runs
from jaxllm.data.tokenizer import train_tokenizer
from jaxllm.errors import UserError
from jaxllm.models import Transformer
from jaxllm.models import params as params_lib
from jaxllm.models.config import ModelConfig
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
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


def _saved_run(tmp_path, mesh_fields: dict):
  """A tiny pretraining run written by save_run (random params), with config.mesh set."""
  config = config_lib.base_config("tiny", "pretrain")
  config.model.vocab_size = 256
  for key, value in mesh_fields.items():
    config.mesh[key] = value
  model = Transformer(ModelConfig.from_dict(config.model))
  params = params_lib.unbox(params_lib.init_params_fn(model, 8)(jax.random.key(3)))
  tokenizer = train_tokenizer(["a b c d e f g h"] * 4, vocab_size=300)
  runs.save_run(tmp_path / "run", config, params, tokenizer, 5)
  return tmp_path / "run", model, params


def _fsdp_mesh(devices: int = 8):
  return mesh_lib.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": devices,
                                                       "tensor": 1}))


def test_load_run_reads_each_param_onto_its_shard_of_the_mesh(tmp_path):
  workdir, model, saved = _saved_run(tmp_path, {"data": -1, "fsdp": 1})
  mesh = _fsdp_mesh()
  rules = sharding_lib.DEFAULT_RULES
  run = runs.load_run(workdir, mesh=mesh, rules=rules)
  want = params_lib.params_shardings(model, mesh, rules, 8)
  got, expected = jax.tree.leaves(run.params), jax.tree.leaves(saved)
  for x, sharding, value in zip(got, jax.tree.leaves(want), expected):
    assert x.sharding == sharding
    np.testing.assert_array_equal(np.asarray(x), np.asarray(value))
  # The embedding (vocab, embed) is split over the 8 fsdp devices along embed: each holds 1/8.
  embed = run.params["embed"]["embedding"]
  assert {s.data.shape for s in embed.addressable_shards} == {(256, model.cfg.d_model // 8)}
  assert run.mesh is mesh and run.step == 5


def test_load_run_defaults_to_one_device_the_runs_mesh_or_fsdp(tmp_path):
  # Trained data-parallel (every param whole on each device): one device, nothing computed twice.
  workdir, _, saved = _saved_run(tmp_path, {"data": -1, "fsdp": 1})
  run = runs.load_run(workdir)
  assert run.mesh.devices.size == 1
  assert all(x.sharding.device_set == {jax.local_devices()[0]}
             for x in jax.tree.leaves(run.params))
  # Trained with FSDP over 4 devices: the run's own mesh (here 2 x 4 of the 8 devices).
  workdir, _, _ = _saved_run(tmp_path / "fsdp", {"data": -1, "fsdp": 4})
  run = runs.load_run(workdir)
  assert dict(run.mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  # Trained on 16 devices (fsdp=16): on this machine's 8 the params go FSDP over all of them.
  workdir, _, _ = _saved_run(tmp_path / "big", {"data": 1, "fsdp": 16})
  run = runs.load_run(workdir)
  assert dict(run.mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  embed = run.params["embed"]["embedding"]
  assert not embed.sharding.is_fully_replicated
  for x, value in zip(jax.tree.leaves(run.params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(value))
