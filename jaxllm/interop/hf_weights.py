"""Hugging Face safetensors checkpoints <-> our params, read lazily and placed shard by shard.

Each of our params is one `Tensor`: an HF tensor name and how its layout maps to ours. HF keeps a
torch Linear's weight as [out, in] (GPT-2's Conv1D and every embedding as [in, out]); our kernels
are in_shape + out_shape with heads split out, e.g. q: [D, N, H] from q_proj.weight [N*H, D], o:
[N, H, D] from o_proj.weight [D, N*H]. GPT-2's fused c_attn [D, 3D] holds q, k and v as the three
column blocks (`part`).

Loading never holds the whole checkpoint: `load_params` builds each param with
`jax.make_array_from_callback`, so every device asks for its own block, and the block is read
from the safetensors file as the smallest HF slice covering it. Under FSDP a model larger than one
device's memory (or than host memory) loads one shard at a time. With `scan_layers` a param is the
layers' tensors stacked; a block reads only its layers.

A grown vocabulary (chat tokens added on import, jaxllm/interop/hf_tokenizer.py) gives the new
rows of the embedding and LM head the mean of the old rows, as transformers'
`resize_token_embeddings` does: their logits start at the mean logit, so no new token is ever the
argmax before training.
"""

import dataclasses
import json
import math
import pathlib
from collections.abc import Iterator
from typing import Any

import jax
import ml_dtypes
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxllm.errors import UserError
from jaxllm.interop.hf_config import family_of
from jaxllm.models import Transformer
from jaxllm.models.config import ModelConfig
from jaxllm.models.params import init_params_fn, unbox

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


@dataclasses.dataclass(frozen=True)
class Tensor:
  """Where one of our params lives in an HF checkpoint.

  ours = reshape(X.T if torch_linear else X, our_shape), after taking column block `part[0]` of
  `part[1]` along the output axis; `in_dims` leading dims of ours are the input side (0 for
  vectors). `grows` marks HF axis 0 as the vocabulary (embedding, LM head).
  """

  name: str
  in_dims: int = 1
  torch_linear: bool = True
  part: tuple[int, int] = (0, 1)
  grows: bool = False


def _llama_like(cfg: ModelConfig) -> Iterator[tuple[tuple[str, ...], Tensor]]:
  vector = dict(in_dims=0, torch_linear=False)
  yield ("embed", "embedding"), Tensor("model.embed_tokens.weight", torch_linear=False,
                                       grows=True)
  yield ("final_norm", "scale"), Tensor("model.norm.weight", **vector)
  if not cfg.tie_embeddings:
    yield ("lm_head", "kernel"), Tensor("lm_head.weight", grows=True)
  for i in range(cfg.num_layers):
    hf, ours = f"model.layers.{i}.", f"layer_{i}"
    yield (ours, "attn_norm", "scale"), Tensor(hf + "input_layernorm.weight", **vector)
    yield (ours, "mlp_norm", "scale"), Tensor(hf + "post_attention_layernorm.weight", **vector)
    for name in "qkv":
      yield (ours, "attn", name, "kernel"), Tensor(hf + f"self_attn.{name}_proj.weight")
      if cfg.qkv_bias:
        yield (ours, "attn", name, "bias"), Tensor(hf + f"self_attn.{name}_proj.bias", **vector)
    yield (ours, "attn", "o", "kernel"), Tensor(hf + "self_attn.o_proj.weight", in_dims=2)
    if cfg.qk_norm:
      for name in "qk":
        yield (ours, "attn", f"{name}_norm", "scale"), Tensor(hf + f"self_attn.{name}_norm.weight",
                                                              **vector)
    for name in ("gate", "up", "down"):
      yield (ours, "mlp", name, "kernel"), Tensor(hf + f"mlp.{name}_proj.weight")


def _gpt2(cfg: ModelConfig, prefix: str) -> Iterator[tuple[tuple[str, ...], Tensor]]:
  vector = dict(in_dims=0, torch_linear=False)
  conv = dict(torch_linear=False)

  def norm(ours, hf):
    yield ours + ("scale",), Tensor(hf + ".weight", **vector)
    yield ours + ("bias",), Tensor(hf + ".bias", **vector)

  yield ("embed", "embedding"), Tensor(prefix + "wte.weight", grows=True, **conv)
  yield ("pos_embed", "embedding"), Tensor(prefix + "wpe.weight", **conv)
  yield from norm(("final_norm",), prefix + "ln_f")
  for i in range(cfg.num_layers):
    hf, ours = f"{prefix}h.{i}.", f"layer_{i}"
    yield from norm((ours, "attn_norm"), hf + "ln_1")
    yield from norm((ours, "mlp_norm"), hf + "ln_2")
    for j, name in enumerate("qkv"):
      yield (ours, "attn", name, "kernel"), Tensor(hf + "attn.c_attn.weight", part=(j, 3), **conv)
      yield (ours, "attn", name, "bias"), Tensor(hf + "attn.c_attn.bias", part=(j, 3), **vector)
    yield (ours, "attn", "o", "kernel"), Tensor(hf + "attn.c_proj.weight", in_dims=2, **conv)
    yield (ours, "attn", "o", "bias"), Tensor(hf + "attn.c_proj.bias", **vector)
    for ours_name, hf_name in (("up", "c_fc"), ("down", "c_proj")):
      yield (ours, "mlp", ours_name, "kernel"), Tensor(hf + f"mlp.{hf_name}.weight", **conv)
      yield (ours, "mlp", ours_name, "bias"), Tensor(hf + f"mlp.{hf_name}.bias", **vector)


def tensor_map(cfg: ModelConfig, gpt2_prefix: str = "transformer.") -> dict[tuple[str, ...],
                                                                             Tensor]:
  """Our param path (unscanned layers: layer_{i}) -> its HF tensor."""
  if family_of(cfg) == "gpt2":
    return dict(_gpt2(cfg, gpt2_prefix))
  return dict(_llama_like(cfg))


# HF tensors that hold no parameters (buffers some checkpoints carry).
def _ignorable(name: str) -> bool:
  return name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))


class Checkpoint:
  """The safetensors files of an HF model directory, opened lazily; name -> file."""

  def __init__(self, directory):
    self.directory = pathlib.Path(directory)
    index = self.directory / INDEX_FILE
    if index.is_file():
      try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise UserError(f"{index}: not a safetensors index (needs a 'weight_map'): {e}") from e
    elif (self.directory / SINGLE_FILE).is_file():
      with safe_open(self.directory / SINGLE_FILE, framework="np") as f:
        weight_map = {name: SINGLE_FILE for name in f.keys()}  # noqa: SIM118 (not a dict)
    else:
      found = sorted(p.name for p in self.directory.glob("*"))[:12]
      raise UserError(f"{self.directory} has neither {SINGLE_FILE} nor {INDEX_FILE} (found "
                      f"{found}); only safetensors checkpoints are read: convert .bin weights "
                      "with transformers (save_pretrained writes safetensors).")
    self.weight_map: dict[str, str] = weight_map
    self._files: dict[str, Any] = {}
    self._means: dict[str, np.ndarray] = {}

  def _slice(self, name: str):
    file = self.weight_map.get(name)
    if file is None:
      raise UserError(f"{self.directory}: the checkpoint has no tensor {name!r}, which this "
                      "config.json's model needs; the weights and config.json disagree.")
    if file not in self._files:
      path = self.directory / file
      if not path.is_file():
        raise UserError(f"{path} is listed in {INDEX_FILE} but missing; download it again.")
      self._files[file] = safe_open(path, framework="np")
    return self._files[file].get_slice(name)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._slice(name).get_shape())

  def read(self, name: str, box: tuple[slice, ...]) -> np.ndarray:
    return np.asarray(self._slice(name)[box])

  def row_mean(self, name: str, chunk: int = 4096) -> np.ndarray:
    """Mean over axis 0 in float64, read `chunk` rows at a time (cached)."""
    if name not in self._means:
      rows = self.shape(name)[0]
      total = 0.0
      for start in range(0, rows, chunk):
        total = total + self.read(name, (slice(start, min(rows, start + chunk)),)).astype(
            np.float64).sum(0)
      self._means[name] = total / rows
    return self._means[name]


def _covering(slices: tuple[slice, ...], dims: tuple[int, ...]) -> tuple[int, int, tuple]:
  """The flat range of dims' row-major flattening that covers the block `slices` picks, and
  the slices that cut the block out of that range reshaped to (outer,) + dims[1:]."""
  if not dims:
    return 0, 1, ()
  inner = math.prod(dims[1:])
  outer = slices[0]
  return outer.start * inner, outer.stop * inner, (slice(None),) + tuple(slices[1:])


def read_block(ckpt: Checkpoint, t: Tensor, shape: tuple[int, ...],
               index: tuple[slice, ...]) -> np.ndarray:
  """Block `index` of our param `shape` stored as HF tensor `t`, read as a small HF slice."""
  index = tuple(slice(*s.indices(n)[:2]) for s, n in zip(index, shape))
  k = t.in_dims
  r0, r1, row_cut = _covering(index[:k], shape[:k])
  c0, c1, col_cut = _covering(index[k:], shape[k:])
  block_cols = math.prod(shape[k:])
  c0, c1 = c0 + t.part[0] * block_cols, c1 + t.part[0] * block_cols
  hf_shape = ckpt.shape(t.name)
  if k == 0:  # a vector: rows are a single pseudo-row
    x = ckpt.read(t.name, (slice(c0, c1),))[None]
  else:
    # HF axes: (out, in) for a torch Linear, (in, out) otherwise; axis 0 may be the vocabulary.
    box = [(c0, c1), (r0, r1)] if t.torch_linear else [(r0, r1), (c0, c1)]
    x = _read_growing(ckpt, t, box, hf_shape)
    if t.torch_linear:
      x = x.T
  x = x.reshape((r1 - r0) // max(1, math.prod(shape[1:k])) if k else 1, *shape[1:k],
                (c1 - c0) // max(1, math.prod(shape[k + 1:])), *shape[k + 1:])
  if k == 0:
    x = x[0]
  return x[row_cut + col_cut]


def _read_growing(ckpt: Checkpoint, t: Tensor, box, hf_shape) -> np.ndarray:
  """HF box [a0:a1, b0:b1]; rows past the tensor's end (a grown vocabulary) are the row mean."""
  (a0, a1), (b0, b1) = box
  have = hf_shape[0]
  if a1 <= have:
    return ckpt.read(t.name, (slice(a0, a1), slice(b0, b1)))
  if not t.grows:
    raise UserError(f"{t.name}: the checkpoint holds {have} rows, fewer than the {a1} needed.")
  parts = [ckpt.read(t.name, (slice(a0, have), slice(b0, b1)))] if a0 < have else []
  mean = ckpt.row_mean(t.name)[b0:b1]
  extra = a1 - max(a0, have)
  parts.append(np.broadcast_to(mean, (extra, b1 - b0)).astype(np.float32))
  return np.concatenate([p.astype(np.float32) for p in parts])


def _expected_hf_shape(t: Tensor, shape: tuple[int, ...], hf_vocab: int | None) -> tuple:
  rows, cols = math.prod(shape[:t.in_dims]), math.prod(shape[t.in_dims:]) * t.part[1]
  if t.in_dims == 0:
    return (cols,)
  out = (cols, rows) if t.torch_linear else (rows, cols)
  if t.grows and hf_vocab is not None:
    out = (hf_vocab,) + out[1:]
  return out


def _abstract_params(cfg: ModelConfig) -> dict:
  abstract = unbox(jax.eval_shape(init_params_fn(Transformer(cfg), 8), jax.random.key(0)))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)


def _layer_path(path: tuple[str, ...], layer: int) -> tuple[str, ...]:
  """A scanned param path ("layers", ...) -> the unscanned path of one layer."""
  return (f"layer_{layer}",) + path[1:]


def load_params(directory, cfg: ModelConfig, shardings: Any = None) -> dict:
  """Our params for `cfg` from the HF checkpoint in `directory`, in cfg.param_dtype.

  `shardings` (a tree of NamedSharding like the params, e.g. train.state.params_shardings) places
  each param directly on the mesh, each device reading only its block; None gives arrays on
  the default device. cfg.vocab_size may exceed the checkpoint's (the new rows are the mean).
  """
  ckpt = Checkpoint(directory)
  prefix = "transformer." if any(n.startswith("transformer.") for n in ckpt.weight_map) else ""
  tensors = tensor_map(cfg, prefix)
  hf_vocab = ckpt.shape(tensors[("embed", "embedding")].name)[0]
  if hf_vocab > cfg.vocab_size:
    raise UserError(f"{directory}: the embedding has {hf_vocab} rows but the model config "
                    f"vocab_size={cfg.vocab_size}; it must be at least the checkpoint's.")
  dtype = DTYPES[cfg.param_dtype]
  placements = {} if shardings is None else traverse_util.flatten_dict(shardings)
  used = set()
  params: dict = {}
  for path, leaf in traverse_util.flatten_dict(_abstract_params(cfg)).items():
    layers = range(cfg.num_layers) if cfg.scan_layers and path[0] == "layers" else None
    shape = leaf.shape[1:] if layers is not None else leaf.shape
    per_layer = ([tensors[_layer_path(path, i)] for i in layers] if layers is not None
                 else [tensors[path]])
    for t in per_layer:
      used.add(t.name)
      got, want = ckpt.shape(t.name), _expected_hf_shape(t, shape, hf_vocab)
      if got != want:
        raise UserError(f"{directory}: tensor {t.name} has shape {list(got)}, but config.json "
                        f"implies {list(want)}; the weights and config.json disagree.")

    def block(index, per_layer=per_layer, shape=shape, layers=layers):
      if layers is None:
        return read_block(ckpt, per_layer[0], shape, index).astype(dtype)
      picked = range(*index[0].indices(len(per_layer))[:2])
      return np.stack([read_block(ckpt, per_layer[i], shape, index[1:]) for i in picked]
                      ).astype(dtype)

    if shardings is None:
      value = jax.numpy.asarray(block(tuple(slice(None) for _ in leaf.shape)))
    else:
      value = jax.make_array_from_callback(leaf.shape, placements[path], block)
    params[path] = value
  unused = sorted(n for n in set(ckpt.weight_map) - used if not _ignorable(n)
                  and not (n.endswith("lm_head.weight") and cfg.tie_embeddings))
  if unused:
    raise UserError(f"{directory}: the checkpoint holds tensors this config.json's model does not "
                    f"use: {unused[:6]}{' ...' if len(unused) > 6 else ''}; the weights and "
                    "config.json disagree.")
  return traverse_util.unflatten_dict(params)


def _host(x) -> np.ndarray:
  """A (possibly sharded, possibly multi-process) array gathered to this host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def to_hf_tensors(params: dict, cfg: ModelConfig, dtype: str = "float32") -> dict[str, np.ndarray]:
  """HF name -> tensor for our params (the inverse of load_params), one param at a time."""
  out_dtype = DTYPES[dtype]
  tensors = tensor_map(cfg)
  parts: dict[str, list] = {}
  for path, value in traverse_util.flatten_dict(params).items():
    value = _host(value)
    stacked = cfg.scan_layers and path[0] == "layers"
    per_layer = [(_layer_path(path, i), value[i]) for i in range(cfg.num_layers)] if stacked \
        else [(path, value)]
    for our_path, y in per_layer:
      t = tensors.get(our_path)
      if t is None:
        raise UserError(f"param {'/'.join(our_path)} has no Hugging Face counterpart; export "
                        "a plain language model (a reward model's head or a value head cannot "
                        "be written as a CausalLM).")
      k = t.in_dims
      x = y.reshape(-1) if k == 0 else y.reshape(math.prod(y.shape[:k]), -1)
      if t.torch_linear and k:
        x = x.T
      parts.setdefault(t.name, [None] * t.part[1])[t.part[0]] = x.astype(out_dtype)
  merged = {}
  for name, blocks in parts.items():
    axis = 0 if blocks[0].ndim == 1 else 1  # fused blocks are columns of a Conv1D
    merged[name] = np.ascontiguousarray(blocks[0] if len(blocks) == 1
                                        else np.concatenate(blocks, axis=axis))
  return merged


def save_tensors(tensors: dict[str, np.ndarray], directory,
                 max_shard_bytes: int = 5 * 2**30) -> list[pathlib.Path]:
  """Writes model.safetensors, or numbered shards + model.safetensors.index.json past
  max_shard_bytes (as save_pretrained does)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, x in tensors.items():
    if shards[-1] and size + x.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = x
    size += x.nbytes
  metadata = {"format": "pt"}  # transformers refuses safetensors without it
  if len(shards) == 1:
    save_file(shards[0], directory / SINGLE_FILE, metadata=metadata)
    return [directory / SINGLE_FILE]
  files, weight_map = [], {}
  for i, shard in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, directory / name, metadata=metadata)
    weight_map.update({t: name for t in shard})
    files.append(directory / name)
  index = {"metadata": {"total_size": sum(x.nbytes for x in tensors.values())},
           "weight_map": weight_map}
  (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
  return files
