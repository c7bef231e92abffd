"""Weight-only int8 quantization, symmetric, one scale per output channel.

A kernel W (in_shape + out_shape) becomes q = round(W / s) in int8 [-127, 127] with

  s[j] = max_i |W[i, j]| / 127     (one float32 scale per output channel j),

so |W - q * s| <= s / 2 everywhere, and the layer computes y = (x . q) * s
(`Transformer` with `ModelConfig.quant="int8"`). The token embedding [V, D] gets one scale per
row, which is also the per-output-channel scale of the tied output head. Norms, biases and
learned position embeddings stay float32. A quantized tree has the structure of
`Transformer(quant="int8")`'s params: every kernel (and the embedding) is int8 with a sibling
"scale".

Quantized params serve inference (the sampler, evaluation) and the frozen base of QLoRA-style
fine-tuning (jaxllm/models/lora.py adapters over an int8 base; experiments/sft.py with
config.lora.base_quant="int8"). Memory of params falls to about a quarter of float32.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxllm.errors import ConfigError
from jaxllm.models.config import ModelConfig
from jaxllm.models.params import init_params_fn, unbox

QMAX = 127


def quantized_config(cfg: ModelConfig) -> ModelConfig:
  return dataclasses.replace(cfg, quant="int8")


def float_config(cfg: ModelConfig) -> ModelConfig:
  return dataclasses.replace(cfg, quant="none")


def _input_axes(path: tuple[str, ...], name: str, value_ndim: int, scale_ndim: int,
                cfg: ModelConfig) -> tuple[int, ...]:
  """The axes a scale is shared over: a kernel's input axes (after the layer axis of scanned
  layers), or the embedding's model axis."""
  if name == "embedding":
    return (value_ndim - 1,)
  stacked = 1 if cfg.scan_layers and path and path[0] == "layers" else 0
  return tuple(range(stacked, stacked + value_ndim - scale_ndim))


def kernel_input_axes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """{"layer_0/attn/o/kernel": (0, 1), ...}: the input (contracted) axes of every dense kernel
  of `Transformer(cfg)`, the axes a per-output-channel scale is shared over."""
  out = {}
  def walk(node, path):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, path + (key,))
      elif key == "kernel":
        out["/".join(path + (key,))] = _input_axes(path, key, value.ndim, node["scale"].ndim, cfg)
  walk(_abstract_quantized(cfg), ())
  return out


def quantize_array(w: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """(int8 q, float32 scale) with the scale shared over `axes` (dropped from its shape)."""
  w = w.astype(jnp.float32)
  absmax = jnp.max(jnp.abs(w), axis=axes, keepdims=True)
  scale = jnp.where(absmax > 0, absmax / QMAX, 1.0)
  q = jnp.clip(jnp.round(w / scale), -QMAX, QMAX).astype(jnp.int8)
  return q, jnp.squeeze(scale, axis=axes)


def dequantize_array(q: jax.Array, scale: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  return q.astype(jnp.float32) * jnp.expand_dims(scale, axes)


def _abstract_quantized(cfg: ModelConfig) -> Any:
  from jaxllm.models.transformer import Transformer  # pylint: disable=import-outside-toplevel
  return unbox(jax.eval_shape(init_params_fn(Transformer(quantized_config(cfg)), 8),
                              jax.random.key(0)))


def _walk(float_node: dict, abstract_node: dict, cfg: ModelConfig, path=()) -> dict:
  out = {}
  for key, spec in abstract_node.items():
    if key == "scale" and key not in float_node:  # set with its kernel
      continue
    if key not in float_node:
      raise ConfigError(f"params have no {'/'.join(path + (key,))}; they do not belong to "
                        "config.model (quantize the run's own params).")
    value = float_node[key]
    if isinstance(spec, dict):
      out[key] = _walk(value, spec, cfg, path + (key,))
    elif key in ("kernel", "embedding") and spec.dtype == jnp.int8:
      axes = _input_axes(path, key, value.ndim, abstract_node["scale"].ndim, cfg)
      out[key], out["scale"] = quantize_array(value, axes)
    else:
      out[key] = value
  for key, value in out.items():
    spec = abstract_node[key]
    if not isinstance(spec, dict) and value.shape != spec.shape:
      raise ConfigError(f"{'/'.join(path + (key,))} has shape {value.shape}, config.model "
                        f"implies {spec.shape}.")
  return out


def quantize_params(params: Any, cfg: ModelConfig) -> Any:
  """Float params of `Transformer(cfg)` -> params of `Transformer(quantized_config(cfg))`."""
  if cfg.quant != "none":
    raise ConfigError(f"config.model.quant={cfg.quant!r}: these params are quantized already.")
  return jax.jit(lambda p: _walk(p, _abstract_quantized(cfg), cfg))(params)


def dequantize_params(qparams: Any, cfg: ModelConfig) -> Any:
  """Quantized params -> float32 params of the same model with quant="none" (q * scale)."""
  def walk(node, path):
    out = {}
    for key, value in node.items():
      if isinstance(value, dict):
        out[key] = walk(value, path + (key,))
      elif key in ("kernel", "embedding") and value.dtype == jnp.int8:
        axes = _input_axes(path, key, value.ndim, node["scale"].ndim, cfg)
        out[key] = dequantize_array(value, node["scale"], axes)
      elif key != "scale" or not any(v.dtype == jnp.int8 for v in node.values()
                                     if not isinstance(v, dict)):
        out[key] = value
    return out
  return jax.jit(lambda p: walk(p, ()))(qparams)


def is_quantized(params: Any) -> bool:
  return any(x.dtype == jnp.int8 for x in jax.tree.leaves(params))


def as_float(params: Any, cfg: ModelConfig) -> Any:
  """`params` with int8 weights dequantized (unchanged when they are float already)."""
  return dequantize_params(params, cfg) if is_quantized(params) else params


def frozen_base(params: Any, cfg: ModelConfig, base_quant: str) -> tuple[ModelConfig, Any]:
  """(model config, params) of a LoRA run's frozen base: int8 (QLoRA) when `base_quant` is
  "int8" or the params are quantized already, else the float params as they are."""
  if base_quant == "int8" and not is_quantized(params):
    return quantized_config(cfg), quantize_params(params, cfg)
  if is_quantized(params):
    return quantized_config(cfg), params
  return cfg, params
