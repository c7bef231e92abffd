"""Whole Hugging Face model directories <-> our models and run directories.

  import_model(SRC)               -> (ModelConfig, params), optionally placed on a mesh
  import_run(SRC, DST)            -> DST, a run directory (config.json, checkpoints/0, tokenizer)
  export(params, cfg, tok, DST)   -> an HF directory transformers loads (AutoModelForCausalLM)
  export_run(RUN, DST)            -> the same for a run's newest checkpoint (LoRA runs merged)

A Hugging Face directory holds config.json, model.safetensors (or shards and
model.safetensors.index.json), tokenizer.json and tokenizer_config.json. The tokenizer's chat
format is mapped to ours on import (jaxllm/interop/hf_tokenizer.py); when that adds chat tokens,
the embedding (and LM head) grow to the tokenizer's size.
"""

import dataclasses
import json
import math
import pathlib
from typing import Any

import jax
import ml_collections

from jaxllm import config as config_lib
from jaxllm.compress import quantize
from jaxllm.data import chat
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError
from jaxllm.interop import hf_config, hf_tokenizer, hf_weights
from jaxllm.models import Transformer
from jaxllm.models.config import ModelConfig
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.train.state import params_shardings


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


def import_run(src, dst, **run_options: Any) -> pathlib.Path:
  """Writes run directory `dst` from HF directory `src`: config.json (a pretraining config with the
  imported model), checkpoints/0 (the params, read straight into FSDP shards over every local
  device), the mapped tokenizer and import.json (source, family, tokens added).

  sample.py, chat.py and evaluate.py take it as --workdir; sft.py, dpo.py, reward_model.py and
  rl.py as --config.init.checkpoint.
  """
  dst = pathlib.Path(dst)
  if (dst / "checkpoints").exists():
    raise UserError(f"{dst / 'checkpoints'} exists; import into a new directory (or delete it).")
  tokenizer, added = hf_tokenizer.import_tokenizer(src)
  # Spread over every device (FSDP) as it is read, so the import fits where the model does.
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1}))
  cfg, params = import_model(src, tokenizer, mesh, **run_options)
  config = config_lib.pretrain_config("tiny")
  config.model = ml_collections.ConfigDict(dataclasses.asdict(cfg))
  config.data.tokenizer = ""
  config.data.seq_len = min(config.data.seq_len, cfg.max_seq_len)
  config.init.hf_path = str(pathlib.Path(src).absolute())
  config.init.step = 0
  from jaxllm.inference import runs  # runs imports this module (HF init)
  runs.save_run(dst, config, params, tokenizer, 0)
  if jax.process_index() == 0:
    (dst / "import.json").write_text(json.dumps(
        {"source": str(pathlib.Path(src).absolute()), "family": hf_config.family_of(cfg),
         "added_tokens": added, "vocab_size": cfg.vocab_size}, indent=2) + "\n")
  return dst


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


def export_run(workdir, dst, *, step: int | None = None, family: str | None = None,
               dtype: str = "float32", max_shard_bytes: int = 5 * 2**30) -> pathlib.Path:
  """export() of a run's newest (or given) checkpoint; a LoRA run is merged into its base, an
  int8 run (experiments/quantize.py) is dequantized (transformers reads float weights)."""
  from jaxllm.inference import runs  # runs imports this module (HF init)
  run = runs.load_run(workdir, step)
  if runs.is_reward_run(run.config):
    raise UserError(f"{workdir} is a reward-model run; only language models export to a Hugging "
                    "Face CausalLM directory.")
  params = quantize.as_float(run.params, run.model.cfg)
  return export(params, quantize.float_config(run.model.cfg), run.tokenizer, dst, family=family,
                dtype=dtype, max_shard_bytes=max_shard_bytes)
