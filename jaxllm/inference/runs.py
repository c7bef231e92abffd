"""A trained run directory, loaded for inference: config, model, params and tokenizer.

A run directory is what a training script (or experiments/convert.py --hf_to_jaxllm) writes:
config.json (how to build the model), checkpoints/ (orbax) and tokenizer.json (with
tokenizer_config.json naming its special tokens; or config.data.tokenizer naming a file).
A stage starts from a run directory (config.init.checkpoint) or from a Hugging Face model
directory (config.init.hf_path), see `start_from`. A reward-model
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

from jaxllm.compress import quantize
from jaxllm.data import chat
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import ConfigError, UserError
from jaxllm.interop import hf_config, hf_models, hf_tokenizer, hf_weights
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.models.config import ModelConfig
from jaxllm.models.lora import LoraConfig, LoraModel
from jaxllm.models.reward import PolicyWithValue, RewardModel
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
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
  """WORKDIR/tokenizer.json (+ tokenizer_config.json), else the file config.data.tokenizer
  names."""
  path = pathlib.Path(workdir) / "tokenizer.json"
  if path.is_file():
    return Tokenizer.from_file(workdir)
  named = config.get("data", {}).get("tokenizer", "")
  if not named or not pathlib.Path(named).is_file():
    raise UserError(f"{path} does not exist and config.data.tokenizer={named!r} is not a file; "
                    "copy the run's tokenizer.json into the run directory.")
  return Tokenizer.from_file(named)


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
  """A PPO run: its checkpoints hold PolicyWithValue params (the LM is params["backbone"]);
  not its compressed copy (experiments/quantize.py), which holds the LM's params only."""
  return config.get("rl", {}).get("advantage") == "gae" and "compressed" not in config


def reward_model(config, model_cfg) -> RewardModel:
  """The RewardModel a reward run trains: it keeps the LM head when config.reward.lm_weight > 0."""
  return RewardModel(model_cfg, lm_head=config.reward.get("lm_weight", 0.0) > 0)


def require_causal(config, workdir) -> None:
  """UserError naming the run when it is a masked LM (bidirectional): sampling, chat,
  perplexity, export and fine-tuning all read next-token predictions it does not make."""
  if not config.get("model", {}).get("causal", True):
    raise UserError(f"{workdir} is a masked-LM run (config.model.causal=False: bidirectional "
                    "attention), which cannot predict next tokens to sample, chat, score or "
                    "fine-tune; use a causal run (pretrained without an mlm section).")


def load_run(workdir, step: int | None = None, *, bidirectional_ok: bool = False) -> Run:
  """The newest (or given) checkpoint's params, on the default device, float32 as saved.

  A LoRA run's checkpoints hold its adapters only: they are merged into the params of the run
  it started from (config.init.checkpoint at config.init.step), so the result is a plain model.
  A masked-LM run (config.model.causal=False) is refused unless `bidirectional_ok`.
  """
  config = read_config(workdir)
  if not bidirectional_ok:
    require_causal(config, workdir)
  if is_reward_run(config):
    model = reward_model(config, _model_config(config))
    params, step = _restore(workdir, model, step)
    return Run(config, model, params, run_tokenizer(workdir, config), step)
  model = Transformer(_model_config(config))
  lora = lora_config(config)
  if lora is not None:  # merged adapters give a float model, whatever the base was held as
    model = Transformer(quantize.float_config(model.cfg))
  if has_value_head(config):
    params, step = _restore(workdir, PolicyWithValue(model.cfg), step)
    params = params["backbone"]
  elif lora is None:
    params, step = _restore(workdir, model, step)
  elif config.init.get("hf_path"):  # LoRA on an imported model: merge into the import
    base_params = hf_weights.load_params(config.init.hf_path, model.cfg)
    adapters, step = _restore(workdir, LoraModel(model.clone(lora=lora)), step)
    params = lora_lib.merge(_base_as_trained(base_params, model.cfg, config), adapters, lora)
  else:
    base_dir = config.init.checkpoint
    if not base_dir or not (pathlib.Path(base_dir) / "checkpoints").is_dir():
      raise UserError(f"{workdir} is a LoRA run whose base run config.init.checkpoint="
                      f"{base_dir!r} has no checkpoints/; restore that directory or edit "
                      f"{pathlib.Path(workdir) / 'config.json'} to point at it.")
    base = load_run(base_dir, None if config.init.step < 0 else config.init.step)
    adapters, step = _restore(workdir, LoraModel(model.clone(lora=lora)), step)
    params = lora_lib.merge(_base_as_trained(base.params, model.cfg, config), adapters, lora)
  return Run(config, model, params, run_tokenizer(workdir, config), step)


def _base_as_trained(params, cfg: ModelConfig, config) -> Any:
  """A LoRA run's base params as its adapters saw them: through int8 for QLoRA, in float32."""
  cfg, params = quantize.frozen_base(params, cfg, config.lora.get("base_quant", "none"))
  return quantize.as_float(params, cfg)


def init_source(config) -> str:
  """What a stage starts from: config.init.checkpoint or config.init.hf_path ('' for neither)."""
  checkpoint, hf_path = config.init.checkpoint, config.init.get("hf_path", "")
  if checkpoint and hf_path:
    raise ConfigError(f"config.init.checkpoint={checkpoint!r} and config.init.hf_path="
                      f"{hf_path!r} are both set; a run starts from one of them.")
  return checkpoint or hf_path


def require_init(config, what: str) -> None:
  """ConfigError unless the stage has an init run or HF model (`what` names a suitable one)."""
  if not init_source(config):
    raise ConfigError(f"config.init.checkpoint and config.init.hf_path are empty; set one to "
                      f"{what} (--config.init.checkpoint=RUN_DIR or "
                      "--config.init.hf_path=HF_MODEL_DIR).")


def _start_from_hf(config) -> Run:
  """Imports config.init.hf_path with its params placed on the run's mesh (each device reads its
  own block), its architecture written into config.model (dtype, remat, scan_layers ... stay).
  The vocabulary is padded to a multiple of 128 and of its mesh axes (the sampler never picks
  the padding ids: it samples below the tokenizer's size)."""
  hf_path = config.init.hf_path
  tokenizer, _ = hf_tokenizer.import_tokenizer(hf_path)
  options = {k: config.model[k] for k in hf_config.RUN_OPTIONS if k in config.model}
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  cfg, params = hf_models.import_model(hf_path, tokenizer, mesh, rules,
                                       hf_models.mesh_vocab_multiple(mesh, rules), **options)
  for key, value in dataclasses.asdict(cfg).items():
    config.model[key] = value
  config.init.step = 0
  return Run(config, Transformer(cfg), params, tokenizer, 0)


def start_from(config, workdir) -> Run | None:
  """Fine-tuning set-up from config.init.checkpoint or config.init.hf_path (None when both
  are empty).

  Loads that run (params only: the optimizer starts fresh), copies its model config into
  `config.model` (the checkpoint fixes the shapes) and records the step it used in
  `config.init.step`; process 0 writes its tokenizer to WORKDIR (tokenizer.json and
  tokenizer_config.json). A Hugging Face directory is imported with its chat format mapped to
  ours (jaxllm/interop), its params placed directly on the run's mesh.
  """
  if not init_source(config):
    return None
  if config.init.get("hf_path"):
    init = _start_from_hf(config)
  else:
    init = load_run(config.init.checkpoint, None if config.init.step < 0 else config.init.step,
                    bidirectional_ok="mlm" in config)  # continued masked-LM pretraining
    if is_reward_run(init.config):
      raise UserError(f"config.init.checkpoint={config.init.checkpoint!r} is a reward-model "
                      "run; start from a language model (a pretraining or SFT run).")
    for key, value in init.config.model.items():
      if key != "causal":  # the stage's objective sets the attention direction, not the run
        config.model[key] = value
    config.init.step = init.step
  if jax.process_index() == 0:
    chat.save_pretrained(init.tokenizer, workdir)
  return init


def _latest_step(checkpoints: pathlib.Path) -> int:
  steps = [int(p.name) for p in checkpoints.glob("*") if p.name.isdigit()]
  if not steps:
    raise FileNotFoundError(f"no step directories in {checkpoints}")
  return max(steps)


def save_run(dst, config: ml_collections.ConfigDict, params: Any, tokenizer: Tokenizer,
             step: int) -> pathlib.Path:
  """Writes `params` as a run directory load_run reads: config.json, the tokenizer, and
  checkpoints/STEP (params only). Refuses a directory that has checkpoints already."""
  dst = pathlib.Path(dst)
  if (dst / "checkpoints").exists():
    raise UserError(f"{dst / 'checkpoints'} exists; write into a new directory (or delete it).")
  if jax.process_index() == 0:
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    chat.save_pretrained(tokenizer, dst)
  checkpoints = ckpt_lib.Checkpoints(dst / "checkpoints", keep=1, async_save=False)
  checkpoints.save(step, {"params": params}, {})
  checkpoints.close()
  return dst
