"""Hugging Face config.json <-> ModelConfig, for the Llama, Mistral, Qwen2, Qwen3 and GPT-2
families.

What each family adds to the Llama shape (RMSNorm, SwiGLU, rope, no biases):
  mistral  sliding-window attention (`sliding_window`; null in v0.2+, which is Llama-shaped)
  qwen2    biases on the q, k and v projections (Qwen2 and Qwen2.5)
  qwen3    RMSNorm over head_dim on queries and keys before rope; an explicit head_dim
  gpt2     LayerNorm with biases, GELU (tanh), learned positions, a fused qkv Conv1D

Rope settings are read in both spellings: `rope_theta` + `rope_scaling` (checkpoints on the Hub)
and `rope_parameters` (what transformers 5 writes). Anything this model cannot compute
(another rope scaling, attention or MLP biases on Llama, Qwen's per-layer sliding windows ...)
raises a ConfigError naming the config.json field, instead of loading a model that would
quietly compute something else.
"""

import dataclasses
import json
import pathlib
from typing import Any

from jaxllm.errors import ConfigError, UserError
from jaxllm.models.config import ModelConfig

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gpt2")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "gpt2": "GPT2LMHeadModel"}
# How to run a model rather than what it computes: kept from the user's config on import.
RUN_OPTIONS = ("dtype", "param_dtype", "attention_impl", "remat", "scan_layers", "dropout_rate")
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def read_config(directory) -> dict[str, Any]:
  """The config.json of a Hugging Face model directory, as a dict."""
  path = pathlib.Path(directory) / "config.json"
  if not path.is_file():
    raise UserError(f"{path} does not exist: pass a Hugging Face model directory (config.json, "
                    "*.safetensors, tokenizer.json), e.g. one saved by save_pretrained or "
                    "downloaded with `huggingface-cli download NAME --local-dir DIR`.")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg}).") from e


def _rope(hf: dict, where: str) -> dict[str, Any]:
  """Our rope fields from either spelling of the HF rope settings."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
  if not scaling and params.get("rope_type", "default") != "default":
    scaling = params
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  out: dict[str, Any] = {"rope_theta": float(theta)}
  if kind in ("default", None):
    return out
  if kind == "llama3":
    return dict(out, rope_scaling="llama3", rope_scaling_factor=float(scaling["factor"]),
                rope_low_freq_factor=float(scaling["low_freq_factor"]),
                rope_high_freq_factor=float(scaling["high_freq_factor"]),
                rope_original_max_len=int(scaling["original_max_position_embeddings"]))
  if kind == "linear":
    return dict(out, rope_scaling="linear", rope_scaling_factor=float(scaling["factor"]))
  raise ConfigError(f"{where}: rope scaling type {kind!r} is not supported (supported: default, "
                    "llama3, linear); it would change every position's angles.")


def _refuse(hf: dict, where: str, field: str, ok) -> None:
  if field in hf and hf[field] is not None and not ok(hf[field]):
    raise ConfigError(f"{where}: {field}={hf[field]!r} is not supported by this model "
                      "definition; only checkpoints without it can be imported.")


def family_of_hf(hf: dict, where: str) -> str:
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise ConfigError(f"{where}: model_type={family!r} is not supported; supported families: "
                      f"{', '.join(FAMILIES)}.")
  return family


def to_model_config(hf: dict, where: str = "config.json", **overrides: Any) -> ModelConfig:
  """Our ModelConfig for an HF config dict; `overrides` (e.g. vocab_size, dtype) go on top."""
  family = family_of_hf(hf, where)
  if family == "gpt2":
    if hf.get("activation_function", "gelu_new") not in _GELU_TANH:
      raise ConfigError(f"{where}: activation_function={hf['activation_function']!r}; only the "
                        f"tanh GELU ({', '.join(_GELU_TANH)}) is supported for GPT-2.")
    _refuse(hf, where, "scale_attn_by_inverse_layer_idx", lambda v: not v)
    _refuse(hf, where, "scale_attn_weights", bool)
    d = hf["n_embd"]
    fields = dict(vocab_size=hf["vocab_size"], num_layers=hf["n_layer"], d_model=d,
                  num_heads=hf["n_head"], num_kv_heads=hf["n_head"],
                  mlp_dim=hf.get("n_inner") or 4 * d, max_seq_len=hf["n_positions"],
                  norm="layer", norm_eps=hf.get("layer_norm_epsilon", 1e-5), mlp="gelu",
                  position="learned", use_bias=True,
                  tie_embeddings=hf.get("tie_word_embeddings", True))
  else:
    _refuse(hf, where, "hidden_act", lambda v: v == "silu")
    _refuse(hf, where, "mlp_bias", lambda v: not v)
    if family in ("llama", "qwen3"):
      _refuse(hf, where, "attention_bias", lambda v: not v)
    if family in ("qwen2", "qwen3"):
      _refuse(hf, where, "use_sliding_window", lambda v: not v)
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    fields = dict(vocab_size=hf["vocab_size"], num_layers=hf["num_hidden_layers"],
                  d_model=hf["hidden_size"], num_heads=heads,
                  num_kv_heads=hf.get("num_key_value_heads") or heads,
                  head_dim=0 if head_dim * heads == hf["hidden_size"] else head_dim,
                  mlp_dim=hf["intermediate_size"],
                  max_seq_len=hf.get("max_position_embeddings", 2048), norm="rms",
                  norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu", position="rope",
                  use_bias=False, qkv_bias=family == "qwen2", qk_norm=family == "qwen3",
                  sliding_window=(hf.get("sliding_window") or 0) if family == "mistral" else 0,
                  tie_embeddings=hf.get("tie_word_embeddings", False), **_rope(hf, where))
  return ModelConfig.from_dict({**fields, **overrides})


def family_of(cfg: ModelConfig) -> str:
  """The HF family that computes what `cfg` computes."""
  if cfg.position == "learned":
    return "gpt2"
  if cfg.qk_norm:
    return "qwen3"
  if cfg.qkv_bias:
    return "qwen2"
  return "mistral" if cfg.sliding_window else "llama"


def _rope_fields(cfg: ModelConfig) -> dict[str, Any]:
  scaling = None
  if cfg.rope_scaling == "llama3":
    scaling = {"rope_type": "llama3", "factor": cfg.rope_scaling_factor,
               "low_freq_factor": cfg.rope_low_freq_factor,
               "high_freq_factor": cfg.rope_high_freq_factor,
               "original_max_position_embeddings": cfg.rope_original_max_len}
  elif cfg.rope_scaling == "linear":
    scaling = {"rope_type": "linear", "factor": cfg.rope_scaling_factor}
  # Both spellings: transformers 4 reads the first two, transformers 5 the last.
  return {"rope_theta": cfg.rope_theta, "rope_scaling": scaling,
          "rope_parameters": {"rope_theta": cfg.rope_theta, "rope_type": "default"}
          if scaling is None else {"rope_theta": cfg.rope_theta, **scaling}}


# Fields that do not change what the model computes from given params.
_NOT_MATH = set(RUN_OPTIONS) | {"init_std", "max_seq_len"}


def to_hf_config(cfg: ModelConfig, family: str | None = None, *, dtype: str = "float32",
                 bos_id: int | None = None, eos_id: int | None = None,
                 pad_id: int | None = None) -> dict[str, Any]:
  """config.json for `cfg` as an HF `family` (default: family_of(cfg)).

  Raises ConfigError naming the fields the family cannot express (checked by mapping the
  result back and comparing).
  """
  family = family or family_of(cfg)
  if family not in FAMILIES:
    raise ConfigError(f"family {family!r} is not one of {', '.join(FAMILIES)}.")
  common = {"architectures": [ARCHITECTURES[family]], "model_type": family,
            "vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings,
            "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
            "torch_dtype": dtype, "use_cache": True}
  if family == "gpt2":
    hf = dict(common, n_embd=cfg.d_model, n_layer=cfg.num_layers, n_head=cfg.num_heads,
              n_inner=cfg.mlp_dim, n_positions=cfg.max_seq_len, n_ctx=cfg.max_seq_len,
              layer_norm_epsilon=cfg.norm_eps, activation_function="gelu_new",
              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
  else:
    hf = dict(common, hidden_size=cfg.d_model, num_hidden_layers=cfg.num_layers,
              num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
              head_dim=cfg.resolved_head_dim, intermediate_size=cfg.mlp_dim,
              max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
              hidden_act="silu", attention_dropout=0.0, **_rope_fields(cfg))
    if family in ("llama", "qwen3"):
      hf.update(attention_bias=False)
    if family == "llama":
      hf.update(mlp_bias=False)
    if family == "mistral":
      hf.update(sliding_window=cfg.sliding_window or None)
    if family in ("qwen2", "qwen3"):
      hf.update(use_sliding_window=False, sliding_window=None)
  back = to_model_config(hf, f"the exported {family} config")
  same_head = lambda c: dataclasses.replace(c, head_dim=c.resolved_head_dim)
  differ = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in _NOT_MATH
            and getattr(same_head(back), f.name) != getattr(same_head(cfg), f.name)]
  if differ:
    raise ConfigError(f"a {family} checkpoint cannot express model field(s) "
                      f"{', '.join(f'{n}={getattr(cfg, n)!r}' for n in differ)}; export as "
                      f"{family_of(cfg)!r} (the family these fields match) or change them.")
  return hf
