"""TPU flash attention: the Pallas splash-attention kernel behind the model's attention call.

Splash attention computes exact causal (or sliding-window, or full) attention block by block
in VMEM without the [T, T] score matrix, skipping blocks the mask empties. It runs one example
and one key/value head at a time on [G, T, H] queries (G = heads sharing that key/value head),
so grouped-query attention needs no repeated keys; here it is vmapped over batch and kv heads,
and wrapped in shard_map over the mesh axes the activations are split on (the kernel is a
custom call the SPMD partitioner cannot split). `interpret=True` runs it on any backend (tests).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

BLOCKS = (512, 256, 128)  # kernel tile sizes along the sequence, largest first


def block_size(seq_len: int) -> int | None:
  """The largest tile in BLOCKS dividing seq_len (None: the kernel cannot run this length)."""
  return next((b for b in BLOCKS if seq_len % b == 0), None)


def _kernel(seq_len: int, group: int, causal: bool, sliding_window: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  shape = (seq_len, seq_len)
  if sliding_window:
    mask = sm.LocalMask(shape, (sliding_window - 1, 0 if causal else sliding_window - 1), 0)
  elif causal:
    mask = sm.CausalMask(shape)
  else:
    mask = sm.FullMask(shape)
  b = block_size(seq_len)
  sizes = sk.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b,
                        block_kv_dkv=b, block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
  return sk.make_splash_mqa_single_device(sm.MultiHeadMask([mask] * group), block_sizes=sizes,
                                          interpret=interpret), sk.SegmentIds


def splash_attention(q_btnh: jax.Array, k_btkh: jax.Array, v_btkh: jax.Array,
                     segment_ids_bt: jax.Array | None, causal: bool = True,
                     sliding_window: int = 0, interpret: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(H) + mask) v -> [B, T, N, H], as jax.nn.dot_product_attention.

  segment_ids_bt (packing): a token sees only its own segment. sliding_window > 0: itself and
  the window - 1 tokens before it. T must be a multiple of 128 (block_size).
  """
  b, t, n, h = q_btnh.shape
  if block_size(t) is None:
    raise ValueError(f"splash attention needs a sequence length divisible by 128, got {t}; "
                     "set config.model.attention_impl='xla' or change config.data.seq_len.")
  spec = nn.logical_to_mesh_axes(("act_batch", "act_len", "act_heads", None))
  kv_spec = nn.logical_to_mesh_axes(("act_batch", "act_len", "act_kv_heads", None))
  seg_spec = P(spec[0], spec[1])
  if segment_ids_bt is None:
    segment_ids_bt = jnp.ones((b, t), jnp.int32)

  def local(q_btnh, k_btkh, v_btkh, seg_bt):
    bl, tl, nl, _ = q_btnh.shape
    kl = k_btkh.shape[2]
    kernel, segment_ids = _kernel(tl, nl // kl, causal, sliding_window, interpret)
    q_bkgth = (q_btnh * h ** -0.5).astype(q_btnh.dtype).reshape(bl, tl, kl, nl // kl, h)
    q_bkgth = q_bkgth.transpose(0, 2, 3, 1, 4)
    k_bkth, v_bkth = k_btkh.transpose(0, 2, 1, 3), v_btkh.transpose(0, 2, 1, 3)

    def one(q_gth, k_th, v_th, seg_t):
      return kernel(q_gth, k_th, v_th, segment_ids=segment_ids(q=seg_t, kv=seg_t))

    per_kv_head = jax.vmap(one, in_axes=(0, 0, 0, None))
    out_bkgth = jax.vmap(per_kv_head)(q_bkgth, k_bkth, v_bkth, seg_bt)
    return out_bkgth.transpose(0, 3, 1, 2, 4).reshape(bl, tl, nl, h)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return local(q_btnh, k_btkh, v_btkh, segment_ids_bt)
  batch_axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
  if b % math.prod(mesh.shape[a] for a in batch_axes if a is not None):
    # Fewer rows than batch shards (the params' init traces one row): not split over batch.
    spec, kv_spec, seg_spec = P(None, *spec[1:]), P(None, *kv_spec[1:]), P(None, seg_spec[1])
  return jax.shard_map(local, mesh=mesh, in_specs=(spec, kv_spec, kv_spec, seg_spec),
                       out_specs=spec, check_vma=False)(q_btnh, k_btkh, v_btkh, segment_ids_bt)
