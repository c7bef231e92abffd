"""ModelConfig: one frozen dataclass for every decoder family, and the registry of named sizes."""

import dataclasses
from typing import Any

from jaxllm.errors import ConfigError

NORMS = ("rms", "layer")
MLPS = ("swiglu", "gelu")
POSITIONS = ("rope", "learned")
REMAT_POLICIES = ("none", "full", "save_dots")
ROPE_SCALINGS = ("none", "llama3", "linear")
ATTENTION_IMPLS = ("xla", "cudnn", "splash", "auto")
DTYPES = ("float32", "bfloat16", "float16")
QUANTS = ("none", "int8")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and options of a decoder-only transformer.

  Covers the Llama 2/3, Mistral, Qwen2/2.5, Qwen3 and GPT-2 families (jaxllm/interop maps
  their Hugging Face configs to this one).
  """

  vocab_size: int = 320
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  num_kv_heads: int = 4  # < num_heads gives grouped-query attention
  head_dim: int = 0  # 0 means d_model // num_heads
  mlp_dim: int = 256
  max_seq_len: int = 128  # size of the learned position table; rope ignores it
  norm: str = "rms"  # rms (Llama) | layer (GPT-2)
  norm_eps: float = 1e-5
  mlp: str = "swiglu"  # swiglu (Llama) | gelu (GPT-2)
  position: str = "rope"  # rope (Llama) | learned (GPT-2)
  rope_theta: float = 10_000.0
  rope_scaling: str = "none"  # none | llama3 (Llama 3.1) | linear (positions / factor)
  rope_scaling_factor: float = 8.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  use_bias: bool = False  # biases on every dense layer and norm (GPT-2)
  qkv_bias: bool = False  # biases on the query, key and value projections only (Qwen2)
  qk_norm: bool = False  # RMSNorm over head_dim on queries and keys before rope (Qwen3)
  sliding_window: int = 0  # > 0: a token sees itself and the window - 1 before it (Mistral)
  #                          (and after it too when causal=False)
  tie_embeddings: bool = True
  causal: bool = True  # False: bidirectional (masked LM, jaxllm/objectives/mlm.py); no sampling
  dropout_rate: float = 0.0
  init_std: float = 0.02
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  attention_impl: str = "xla"  # xla | cudnn (GPU flash) | splash (TPU Pallas flash) | auto
  remat: str = "none"  # none | full | save_dots
  scan_layers: bool = False
  # "int8": weight-only int8 kernels and embedding with float32 scales per output channel
  # (jaxllm/compress/quantize.py); for inference and as the frozen base of QLoRA.
  quant: str = "none"

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @classmethod
  def from_dict(cls, d: Any) -> "ModelConfig":
    """Builds from a dict or ConfigDict, naming any unknown field."""
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(
          f"config.model has unknown field(s) {unknown}; known fields are {sorted(known)}."
      )
    cfg = cls(**d)
    cfg.validate()
    return cfg

  def validate(self) -> None:
    """Raises ConfigError naming the field and the fix."""
    def choice(name, options):
      if getattr(self, name) not in options:
        raise ConfigError(f"config.model.{name}={getattr(self, name)!r} is not one of {options}.")

    for name, options in [("norm", NORMS), ("mlp", MLPS), ("position", POSITIONS),
                          ("remat", REMAT_POLICIES), ("rope_scaling", ROPE_SCALINGS),
                          ("attention_impl", ATTENTION_IMPLS), ("dtype", DTYPES),
                          ("param_dtype", DTYPES), ("quant", QUANTS)]:
      choice(name, options)
    for name in ["vocab_size", "num_layers", "d_model", "num_heads", "num_kv_heads", "mlp_dim",
                 "max_seq_len"]:
      if getattr(self, name) <= 0:
        raise ConfigError(f"config.model.{name}={getattr(self, name)} must be positive.")
    if self.num_heads % self.num_kv_heads:
      raise ConfigError(
          f"config.model.num_heads={self.num_heads} is not divisible by "
          f"config.model.num_kv_heads={self.num_kv_heads}; set num_kv_heads to a divisor of "
          "num_heads (equal for multi-head attention, 1 for multi-query)."
      )
    if not self.head_dim and self.d_model % self.num_heads:
      raise ConfigError(
          f"config.model.d_model={self.d_model} is not divisible by "
          f"config.model.num_heads={self.num_heads}; change one or set config.model.head_dim."
      )
    if self.position == "rope" and self.resolved_head_dim % 2:
      raise ConfigError(
          f"rotary embeddings need an even head dim, got {self.resolved_head_dim}; "
          "change config.model.head_dim (or d_model / num_heads)."
      )
    if self.sliding_window < 0:
      raise ConfigError(f"config.model.sliding_window={self.sliding_window} must be >= 0 "
                        "(0: full causal attention).")
    if self.qk_norm and self.norm != "rms":
      raise ConfigError("config.model.qk_norm=True needs config.model.norm='rms' (Qwen3's q/k "
                        "norms are RMSNorms); set one or the other.")
    if self.rope_scaling != "none" and self.rope_scaling_factor <= 0:
      raise ConfigError(f"config.model.rope_scaling_factor={self.rope_scaling_factor} must be "
                        "positive.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"config.model.dropout_rate={self.dropout_rate} must be in [0, 1).")


_LLAMA = dict(norm="rms", mlp="swiglu", position="rope", use_bias=False, norm_eps=1e-5)
_GPT2 = dict(norm="layer", mlp="gelu", position="learned", use_bias=True, tie_embeddings=True,
             norm_eps=1e-5)

# Named sizes. Parameter counts (tied embeddings counted once) are checked in the tests.
SIZES: dict[str, dict[str, Any]] = {
    # CPU tests and the embedded demo: byte-level vocab (259 ids) padded to 320.
    "tiny": dict(_LLAMA, vocab_size=1024, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                 mlp_dim=192, max_seq_len=256),
    "gpt2-124m": dict(_GPT2, vocab_size=50257, num_layers=12, d_model=768, num_heads=12,
                      num_kv_heads=12, mlp_dim=3072, max_seq_len=1024),
    "llama-125m": dict(_LLAMA, vocab_size=32000, num_layers=12, d_model=768, num_heads=12,
                       num_kv_heads=4, mlp_dim=3072, max_seq_len=2048, tie_embeddings=True),
    "llama-350m": dict(_LLAMA, vocab_size=32000, num_layers=24, d_model=1024, num_heads=16,
                       num_kv_heads=8, mlp_dim=3072, max_seq_len=2048, tie_embeddings=True),
    # Llama 3.2 1B shapes (with Llama 3 rope scaling).
    "llama-1b": dict(_LLAMA, vocab_size=128256, num_layers=16, d_model=2048, num_heads=32,
                     num_kv_heads=8, mlp_dim=8192, max_seq_len=8192, rope_theta=500_000.0,
                     rope_scaling="llama3", rope_scaling_factor=32.0, tie_embeddings=True),
    # Llama 3 8B shapes.
    "llama3-8b": dict(_LLAMA, vocab_size=128256, num_layers=32, d_model=4096, num_heads=32,
                      num_kv_heads=8, mlp_dim=14336, max_seq_len=8192, rope_theta=500_000.0,
                      tie_embeddings=False),
}


def get_size(name: str, **overrides: Any) -> ModelConfig:
  """Returns the named size, with any field overridden."""
  if name not in SIZES:
    raise ConfigError(f"unknown model size {name!r}; choose one of {sorted(SIZES)}.")
  return ModelConfig.from_dict({**SIZES[name], **overrides})
