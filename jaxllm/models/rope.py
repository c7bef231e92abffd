"""Rotary position embeddings (RoPE), with Llama 3 and linear frequency scaling."""

import math

import jax.numpy as jnp
import numpy as np

from jaxllm.models.config import ModelConfig


def llama3_scale(inv_freq: np.ndarray, factor: float, low_freq_factor: float,
                 high_freq_factor: float, original_max_len: int) -> np.ndarray:
  """Llama 3.1 scaling: long wavelengths divided by `factor`, short kept, smooth in between."""
  low_freq_wavelen = original_max_len / low_freq_factor
  high_freq_wavelen = original_max_len / high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
  smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return np.where(medium, smoothed, scaled)


def inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
  """theta^(-2i/d) for i in [0, d/2), float64 [head_dim // 2], scaled as the config says."""
  dim = cfg.resolved_head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  if cfg.rope_scaling == "llama3":
    inv_freq = llama3_scale(inv_freq, cfg.rope_scaling_factor, cfg.rope_low_freq_factor,
                            cfg.rope_high_freq_factor, cfg.rope_original_max_len)
  elif cfg.rope_scaling == "linear":  # position interpolation: every angle divided by factor
    inv_freq = inv_freq / cfg.rope_scaling_factor
  return inv_freq


def apply_rope(x_btnh: jnp.ndarray, positions_bt: jnp.ndarray,
               inv_freq: np.ndarray) -> jnp.ndarray:
  """Rotates pairs (i, i + d/2) of each head by angle position * inv_freq[i] (HF layout)."""
  angles_bth = positions_bt[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)
  sin = jnp.sin(angles_bth)[:, :, None, :]
  cos = jnp.cos(angles_bth)[:, :, None, :]
  x1, x2 = jnp.split(x_btnh.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_btnh.dtype)
