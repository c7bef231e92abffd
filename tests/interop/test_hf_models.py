"""Hugging Face checkpoints: import (logits, greedy tokens), sharded lazy loading, export."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch  # the [test] extra installs CPU torch and transformers
import transformers

from jaxllm.errors import ConfigError, UserError
from jaxllm.inference import sampler as sampler_lib
from jaxllm.interop import hf_config, hf_models, hf_weights
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.models import params as params_lib
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib

_SHAPE = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
# One tiny random model per family, each with what sets the family apart switched on.
FAMILIES = {
    # Llama 3.1 rope scaling past original_max_position_embeddings; untied head.
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **_SHAPE, rope_theta=500_000.0, tie_word_embeddings=False, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    # Sliding window shorter than the sequence.
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        **_SHAPE, sliding_window=8)),
    # q/k/v biases, tied embeddings.
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        **_SHAPE, tie_word_embeddings=True)),
    # q/k norms, head_dim != hidden_size / heads.
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        **_SHAPE, head_dim=24)),
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
        eos_token_id=0)),
}
SEQ = 48  # past the sliding window (8) and the Llama 3 original length (16)


def _hf_model(family):
  torch.manual_seed(0)
  model = FAMILIES[family]().eval()
  with torch.no_grad():  # move norms and biases off their init (ones, zeros) so they matter
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """family -> (HF model, its directory), saved in small shards with an index file."""
  out = {}
  for family in FAMILIES:
    model = _hf_model(family)
    directory = tmp_path_factory.mktemp(family)
    model.save_pretrained(directory, max_shard_size="40KB")
    out[family] = (model, directory)
  return out


def _tokens(vocab, shape=(2, SEQ), seed=0):
  return np.random.default_rng(seed).integers(0, vocab, shape)


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_import_matches_transformers_logits_and_greedy_tokens(saved, family):
  hf, directory = saved[family]
  assert len(list(directory.glob("*.safetensors"))) > 1  # read across shards
  cfg, params = hf_models.import_model(directory)
  assert hf_config.family_of(cfg) == family
  tokens = _tokens(cfg.vocab_size)
  ours = np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(tokens)))
  assert np.abs(ours - _hf_logits(hf, tokens)).max() <= 1e-4

  # 20 greedy tokens through our KV-cache sampler and transformers' generate.
  prompt = [int(t) for t in _tokens(cfg.vocab_size, (12,), seed=1)]
  generated = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                          do_sample=False, max_new_tokens=20, min_new_tokens=20,
                          eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
  sampler = sampler_lib.Sampler(Transformer(cfg), params, pad_id=0)
  out = sampler.generate([prompt], 20, temperature=0.0)
  assert out.completions()[0] == generated and len(generated) == 20


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
def test_export_reloads_in_transformers_with_identical_logits(saved, family, tmp_path):
  hf, directory = saved[family]
  cfg, params = hf_models.import_model(directory)
  hf_models.export(params, cfg, None, tmp_path / "out", max_shard_bytes=30_000)
  assert (tmp_path / "out" / hf_weights.INDEX_FILE).is_file()
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  assert type(reloaded) is type(hf)
  tokens = _tokens(cfg.vocab_size)
  np.testing.assert_array_equal(_hf_logits(reloaded, tokens), _hf_logits(hf, tokens))


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3"])
def test_exported_tensors_equal_the_originals(saved, family, tmp_path):
  hf, directory = saved[family]
  cfg, params = hf_models.import_model(directory)
  exported = hf_weights.to_hf_tensors(params, cfg)
  original = {k: v.numpy() for k, v in hf.state_dict().items()}
  tied = {"lm_head.weight"} if cfg.tie_embeddings else set()
  assert set(exported) == set(original) - tied
  for name, x in exported.items():
    np.testing.assert_array_equal(x, original[name], err_msg=name)
  assert hf_config.to_hf_config(cfg)["model_type"] == family


def test_lora_merged_export_computes_the_merged_model(saved, tmp_path):
  _, directory = saved["llama"]
  cfg, params = hf_models.import_model(directory)
  lora = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=r"attn/(q|v)$|mlp/down")
  model = Transformer(cfg, lora=lora)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  adapters = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape),
                          params_lib.unbox(variables["lora"]))  # b starts at zero: move it
  tokens = _tokens(cfg.vocab_size)
  with_adapters = model.apply({"params": params, "lora": adapters}, jnp.asarray(tokens))
  merged = lora_lib.merge(params, adapters, lora)
  hf_models.export(merged, cfg, None, tmp_path / "merged")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
  assert np.abs(_hf_logits(reloaded, tokens) - np.asarray(with_adapters)).max() <= 1e-4


def test_sharded_import_places_blocks_and_reads_only_them(saved, monkeypatch):
  _, directory = saved["qwen2"]
  base = hf_models.model_config(directory)
  _, plain = hf_models.import_model(directory)
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=4, tensor=2)))
  rules = sharding_lib.DEFAULT_RULES
  reads = []
  real_read = hf_weights.Checkpoint.read
  monkeypatch.setattr(hf_weights.Checkpoint, "read", lambda self, name, box: reads.append(
      (name, box)) or real_read(self, name, box))
  cfg = dataclasses.replace(base, scan_layers=True, vocab_size=base.vocab_size + 3)
  with nn.logical_axis_rules(rules):
    shardings = params_lib.params_shardings(Transformer(cfg), mesh, rules, 8)
  params = hf_weights.load_params(directory, cfg, shardings)
  q = params["layers"]["attn"]["q"]["kernel"]  # [L, D, N, H]: D over fsdp, N over tensor
  assert q.sharding == shardings["layers"]["attn"]["q"]["kernel"]
  assert q.addressable_shards[0].data.shape == (2, 16, 2, 16)
  np.testing.assert_array_equal(np.asarray(q)[1], plain["layer_1"]["attn"]["q"]["kernel"])
  # Each device's block is read as its own slice: a quarter of the rows, half the columns.
  q_reads = [box for name, box in reads if name == "model.layers.1.self_attn.q_proj.weight"]
  assert {(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in q_reads} == {(32, 16)}
  embed = np.asarray(params["embed"]["embedding"])  # grown rows: the mean of the old ones
  np.testing.assert_allclose(embed[:base.vocab_size], plain["embed"]["embedding"])
  np.testing.assert_allclose(embed[base.vocab_size:],
                             np.tile(embed[:base.vocab_size].mean(0), (3, 1)), atol=1e-6)


def test_unsupported_configs_and_mismatched_weights_fail_clearly(saved, tmp_path):
  hf = hf_config.read_config(saved["llama"][1])
  with pytest.raises(ConfigError, match="model_type='gemma'"):
    hf_config.to_model_config(dict(hf, model_type="gemma"))
  with pytest.raises(ConfigError, match="rope scaling type 'yarn'"):
    hf_config.to_model_config(dict(hf, rope_parameters={"rope_type": "yarn", "factor": 4.0}))
  with pytest.raises(ConfigError, match="attention_bias=True"):
    hf_config.to_model_config(dict(hf, attention_bias=True))
  with pytest.raises(ConfigError, match="use_sliding_window=True"):
    hf_config.to_model_config(dict(hf_config.read_config(saved["qwen2"][1]),
                                   use_sliding_window=True))
  cfg = hf_config.to_model_config(hf)
  with pytest.raises(ConfigError, match="cannot express model field.*sliding_window=8"):
    hf_config.to_hf_config(dataclasses.replace(cfg, sliding_window=8), "llama")
  with pytest.raises(UserError, match="k_proj.weight has shape .* config.json implies"):
    hf_weights.load_params(saved["llama"][1], dataclasses.replace(cfg, num_kv_heads=4))
  with pytest.raises(UserError, match="does not use: .*bias"):
    hf_weights.load_params(saved["qwen2"][1], dataclasses.replace(
        hf_config.to_model_config(hf_config.read_config(saved["qwen2"][1])), qkv_bias=False))
  with pytest.raises(UserError, match="config.json does not exist"):
    hf_models.import_model(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(hf))
  with pytest.raises(UserError, match="neither model.safetensors nor"):
    hf_models.import_model(tmp_path)
