"""Hugging Face model directories <-> a ModelConfig and its params.

  import_model(SRC)               -> (ModelConfig, params), optionally placed on a mesh
  export(params, cfg, tok, DST)   -> an HF directory transformers loads (AutoModelForCausalLM)

Whole run directories go through jaxllm/runs.py (import_hf, export_hf).

A Hugging Face directory holds config.json, model.safetensors (or shards and
model.safetensors.index.json), tokenizer.json and tokenizer_config.json. The tokenizer's chat
format is mapped to ours on import (jaxllm/interop/hf_tokenizer.py); when that adds chat tokens,
the embedding (and LM head) grow to the tokenizer's size.
"""

import json
import math
import pathlib
from typing import Any

import jax

from jaxllm.data import chat
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError
from jaxllm.interop import hf_config, hf_tokenizer, hf_weights
from jaxllm.models import Transformer
from jaxllm.models.config import ModelConfig
from jaxllm.models.params import params_shardings
from jaxllm.parallel import sharding as sharding_lib


def model_config(src, tokenizer: Tokenizer | None = None, vocab_multiple: int = 1,
                 **run_options: Any) -> ModelConfig:
  """The ModelConfig of an HF directory; vocab_size grows to the tokenizer's when it is larger,
  then up to a multiple of `vocab_multiple` (the new rows start at the mean row).

  `run_options` are fields of hf_config.RUN_OPTIONS (dtype, remat, scan_layers ...).
  """
  unknown = sorted(set(run_options) - set(hf_config.RUN_OPTIONS))
  if unknown:
    raise UserError(f"{unknown} describe the architecture, which comes from "
                    f"{pathlib.Path(src) / 'config.json'}; only {hf_config.RUN_OPTIONS} can be "
                    "set on an imported model.")
  hf = hf_config.read_config(src)
  vocab = hf.get("vocab_size") or hf.get("n_vocab")
  if tokenizer is not None:
    vocab = max(vocab, tokenizer.vocab_size)
  vocab = -(-vocab // vocab_multiple) * vocab_multiple
  return hf_config.to_model_config(hf, str(pathlib.Path(src) / "config.json"), vocab_size=vocab,
                                   **run_options)


def mesh_vocab_multiple(mesh, rules) -> int:
  """What a vocabulary size must divide by on `mesh`: the size of the mesh axes the 'vocab'
  logical axis maps to, times 128 (MaxText's and nanoGPT's padding, kinder to matmul tiles)."""
  axes = dict(rules).get("vocab")
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  return math.lcm(128, math.prod(mesh.shape[a] for a in axes))


def import_model(src, tokenizer: Tokenizer | None = None, mesh=None,
                 rules=sharding_lib.DEFAULT_RULES, vocab_multiple: int = 1,
                 **run_options: Any) -> tuple[ModelConfig, dict]:
  """(ModelConfig, params) of the HF model in `src` (vocab_size as in `model_config`).

  With a `mesh`, every param is placed directly with its sharding under `rules` (each device
  reads only its block); without one they land on the default device.
  """
  cfg = model_config(src, tokenizer, vocab_multiple, **run_options)
  shardings = None if mesh is None else params_shardings(Transformer(cfg), mesh, rules, 8)
  return cfg, hf_weights.load_params(src, cfg, shardings)


def export(params: dict, cfg: ModelConfig, tokenizer: Tokenizer | None, dst, *,
           family: str | None = None, dtype: str = "float32",
           max_shard_bytes: int = 5 * 2**30) -> pathlib.Path:
  """Writes an HF directory transformers loads: config.json, safetensors, tokenizer files and
  generation_config.json. `family` defaults to the one cfg matches (hf_config.family_of)."""
  if dtype not in hf_weights.DTYPES:
    raise UserError(f"dtype={dtype!r} is not one of {sorted(hf_weights.DTYPES)}.")
  ids = {}
  if tokenizer is not None:
    ids = dict(bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  hf = hf_config.to_hf_config(cfg, family, dtype=dtype, **ids)
  tensors = hf_weights.to_hf_tensors(params, cfg, dtype)
  dst = pathlib.Path(dst)
  if jax.process_index() != 0:
    return dst
  dst.mkdir(parents=True, exist_ok=True)
  for old in dst.glob("model*.safetensors*"):  # a smaller re-export must not keep stale shards
    old.unlink()
  hf_weights.save_tensors(tensors, dst, max_shard_bytes)
  (dst / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
  if tokenizer is not None:
    chat.save_pretrained(tokenizer, dst)
    _check_reloaded_tokenizer(tokenizer, dst, hf["model_type"])
    stops = chat.stop_ids(tokenizer)
    generation = {"bos_token_id": tokenizer.bos_id, "eos_token_id": stops,
                  "pad_token_id": tokenizer.pad_id}
    (dst / "generation_config.json").write_text(json.dumps(
        {k: v for k, v in generation.items() if v is not None}, indent=2) + "\n")
  return dst


# Probe strings for the exported tokenizer: spaces, digits, accents, CJK, emoji, newlines.
_PROBES = ("Hello world", " two  spaces and\ttabs", "Numbers 12345 and 3.14", "café naïve",
           "日本語のテキスト", "emoji 🙂 done", "line one\n\nline two\r\n", "x = f(y) + 1;")


def _check_reloaded_tokenizer(tokenizer: Tokenizer, dst: pathlib.Path, model_type: str) -> None:
  """UserError when transformers would read the exported tokenizer differently.

  AutoTokenizer may rebuild a tokenizer from its model_type (transformers 5 makes every qwen2
  model's tokenizer a Qwen2Tokenizer); hf_tokenizer.import_tokenizer reads the directory the same
  way, so the export is re-imported and compared on probe strings.
  """
  reloaded, added = hf_tokenizer.import_tokenizer(dst)
  differs = [text for text in _PROBES if reloaded.encode(text) != tokenizer.encode(text)]
  if differs or added or reloaded.vocab_size != tokenizer.vocab_size:
    raise UserError(f"{dst}: transformers would not tokenize the export as this run does "
                    f"(model_type {model_type!r} makes it rebuild the tokenizer; "
                    f"{differs[:2] or added} differ); export as a family whose tokenizer.json is "
                    "read as it is (--family=llama or mistral, where the architecture allows).")
