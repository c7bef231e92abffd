"""Run directories: what a stage writes, how the next stage or an inference script reads it.

A run directory holds config.json (the resolved config: how to build the model, and what wrote
it), checkpoints/STEP (orbax; jaxllm/train/checkpoint.py) and tokenizer.json with
tokenizer_config.json (the run's tokenizer, copied in by every stage that starts from another
run). The kind of a run is written, never guessed:

  config.stage       the recipe that wrote it: pretrain, sft, reward_model, dpo, rl, distill,
                     prune, quantize or hf_import (experiments/convert.py --hf_dir)
  config.value_head  True when its checkpoints hold PolicyWithValue params (PPO)
  config.init.*      the run (or Hugging Face directory) it started from, that run's step and,
                     as config.init.stage, that run's lineage (below)

`lineage`: what the params are as a language model. prune and quantize keep what they compress
(an SFT model pruned is still a chat model), so their lineage is their init run's; every other
stage is its own. `model_kind`: "reward_model", "chat" (lineage sft, dpo or rl) or "base".

`load_run` builds the model a run's checkpoints hold and restores them: a reward model, the LM of
a PPO policy (its value head dropped), a LoRA run merged into the base it started from (through
int8 for QLoRA), or a plain Transformer (int8 weights when config.model.quant says so).
`start_from` sets up a stage from config.init.checkpoint or config.init.hf_path; `save_run`
writes params as a run; `import_hf` and `export_hf` convert whole Hugging Face directories
(the params- and tokenizer-level conversions are in jaxllm/interop).
"""

import dataclasses
import difflib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from jaxllm import config as config_lib
from jaxllm import rundir, storage
from jaxllm.compress import quantize
from jaxllm.data import chat as chat_lib
from jaxllm.data import inputs
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import ConfigError, UserError
from jaxllm.inference import generate as generate_lib
from jaxllm.inference import sampler as sampler_lib
from jaxllm.interop import hf_config, hf_models, hf_tokenizer, hf_weights
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.models.config import ModelConfig
from jaxllm.models.lora import LoraConfig, LoraModel
from jaxllm.models.params import init_params_fn, params_shardings, unbox
from jaxllm.models.reward import PolicyWithValue, RewardModel
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.train import checkpoint as ckpt_lib

STAGES = ("pretrain", "sft", "reward_model", "dpo", "rl", "distill", "prune", "quantize",
          "hf_import")
CHAT_STAGES = ("sft", "dpo", "rl")  # trained on the chat template
_KEEP_LINEAGE = ("prune", "quantize")  # compress the run they start from, whatever it is


@dataclasses.dataclass
class Run:
  """A trained run loaded for use (`load_run`): its config, model, params, tokenizer, step.

    run = jaxllm.load_run("runs/pipeline/sft")
    run.generate(["What is 3 + 4?"], max_new_tokens=32)   # -> ["3 + 4 = 7\nAnswer: 7"]
  """
  config: ml_collections.ConfigDict
  model: Transformer | RewardModel
  params: Any
  tokenizer: Tokenizer
  step: int
  mesh: Mesh | None = dataclasses.field(default=None, repr=False, compare=False)
  rules: tuple = dataclasses.field(default=(), repr=False, compare=False)
  _sampler: Any = dataclasses.field(default=None, repr=False, compare=False)

  def prompt_ids(self, prompt: str | Sequence[dict], chat: bool | None = None
                 ) -> tuple[list[int], list[int]]:
    """(ids, stop ids) of one prompt: for a chat run (or chat=True) a user turn of the chat
    template (or the given messages) ending where the assistant writes, stopping at the end of
    its turn; otherwise the text after the tokenizer's own prefix (BOS), stopping at EOS."""
    tok = self.tokenizer
    if chat is None:
      chat = model_kind(self.config) == "chat"
    if chat:
      messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
      ids, _ = chat_lib.render_chat(tok, list(messages), add_generation_prompt=True)
      return ids, chat_lib.stop_ids(tok)
    if not isinstance(prompt, str):
      raise UserError("a list of messages needs the chat template; pass chat=True (a chat run: "
                      "SFT, DPO, RL) or a plain string.")
    ids = tok.encode_prompt(prompt)
    if not ids:
      raise UserError("the prompt is empty and the tokenizer starts prompts with no BOS token; "
                      "give a non-empty prompt.")
    return ids, [] if tok.eos_id is None else [tok.eos_id]

  def generate(self, prompts: Sequence[str | Sequence[dict]], max_new_tokens: int = 64, *,
               chat: bool | None = None, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int = 0, raw: bool = False, truncate: bool = False
               ) -> list[str]:
    """The completion of each prompt (a string; for chat, also a list of messages) as text.

    Chat runs (SFT, DPO, RL) render the chat template unless chat=False; base runs take plain
    text. Greedy at temperature 0. Special tokens are left out of the text unless `raw`. A
    prompt that does not fit the model's context with max_new_tokens after it is refused, or
    with `truncate` cut to its last tokens. The id-level Sampler is jaxllm.inference.sampler.
    """
    if is_reward_model(self.config):
      raise UserError("a reward-model run scores replies and does not generate; load a language "
                      "model run (pretraining, SFT, DPO, RL).")
    if isinstance(prompts, str):
      prompts = [prompts]
    if self._sampler is None:
      self._sampler = sampler_lib.Sampler(self.model, self.params, self.tokenizer.pad_id,
                                          mesh=self.mesh, rules=self.rules,
                                          vocab_limit=self.tokenizer.vocab_size)
    context, specials = self.model.cfg.max_seq_len, self.tokenizer.special_ids
    batch, stops = [], []
    for i, prompt in enumerate(prompts):
      ids, stops = self.prompt_ids(prompt, chat)
      batch.append(generate_lib.fit_to_context(
          ids, max_new_tokens, context, truncate=truncate,
          keep_first=len(self.tokenizer.bos_ids[:1]), what=f"prompt {i}"))
    completions = generate_lib.generate(self._sampler, batch, max_new_tokens,
                                        temperature=temperature, top_k=top_k, top_p=top_p,
                                        stop_tokens=stops, seed=seed)
    return [self.tokenizer.decode(ids if raw else [t for t in ids if t not in specials])
            for ids in completions]


def require_run_dir(path, field: str) -> None:
  """UserError naming `field` (the flag the user typed) when `path` is not a run directory,
  with the nearest run directory beside it when one is close."""
  path = storage.path(path)
  if (path / "config.json").is_file():
    return
  siblings = ([p.name for p in path.parent.iterdir() if (p / "config.json").is_file()]
              if path.parent.is_dir() else [])
  close = difflib.get_close_matches(path.name, siblings, n=1)
  hint = f" (did you mean {str(path.parent / close[0])!r}?)" if close else ""
  raise UserError(f"{field}={str(path)!r} is not a run directory: it has no config.json{hint}; "
                  "give the --workdir of a trained run.")


def read_config(workdir) -> ml_collections.ConfigDict:
  path = storage.path(workdir) / "config.json"
  if not path.is_file():
    raise UserError(f"{path} does not exist: --workdir must be a run directory written by a "
                    "training script (config.json, checkpoints/, tokenizer.json).")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def _legacy_stage(config) -> str:
  """The stage of a run written before config.stage existed, read off its config sections as
  jaxllm did then."""
  if "reward" in config:
    return "reward_model"
  if "rl" in config:
    return "rl"
  if "preference" in config:
    return "dpo"
  return "sft" if "lora" in config else "pretrain"


def stage_of(config) -> str:
  """config.stage: the recipe that wrote the run."""
  stage = config.get("stage") or _legacy_stage(config)
  if stage not in STAGES:
    raise UserError(f"config.stage={stage!r} is not one of {STAGES}; the run's config.json was "
                    "not written by jaxllm (or by a newer version).")
  return stage


def has_value_head(config) -> bool:
  """Whether the run's checkpoints hold PolicyWithValue params (the LM is params["backbone"])."""
  if "stage" not in config:  # written before config.value_head existed
    return config.get("rl", {}).get("advantage") == "gae" and "compressed" not in config
  return bool(config.get("value_head", False))


def lineage(config) -> str:
  """What the params are as a language model: the stage, or for prune and quantize the lineage
  of the run they compressed (config.init.stage)."""
  stage = stage_of(config)
  if stage in _KEEP_LINEAGE:
    return config.init.get("stage") or "pretrain"
  return stage


def model_kind(config) -> str:
  """"reward_model", "chat" (fine-tuned on the chat template) or "base"."""
  stage = lineage(config)
  if stage == "reward_model":
    return "reward_model"
  return "chat" if stage in CHAT_STAGES else "base"


def is_reward_model(config) -> bool:
  return stage_of(config) == "reward_model"


latest_step = rundir.latest_step


def run_tokenizer(workdir, config) -> Tokenizer:
  """WORKDIR/tokenizer.json (+ tokenizer_config.json), else the file config.data.tokenizer
  names."""
  path = storage.path(workdir) / "tokenizer.json"
  if path.is_file():
    return Tokenizer.from_file(workdir)
  named = config.get("data", {}).get("tokenizer", "")
  if not named or not storage.path(named).is_file():
    raise UserError(f"{path} does not exist and config.data.tokenizer={named!r} is not a file; "
                    "copy the run's tokenizer.json into the run directory.")
  return Tokenizer.from_file(named)


def _model_config(config) -> ModelConfig:
  # Inference: no dropout, no rematerialisation; parameters are unchanged by either.
  return dataclasses.replace(ModelConfig.from_dict(config.model), dropout_rate=0.0, remat="none")


def placement(config, mesh: Mesh | None = None, rules=None) -> tuple[Mesh, tuple]:
  """(mesh, logical rules) a run's params are loaded onto: the given ones; else, for a run whose
  training kept every param whole on each device (config.mesh without fsdp or tensor axes), one
  device of this process, where inference computes nothing twice (each process then works on
  its own); else the run's own config.mesh over the devices present when it fits them, else
  FSDP over every device (a run too large for one device, trained on another number of them)."""
  if rules is None:
    rules = sharding_lib.rules_from_config(config.get("mesh", {}).get(
        "rules", sharding_lib.DEFAULT_RULES))
  if mesh is not None:
    return mesh, rules
  sizes = config.get("mesh", {})
  if sizes.get("fsdp", 1) == 1 and sizes.get("tensor", 1) == 1:
    return mesh_lib.make_mesh(_ONE_DEVICE, jax.local_devices()[:1]), rules
  try:
    return mesh_lib.make_mesh(config.mesh), rules
  except ConfigError:  # trained on another number of devices
    return mesh_lib.make_mesh(ml_collections.ConfigDict(
        {"data": 1, "fsdp": -1, "tensor": 1})), rules


_ONE_DEVICE = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1})


def _restore(workdir, model, step: int | None, mesh: Mesh, rules) -> tuple[Any, int]:
  """The params of `model` from the run's checkpoint `step` (default: the newest), each read
  straight onto its sharding on `mesh`: a device reads only its own slice of the files."""
  shardings = params_shardings(model, mesh, rules, 8)
  abstract = unbox(jax.eval_shape(init_params_fn(model, 8), jax.random.key(0)))
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  checkpoints = storage.path(workdir) / "checkpoints"
  step = step if step is not None else latest_step(workdir)
  try:
    if step is None:
      raise FileNotFoundError(f"no step directories in {checkpoints}")
    params = ckpt_lib.restore_params(checkpoints, abstract, step)
  except FileNotFoundError as e:
    raise UserError(f"{checkpoints}: no checkpoint to load ({e}); train the run first.") from e
  return params, step


def lora_config(config) -> LoraConfig | None:
  """The run's LoRA settings (None for a run that trains all its params)."""
  lora = config.get("lora")
  return None if lora is None else LoraConfig.from_config(lora)


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


def require_language_model(run: "Run", field: str, workdir) -> None:
  """UserError naming `field` when the run is a reward model, not a language model."""
  if is_reward_model(run.config):
    raise UserError(f"{field}={str(workdir)!r} is a reward-model run; give a language model "
                    "(a pretraining, SFT, DPO or RL run).")


def load_run(workdir, step: int | None = None, *, bidirectional_ok: bool = False,
             mesh: Mesh | None = None, rules=None) -> Run:
  """The newest (or given) checkpoint's params, float32 as saved, read onto a mesh.

  Each param is restored straight onto its sharding (`placement`: the given mesh and rules, else
  the run's own config.mesh, else FSDP over every device), every device reading only its slice,
  so a run larger than one device loads wherever it was trained; with several processes each
  reads the slices of its own devices.
  A LoRA run's checkpoints hold its adapters only: they are merged into the params of the run
  it started from (config.init.checkpoint at config.init.step), so the result is a plain model.
  A masked-LM run (config.model.causal=False) is refused unless `bidirectional_ok`.
  """
  config = read_config(workdir)
  if not bidirectional_ok:
    require_causal(config, workdir)
  mesh, rules = placement(config, mesh, rules)
  on_mesh = dict(mesh=mesh, rules=rules)
  if is_reward_model(config):
    model = reward_model(config, _model_config(config))
    params, step = _restore(workdir, model, step, **on_mesh)
    return Run(config, model, params, run_tokenizer(workdir, config), step, **on_mesh)
  model = Transformer(_model_config(config))
  lora = lora_config(config)
  if lora is not None:  # merged adapters give a float model, whatever the base was held as
    model = Transformer(quantize.float_config(model.cfg))
  if has_value_head(config):
    params, step = _restore(workdir, PolicyWithValue(model.cfg), step, **on_mesh)
    params = params["backbone"]
  elif lora is None:
    params, step = _restore(workdir, model, step, **on_mesh)
  elif config.init.get("hf_path"):  # LoRA on an imported model: merge into the import
    base_params = hf_weights.load_params(config.init.hf_path, model.cfg, params_shardings(
        Transformer(model.cfg), mesh, rules, 8))
    adapters, step = _restore(workdir, LoraModel(model.clone(lora=lora)), step, **on_mesh)
    params = lora_lib.merge(_base_as_trained(base_params, model.cfg, config), adapters, lora)
  else:
    base_dir = lora_base_dir(config, workdir)
    base = load_run(base_dir, None if config.init.step < 0 else config.init.step, **on_mesh)
    adapters, step = _restore(workdir, LoraModel(model.clone(lora=lora)), step, **on_mesh)
    params = lora_lib.merge(_base_as_trained(base.params, model.cfg, config), adapters, lora)
  return Run(config, model, params, run_tokenizer(workdir, config), step, **on_mesh)


def lora_base_dir(config, workdir):
  """The run a LoRA run's adapters sit on: config.init.checkpoint (absolute since runs record it
  so), else a run of that name beside the LoRA run (a pipeline directory moved whole)."""
  given = config.init.checkpoint
  beside = storage.path(workdir).parent / storage.path(given).name if given else None
  for candidate in (storage.path(given) if given else None, beside):
    if candidate is not None and (candidate / "checkpoints").is_dir():
      return candidate
  raise UserError(f"{workdir} is a LoRA run whose base run config.init.checkpoint={given!r} has "
                  f"no checkpoints/ (nor has {str(beside)!r}); restore that directory or edit "
                  f"{storage.path(workdir) / 'config.json'} to point at it.")


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
  config.init.stage = "hf_import"
  return Run(config, Transformer(cfg), params, tokenizer, 0)


def start_from(config, workdir) -> Run | None:
  """Fine-tuning set-up from config.init.checkpoint or config.init.hf_path (None when both
  are empty).

  Loads that run (params only, read onto the stage's mesh: the optimizer starts fresh), copies
  its model config into `config.model` (the checkpoint fixes the shapes) and records the step it
  used in `config.init.step` and its lineage in `config.init.stage`; its tokenizer is written to
  WORKDIR (inputs.save_run_tokenizer: a run that has checkpoints refuses another one). A Hugging
  Face directory is imported with its chat format mapped to ours (jaxllm/interop), its params
  placed directly on the run's mesh.
  """
  if not init_source(config):
    return None
  if config.init.get("hf_path"):
    init = _start_from_hf(config)
  else:
    require_run_dir(config.init.checkpoint, "config.init.checkpoint")
    # Recorded absolute: the run reads it (a LoRA run's base) from any working directory.
    config.init.checkpoint = str(storage.absolute(config.init.checkpoint))
    # Read straight onto the stage's own mesh, where training wants the params.
    init = load_run(config.init.checkpoint, None if config.init.step < 0 else config.init.step,
                    bidirectional_ok="mlm" in config,  # continued masked-LM pretraining
                    mesh=mesh_lib.make_mesh(config.mesh),
                    rules=sharding_lib.rules_from_config(config.mesh.rules))
    if is_reward_model(init.config):
      raise UserError(f"config.init.checkpoint={config.init.checkpoint!r} is a reward-model "
                      "run; start from a language model (a pretraining or SFT run).")
    for key, value in init.config.model.items():
      if key != "causal":  # the stage's objective sets the attention direction, not the run
        config.model[key] = value
    config.init.step = init.step
    config.init.stage = lineage(init.config)
  inputs.save_run_tokenizer(init.tokenizer, workdir, f"the tokenizer of {init_source(config)}")
  return init


def save_run(dst, config: ml_collections.ConfigDict, params: Any, tokenizer: Tokenizer,
             step: int):
  """Writes `params` as a run directory load_run reads (local or gs://): config.json
  (config.stage must say what wrote it), the tokenizer, and checkpoints/STEP (params only).
  Refuses a directory that has checkpoints already."""
  dst = storage.path(dst)
  if config.get("stage") not in STAGES:
    raise ValueError(f"save_run needs config.stage in {STAGES}, got {config.get('stage')!r}.")
  if (dst / "checkpoints").exists():
    raise UserError(f"{dst / 'checkpoints'} exists; write into a new directory (or delete it).")
  if jax.process_index() == 0:
    dst.mkdir(parents=True, exist_ok=True)
    rundir.write_text(dst / "config.json", config.to_json_best_effort(indent=2) + "\n")
    chat_lib.save_pretrained(tokenizer, dst)
  checkpoints = ckpt_lib.Checkpoints(dst / "checkpoints", keep=1, async_save=False)
  checkpoints.save(step, {"params": params}, {})
  checkpoints.close()
  return dst


def import_hf(src, dst, **run_options: Any):
  """Writes run directory `dst` from Hugging Face directory `src`: config.json (the base config
  with the imported model, config.stage "hf_import"), checkpoints/0 (the params, read straight
  into FSDP shards over every local device), the mapped tokenizer and import.json (source,
  family, tokens added).

  sample.py, chat.py and evaluate.py take it as --workdir; sft.py, dpo.py, reward_model.py and
  rl.py as --config.init.checkpoint.
  """
  dst = storage.path(dst)
  if (dst / "checkpoints").exists():
    raise UserError(f"{dst / 'checkpoints'} exists; import into a new directory (or delete it).")
  tokenizer, added = hf_tokenizer.import_tokenizer(src)
  # Spread over every device (FSDP) as it is read, so the import fits where the model does.
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1}))
  cfg, params = hf_models.import_model(src, tokenizer, mesh, **run_options)
  config = config_lib.base_config("tiny", "hf_import")
  config.model = ml_collections.ConfigDict(dataclasses.asdict(cfg))
  config.data.tokenizer = ""
  config.data.seq_len = min(config.data.seq_len, cfg.max_seq_len)
  config.init.hf_path = str(pathlib.Path(src).absolute())
  config.init.step = 0
  save_run(dst, config, params, tokenizer, 0)
  if jax.process_index() == 0:
    (dst / "import.json").write_text(json.dumps(
        {"source": str(pathlib.Path(src).absolute()), "family": hf_config.family_of(cfg),
         "added_tokens": added, "vocab_size": cfg.vocab_size}, indent=2) + "\n")
  return dst


def export_hf(workdir, dst, *, step: int | None = None, family: str | None = None,
              dtype: str = "float32", max_shard_bytes: int = 5 * 2**30) -> pathlib.Path:
  """hf_models.export of a run's newest (or given) checkpoint; a LoRA run is merged into its
  base, an int8 run (experiments/quantize.py) is dequantized (transformers reads float
  weights). The run may be on gs://; `dst` is local (safetensors writes local files)."""
  storage.require_local(dst, "--out", "a Hugging Face directory is written with local file "
                        "I/O (safetensors)")
  run = load_run(workdir, step)
  require_language_model(run, "the run to export", workdir)
  params = quantize.as_float(run.params, run.model.cfg)
  return hf_models.export(params, quantize.float_config(run.model.cfg), run.tokenizer, dst,
                          family=family, dtype=dtype, max_shard_bytes=max_shard_bytes)
