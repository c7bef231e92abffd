"""A trained run directory, loaded for inference: config, model, params and tokenizer.

A run directory is what a training script writes: config.json (how to build the model),
checkpoints/ (orbax) and tokenizer.json (or config.data.tokenizer naming one). A reward-model
run (its config has a `reward` section) loads as a RewardModel, any other as a Transformer (a
PPO run's policy without its value head).
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
from jaxllm.models import lora as lora_lib
from jaxllm.models.config import ModelConfig
from jaxllm.models.lora import LoraConfig, LoraModel
from jaxllm.models.reward import PolicyWithValue, RewardModel
from jaxllm.train import checkpoint as ckpt_lib
from jaxllm.train.state import init_params_fn, unbox


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  model: Transformer | RewardModel
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


def _model_config(config) -> ModelConfig:
  # Inference: no dropout, no rematerialisation; parameters are unchanged by either.
  return dataclasses.replace(ModelConfig.from_dict(config.model), dropout_rate=0.0, remat="none")


def _restore(workdir, model, step: int | None) -> tuple[Any, int]:
  abstract = unbox(jax.eval_shape(init_params_fn(model, 8), jax.random.key(0)))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)
  checkpoints = pathlib.Path(workdir) / "checkpoints"
  try:
    step = step if step is not None else _latest_step(checkpoints)
    params = ckpt_lib.restore_params(checkpoints, abstract, step)
  except FileNotFoundError as e:
    raise UserError(f"{checkpoints}: no checkpoint to load ({e}); train the run first.") from e
  return jax.tree.map(jnp.asarray, params), step


def lora_config(config) -> LoraConfig | None:
  """The run's LoRA settings (None for a run that trains all its params)."""
  lora = config.get("lora")
  return None if lora is None else LoraConfig.from_config(lora)


def is_reward_run(config) -> bool:
  return "reward" in config


def has_value_head(config) -> bool:
  """A PPO run: its checkpoints hold PolicyWithValue params (the LM is params["backbone"])."""
  return config.get("rl", {}).get("advantage") == "gae"


def reward_model(config, model_cfg) -> RewardModel:
  """The RewardModel a reward run trains: it keeps the LM head when config.reward.lm_weight > 0."""
  return RewardModel(model_cfg, lm_head=config.reward.get("lm_weight", 0.0) > 0)


def load_run(workdir, step: int | None = None) -> Run:
  """The newest (or given) checkpoint's params, on the default device, float32 as saved.

  A LoRA run's checkpoints hold its adapters only: they are merged into the params of the run
  it started from (config.init.checkpoint at config.init.step), so the result is a plain model.
  """
  config = read_config(workdir)
  if is_reward_run(config):
    model = reward_model(config, _model_config(config))
    params, step = _restore(workdir, model, step)
    return Run(config, model, params, run_tokenizer(workdir, config), step)
  model = Transformer(_model_config(config))
  lora = lora_config(config)
  if has_value_head(config):
    params, step = _restore(workdir, PolicyWithValue(model.cfg), step)
    params = params["backbone"]
  elif lora is None:
    params, step = _restore(workdir, model, step)
  else:
    base_dir = config.init.checkpoint
    if not base_dir or not (pathlib.Path(base_dir) / "checkpoints").is_dir():
      raise UserError(f"{workdir} is a LoRA run whose base run config.init.checkpoint="
                      f"{base_dir!r} has no checkpoints/; restore that directory or edit "
                      f"{pathlib.Path(workdir) / 'config.json'} to point at it.")
    base = load_run(base_dir, None if config.init.step < 0 else config.init.step)
    adapters, step = _restore(workdir, LoraModel(model.clone(lora=lora)), step)
    params = lora_lib.merge(base.params, adapters, lora)
  return Run(config, model, params, run_tokenizer(workdir, config), step)


def start_from(config, workdir) -> Run | None:
  """Fine-tuning set-up from config.init.checkpoint (None when it is empty).

  Loads that run (params only: the optimizer starts fresh), copies its model config into
  `config.model` (the checkpoint fixes the shapes) and records the step it used in
  `config.init.step`; process 0 copies its tokenizer to WORKDIR/tokenizer.json.
  """
  if not config.init.checkpoint:
    return None
  init = load_run(config.init.checkpoint,
                  None if config.init.step < 0 else config.init.step)
  if is_reward_run(init.config):
    raise UserError(f"config.init.checkpoint={config.init.checkpoint!r} is a reward-model run; "
                    "start from a language model (a pretraining or SFT run).")
  for key, value in init.config.model.items():
    config.model[key] = value
  config.init.step = init.step
  if jax.process_index() == 0:
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    init.tokenizer.save(pathlib.Path(workdir) / "tokenizer.json")
  return init


def _latest_step(checkpoints: pathlib.Path) -> int:
  steps = [int(p.name) for p in checkpoints.glob("*") if p.name.isdigit()]
  if not steps:
    raise FileNotFoundError(f"no step directories in {checkpoints}")
  return max(steps)
