"""A trained run directory, loaded for inference: config, model, params and tokenizer.

A run directory is what a training script writes: config.json (how to build the model),
checkpoints/ (orbax) and tokenizer.json (or config.data.tokenizer naming one).
"""

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError
from jaxllm.models import Transformer
from jaxllm.models.config import ModelConfig
from jaxllm.train import checkpoint as ckpt_lib
from jaxllm.train.state import init_params_fn, unbox


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  model: Transformer
  params: Any
  tokenizer: Tokenizer
  step: int


def read_config(workdir) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise UserError(f"{path} does not exist: --workdir must be a run directory written by a "
                    "training script (config.json, checkpoints/, tokenizer.json).")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def run_tokenizer(workdir, config) -> Tokenizer:
  """WORKDIR/tokenizer.json, else the file config.data.tokenizer names."""
  path = pathlib.Path(workdir) / "tokenizer.json"
  if not path.is_file():
    named = config.get("data", {}).get("tokenizer", "")
    if not named or not pathlib.Path(named).is_file():
      raise UserError(f"{path} does not exist and config.data.tokenizer={named!r} is not a file; "
                      "copy the run's tokenizer.json into the run directory.")
    path = pathlib.Path(named)
  return Tokenizer.from_file(path)


def load_run(workdir, step: int | None = None) -> Run:
  """The newest (or given) checkpoint's params, on the default device, float32 as saved."""
  config = read_config(workdir)
  model_cfg = ModelConfig.from_dict(config.model)
  # Inference: no dropout, no rematerialisation; parameters are unchanged by either.
  model = Transformer(dataclasses.replace(model_cfg, dropout_rate=0.0, remat="none"))
  abstract = unbox(jax.eval_shape(init_params_fn(model, 8), jax.random.key(0)))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)
  checkpoints = pathlib.Path(workdir) / "checkpoints"
  try:
    manager_step = step if step is not None else _latest_step(checkpoints)
    params = ckpt_lib.restore_params(checkpoints, abstract, manager_step)
  except FileNotFoundError as e:
    raise UserError(f"{checkpoints}: no checkpoint to load ({e}); train the run first.") from e
  params = jax.tree.map(jnp.asarray, params)
  return Run(config, model, params, run_tokenizer(workdir, config), manager_step)


def _latest_step(checkpoints: pathlib.Path) -> int:
  steps = [int(p.name) for p in checkpoints.glob("*") if p.name.isdigit()]
  if not steps:
    raise FileNotFoundError(f"no step directories in {checkpoints}")
  return max(steps)
