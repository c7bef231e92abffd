"""Decoder-only transformer (Llama and GPT-2 families) in flax.linen.

Shapes: B batch, T time, D d_model, N query heads, K key/value heads, H head dim, F mlp dim,
V vocab. Parameters carry logical axis names (see jaxllm/parallel/rules.py); large activations
carry logical sharding constraints. Use only through `model.init` / `model.apply`.
"""

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxllm.models import rope, splash
from jaxllm.models.config import ModelConfig
from jaxllm.models.lora import LoraConfig
from jaxllm.parallel import target


def dense(x, kernel, in_dims: int = 1, out_dtype=None):
  """jnp.tensordot(x, kernel, in_dims): x [..., *in] times kernel [*in, *out] -> [..., *out].

  Values and gradients are those of tensordot; only the weight gradient is written so that the
  operand the compiler may transpose (the left one of its dot) is the narrower of x and the
  output gradient. XLA:CPU copies that operand into a transposed layout, fused into whatever
  produced it; for a wide GELU output that fused copy cost more than all of a layer's matmuls
  (docs/benchmarks.md). GPU and TPU compilers fold the transposition into the matmul either way.
  The output is named "dense" for remat policies (a custom-gradient call is not a dot to them).
  """
  return checkpoint_name(_dense(x, kernel, in_dims, out_dtype), "dense")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dense(x, kernel, in_dims, out_dtype):
  return jnp.tensordot(x, kernel, axes=in_dims, preferred_element_type=out_dtype)


def _dense_fwd(x, kernel, in_dims, out_dtype):
  return _dense(x, kernel, in_dims, out_dtype), (x, kernel)


def _dense_bwd(in_dims, out_dtype, residuals, g):
  x, kernel = residuals
  lead = x.ndim - in_dims  # batch-like dims, summed over in the kernel gradient
  out_dims = kernel.ndim - in_dims
  dot = functools.partial(jax.lax.dot_general, preferred_element_type=out_dtype)
  dx = dot(g, kernel, ((tuple(range(lead, g.ndim)), tuple(range(in_dims, kernel.ndim))),
                       ((), ())))
  rows = (tuple(range(lead)),) * 2
  if math.prod(x.shape[lead:]) <= math.prod(g.shape[lead:]):
    dk = dot(x, g, (rows, ((), ())))
  else:  # [*out, *in], then back to the kernel's order
    dk = jnp.transpose(dot(g, x, (rows, ((), ()))),
                       tuple(range(out_dims, kernel.ndim)) + tuple(range(out_dims)))
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def _init(std: float, names: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.normal(stddev=std), names)


def _zeros(names: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _ones(names: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def _constrain(x, names):
  return nn.with_logical_constraint(x, names)


class Linear(nn.Module):
  """x[..., *in_shape] -> [..., *out_shape] with a kernel of shape in_shape + out_shape.

  `names` are the logical axes of the kernel; the bias takes the output ones. When `lora`
  targets this layer's path, a low-rank update is added from the "lora" collection:
  y += (alpha / r) * (dropout(x) . a) . b, with a: in_shape + (r,) and b: (r,) + out_shape
  (jaxllm/models/lora.py). With cfg.quant="int8" the kernel is int8 and a float32 "scale" of
  shape out_shape multiplies the output (weight-only quantization, jaxllm/compress/quantize.py).
  """

  out_shape: tuple[int, ...]
  names: tuple[str | None, ...]
  cfg: ModelConfig
  std: float
  in_dims: int = 1
  out_dtype: Any = None  # e.g. float32 logits from bf16 inputs (accumulator precision)
  lora: LoraConfig | None = None
  bias: bool | None = None  # None: cfg.use_bias

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    cfg = self.cfg
    in_shape = x.shape[-self.in_dims:]
    if cfg.quant == "int8":  # y = (x . q) * scale: one float32 scale per output channel
      kernel = self.param("kernel", _zeros(self.names), in_shape + self.out_shape, jnp.int8)
      scale = self.param("scale", _ones(self.names[self.in_dims:]), self.out_shape, jnp.float32)
      y = dense(x.astype(cfg.dtype), kernel.astype(cfg.dtype), self.in_dims, self.out_dtype)
      y = (y.astype(jnp.float32) * scale).astype(y.dtype)
    else:
      kernel = self.param("kernel", _init(self.std, self.names), in_shape + self.out_shape,
                          cfg.param_dtype)
      y = dense(x.astype(cfg.dtype), kernel.astype(cfg.dtype), self.in_dims, self.out_dtype)
    if cfg.use_bias if self.bias is None else self.bias:
      bias = self.param("bias", _zeros(self.names[self.in_dims:]), self.out_shape,
                        cfg.param_dtype)
      y = y + bias.astype(cfg.dtype)
    if self.lora is not None and self.lora.targets_path(self.scope.path):
      y = y + self._low_rank(x, in_shape, deterministic).astype(y.dtype)
    return y

  def _low_rank(self, x, in_shape, deterministic):
    cfg, lora = self.cfg, self.lora
    bound = math.prod(in_shape) ** -0.5  # PEFT's kaiming_uniform(a=sqrt(5)) for a; b starts at zero
    a_init = nn.with_logical_partitioning(
        lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound),
        self.names[:self.in_dims] + (None,))
    a = self.variable("lora", "a", lambda: a_init(self.make_rng("params"), in_shape
                                                  + (lora.rank,), cfg.param_dtype)).value
    b = self.variable("lora", "b", lambda: _zeros((None,) + self.names[self.in_dims:])(
        self.make_rng("params"), (lora.rank,) + self.out_shape, cfg.param_dtype)).value
    x = nn.Dropout(lora.dropout, deterministic=deterministic, name="lora_dropout")(x)
    xa = dense(x.astype(cfg.dtype), a.astype(cfg.dtype), self.in_dims)
    return lora.scale * dense(xa, b.astype(cfg.dtype), 1, self.out_dtype)


class QuantizedEmbed(nn.Module):
  """Token embedding held as int8 rows [V, D] with one float32 scale per row [V]."""

  cfg: ModelConfig

  def setup(self):
    names = ("vocab", "embed")
    self.embedding = self.param("embedding", _zeros(names), (self.cfg.vocab_size,
                                                             self.cfg.d_model), jnp.int8)
    self.scale = self.param("scale", _ones(names[:1]), (self.cfg.vocab_size,), jnp.float32)

  def __call__(self, tokens_bt):
    rows_btd = jnp.take(self.embedding, tokens_bt, axis=0).astype(jnp.float32)
    return (rows_btd * jnp.take(self.scale, tokens_bt, axis=0)[..., None]).astype(self.cfg.dtype)


def make_norm(cfg: ModelConfig, name: str) -> nn.Module:
  """RMSNorm (Llama) or LayerNorm (GPT-2); statistics computed in float32."""
  scale_init = nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",))
  common = dict(epsilon=cfg.norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                scale_init=scale_init, name=name)
  if cfg.norm == "rms":
    return nn.RMSNorm(**common)
  return nn.LayerNorm(use_bias=cfg.use_bias, bias_init=_zeros(("norm",)), **common)


def attention_mask(segment_ids_bt: jnp.ndarray | None) -> jnp.ndarray | None:
  """[B, 1, T, T] mask letting a token see only its own segment (causality is added separately)."""
  if segment_ids_bt is None:
    return None
  return segment_ids_bt[:, None, :, None] == segment_ids_bt[:, None, None, :]


def attention_implementation(cfg: ModelConfig, seq_len: int) -> str:
  """'auto' picks cuDNN flash attention on GPU in 16-bit compute, the Pallas splash kernel on
  TPU (for sequence lengths it tiles: multiples of 128), XLA elsewhere."""
  if cfg.attention_impl != "auto":
    return cfg.attention_impl
  backend = target.platform()
  if backend == "gpu" and cfg.dtype in ("bfloat16", "float16"):
    return "cudnn"
  if backend == "tpu" and splash.block_size(seq_len) is not None:
    return "splash"
  return "xla"


def cache_attention_mask(kv_mask_bs: jnp.ndarray, cache_index: jnp.ndarray,
                         num_queries: int, sliding_window: int = 0) -> jnp.ndarray:
  """[B, 1, T, S]: query t (at cache slot cache_index + t) sees valid slots up to its own
  (and, with a sliding window, only the window - 1 slots before it; a row's valid slots are
  contiguous, so slot distance is token distance)."""
  slots_s = jnp.arange(kv_mask_bs.shape[1])
  query_slots_t = cache_index + jnp.arange(num_queries)
  causal_ts = slots_s[None, :] <= query_slots_t[:, None]
  if sliding_window:
    causal_ts &= slots_s[None, :] > query_slots_t[:, None] - sliding_window
  return kv_mask_bs[:, None, None, :] & causal_ts[None, None]


class Attention(nn.Module):
  """Multi-head / grouped-query self-attention through jax.nn.dot_product_attention.

  With a KV cache (k, v: [B, S, K, H]) the new keys and values are written at slots
  cache_index .. cache_index + T - 1 and the queries attend to every valid earlier slot
  (kv_mask_bs); the updated cache is returned with the output.
  """

  cfg: ModelConfig
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x_btd, positions_bt, segment_ids_bt, cache=None, cache_index=None,
               kv_mask_bs=None, deterministic: bool = True):
    cfg = self.cfg
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
    std = cfg.init_std
    linear = functools.partial(Linear, cfg=cfg, lora=self.lora)
    qkv = functools.partial(linear, std=std, bias=cfg.use_bias or cfg.qkv_bias)
    q_btnh = qkv((n, h), ("embed", "heads", "head_dim"), name="q")(x_btd, deterministic)
    k_btkh = qkv((k, h), ("embed", "kv_heads", "head_dim"), name="k")(x_btd, deterministic)
    v_btkh = qkv((k, h), ("embed", "kv_heads", "head_dim"), name="v")(x_btd, deterministic)
    if cfg.qk_norm:  # per head, over head_dim, before rope
      q_btnh = make_norm(cfg, "q_norm")(q_btnh)
      k_btkh = make_norm(cfg, "k_norm")(k_btkh)
    if cfg.position == "rope":
      inv_freq = rope.inverse_frequencies(cfg)
      q_btnh = rope.apply_rope(q_btnh, positions_bt, inv_freq)
      k_btkh = rope.apply_rope(k_btkh, positions_bt, inv_freq)
    q_btnh = _constrain(q_btnh, ("act_batch", "act_len", "act_heads", None))
    k_btkh = _constrain(k_btkh, ("act_batch", "act_len", "act_kv_heads", None))
    v_btkh = _constrain(v_btkh, ("act_batch", "act_len", "act_kv_heads", None))
    impl = attention_implementation(cfg, x_btd.shape[1])
    if cache is None and impl == "splash":
      out_btnh = splash.splash_attention(q_btnh, k_btkh, v_btkh, segment_ids_bt, cfg.causal,
                                         cfg.sliding_window)
    elif cache is None:
      # Logits and softmax run in float32 inside dot_product_attention; GQA is native there.
      # causal=False: each token sees its whole segment (and a window on both sides, as splash).
      window = cfg.sliding_window - 1
      out_btnh = jax.nn.dot_product_attention(
          q_btnh, k_btkh, v_btkh, mask=attention_mask(segment_ids_bt), is_causal=cfg.causal,
          local_window_size=(window, 0 if cfg.causal else window) if cfg.sliding_window else None,
          implementation=impl)
    else:
      k_bskh, v_bskh = cache
      k_bskh = jax.lax.dynamic_update_slice_in_dim(k_bskh, k_btkh.astype(k_bskh.dtype),
                                                   cache_index, axis=1)
      v_bskh = jax.lax.dynamic_update_slice_in_dim(v_bskh, v_btkh.astype(v_bskh.dtype),
                                                   cache_index, axis=1)
      k_bskh = _constrain(k_bskh, ("act_batch", "act_len", "act_kv_heads", None))
      v_bskh = _constrain(v_bskh, ("act_batch", "act_len", "act_kv_heads", None))
      cache = (k_bskh, v_bskh)
      mask = cache_attention_mask(kv_mask_bs, cache_index, x_btd.shape[1], cfg.sliding_window)
      out_btnh = jax.nn.dot_product_attention(q_btnh, k_bskh.astype(q_btnh.dtype),
                                              v_bskh.astype(q_btnh.dtype), mask=mask,
                                              implementation="xla")
    out_std = std / (2 * cfg.num_layers) ** 0.5  # GPT-2: residual projections scaled by depth
    out_btd = linear((cfg.d_model,), ("heads", "head_dim", "embed"), std=out_std, in_dims=2,
                     name="o")(out_btnh, deterministic)
    return out_btd, cache


class Mlp(nn.Module):
  """SwiGLU (Llama) or GELU (GPT-2) feed-forward block."""

  cfg: ModelConfig
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x_btd, deterministic: bool = True):
    cfg = self.cfg
    up = functools.partial(Linear, (cfg.mlp_dim,), ("embed", "mlp"), cfg, cfg.init_std,
                           lora=self.lora)
    if cfg.mlp == "swiglu":
      h_btf = (nn.silu(up(name="gate")(x_btd, deterministic))
               * up(name="up")(x_btd, deterministic))
    else:
      h_btf = nn.gelu(up(name="up")(x_btd, deterministic), approximate=True)
    h_btf = _constrain(h_btf, ("act_batch", "act_len", "act_mlp"))
    out_std = cfg.init_std / (2 * cfg.num_layers) ** 0.5
    return Linear((cfg.d_model,), ("mlp", "embed"), cfg, out_std, lora=self.lora,
                  name="down")(h_btf, deterministic)


class Block(nn.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)).

  Returns x, or (x, this layer's updated KV cache) under nn.scan or when given a cache.
  """

  cfg: ModelConfig
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x_btd, positions_bt, segment_ids_bt, deterministic: bool, cache=None,
               cache_index=None, kv_mask_bs=None):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)
    h, cache = Attention(cfg, self.lora, name="attn")(
        make_norm(cfg, "attn_norm")(x_btd), positions_bt, segment_ids_bt, cache, cache_index,
        kv_mask_bs, deterministic)
    x_btd = x_btd + drop(h)
    h = Mlp(cfg, self.lora, name="mlp")(make_norm(cfg, "mlp_norm")(x_btd), deterministic)
    x_btd = _constrain(x_btd + drop(h), ("act_batch", "act_len", "act_embed"))
    return (x_btd, cache) if cfg.scan_layers or cache is not None else x_btd


_REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    # matmul outputs without batch dims (projections, not attention scores), as named by dense()
    "save_dots": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        jax.checkpoint_policies.save_only_these_names("dense")),
}


class Transformer(nn.Module):
  """tokens [B, T] -> float32 logits [B, T, V] (and the final hidden state [B, T, D] if asked).

  Decoding with a KV cache: pass `cache` (k, v: [L, B, S, K, H] each, from init_cache), the slot
  of the first token (`cache_index`, a scalar) and which slots hold real tokens (`kv_mask_bs`,
  [B, S], True for the tokens written now too); the updated cache is returned last.

  With `lora` set, the layers it targets read low-rank adapters from the "lora" collection:
  `apply({"params": base, "lora": adapters}, ...)` (see jaxllm/models/lora.py).
  With `output="hidden"` the model has no output head and returns the final (normed) hidden
  state [B, T, D] in place of logits: the backbone of a reward or value model.
  """

  cfg: ModelConfig
  lora: LoraConfig | None = None
  output: str = "logits"  # logits | hidden

  @nn.compact
  def __call__(self, tokens_bt, positions_bt=None, segment_ids_bt=None,
               deterministic: bool = True, return_hidden: bool = False, cache=None,
               cache_index=None, kv_mask_bs=None) -> Any:
    """positions default to 0..T-1; segment ids (packing, 0 = padding) restrict attention."""
    cfg = self.cfg
    if positions_bt is None:
      positions_bt = jnp.broadcast_to(jnp.arange(tokens_bt.shape[1]), tokens_bt.shape)
    if cfg.quant == "int8":
      embed = QuantizedEmbed(cfg, name="embed")
    else:
      embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype,
                       param_dtype=cfg.param_dtype,
                       embedding_init=_init(cfg.init_std, ("vocab", "embed")), name="embed")
    x_btd = embed(tokens_bt)
    if cfg.position == "learned":
      pos_embed = nn.Embed(cfg.max_seq_len, cfg.d_model, dtype=cfg.dtype,
                           param_dtype=cfg.param_dtype,
                           embedding_init=_init(cfg.init_std, ("position", "embed")),
                           name="pos_embed")
      x_btd = x_btd + pos_embed(positions_bt)
    x_btd = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)(x_btd)
    x_btd = _constrain(x_btd, ("act_batch", "act_len", "act_embed"))

    block = Block
    if cfg.remat != "none" and cache is None:
      # Index 4 counts `self`: (self, x, positions, segment_ids, deterministic).
      block = nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
                       static_argnums=(4,))
    if cfg.scan_layers:
      layers = nn.scan(block, variable_axes={"params": 0, "lora": 0},
                       split_rngs={"params": True, "dropout": True},
                       in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast,
                                nn.broadcast),
                       length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      x_btd, cache = layers(cfg, self.lora, name="layers")(x_btd, positions_bt, segment_ids_bt,
                                                deterministic, cache, cache_index, kv_mask_bs)
    else:
      new_cache = []
      for i in range(cfg.num_layers):
        layer_cache = None if cache is None else (cache[0][i], cache[1][i])
        out = block(cfg, self.lora, name=f"layer_{i}")(x_btd, positions_bt, segment_ids_bt,
                                                       deterministic, layer_cache, cache_index,
                                                       kv_mask_bs)
        if cache is None:
          x_btd = out
        else:
          x_btd, layer_cache = out
          new_cache.append(layer_cache)
      if cache is not None:
        cache = tuple(jnp.stack(parts) for parts in zip(*new_cache))

    hidden_btd = make_norm(cfg, "final_norm")(x_btd)
    if self.output == "hidden":
      return hidden_btd if cache is None else (hidden_btd, cache)
    if self.output != "logits":
      raise ValueError(f"Transformer.output={self.output!r} is not 'logits' or 'hidden'.")
    # Logits leave the matmul in float32 (the accumulator's precision), for a float32 loss.
    if cfg.tie_embeddings:
      logits_btv = dense(hidden_btd.astype(cfg.dtype), embed.embedding.astype(cfg.dtype).T, 1,
                         jnp.float32)
      if cfg.quant == "int8":  # the table's per-row scales are the head's per-output ones
        logits_btv = logits_btv * embed.scale
    else:
      head_cfg = dataclasses.replace(cfg, use_bias=False)
      logits_btv = Linear((cfg.vocab_size,), ("embed", "vocab"), head_cfg, cfg.init_std,
                          out_dtype=jnp.float32, lora=self.lora, name="lm_head")(
                              hidden_btd, deterministic)
    logits_btv = _constrain(logits_btv, ("act_batch", "act_len", "act_vocab"))
    outputs = (logits_btv, hidden_btd) if return_hidden else (logits_btv,)
    if cache is not None:
      outputs += (cache,)
    return outputs if len(outputs) > 1 else outputs[0]


def init_cache(cfg: ModelConfig, batch: int, max_len: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Zero KV cache (k, v), each [num_layers, batch, max_len, num_kv_heads, head_dim]."""
  shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.resolved_head_dim)
  return jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype)
