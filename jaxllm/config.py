"""The base run config (ml_collections): the sections every training stage reads, the config
files' argument parser, and the checks of those sections.

Each stage's own defaults and checks live with its recipe (jaxllm/recipes/<stage>.py:
`default_config`, `validate`), built on `base_config`. Config files in configs/ call a recipe's
`default_config(size)` and change what they need; every field can be overridden on the command
line, e.g. `--config.train.num_steps=50`.
"""

import dataclasses
import math
import pathlib
from typing import Any

import ml_collections

from jaxllm.errors import ConfigError
from jaxllm.models.config import QUANTS, ModelConfig, get_size
from jaxllm.parallel.sharding import DEFAULT_RULES


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """'steps=100,size=tiny' -> ConfigDict, typed by the defaults (big_vision style)."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise ConfigError(f"config argument {item!r}: expected key=value with key in "
                        f"{sorted(defaults)}.")
    kind = type(defaults[key])
    if kind is bool:
      if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ConfigError(f"config argument {item!r}: {key} takes true or false.")
      out[key] = value.lower() in ("1", "true", "yes")
      continue
    try:
      out[key] = kind(value)
    except ValueError:
      raise ConfigError(f"config argument {item!r}: {key} takes a {kind.__name__}, such as "
                        f"{key}={defaults[key]}.") from None
  return out


def import_file(path):
  """A Python file imported as a module named after its folder and stem (a config file, whose
  get_config and get_sweep it holds, or an experiment script, whose run function it holds)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"{path} does not exist; give a file such as configs/pretrain/tiny.py.")
  spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
  """get_config(arg) of a config file (for configs built from other configs' files)."""
  return import_file(path).get_config(arg)


def base_config(size: str = "tiny", stage: str = "pretrain") -> ml_collections.ConfigDict:
  """The fields every training stage reads (model, data, train, optimizer, mesh, init,
  distributed, benchmark), with defaults for the named model size; config.stage names the
  recipe (jaxllm/runs.py: a run's kind is written, not guessed)."""
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.value_head = False  # True: checkpoints hold PolicyWithValue params (set by PPO, recipes/rl.py)
  c.seed = 0
  c.model = dataclasses.asdict(get_size(size))
  c.model.lock()

  c.data = ml_collections.ConfigDict()
  # "world" (the embedded world, jaxllm/data/world.py), a glob of local .txt/.jsonl(.gz)/.html
  # files, or "tfds:NAME"; a mixture is "SPEC@WEIGHT;SPEC@WEIGHT".
  c.data.source = "world"
  c.data.eval_input = ""  # eval files for local globs; empty: hold out eval_fraction of records
  c.data.eval_fraction = 0.01  # by a hash of the record id, so it does not depend on file order
  c.data.train_split = "train"  # split names for tfds: catalog datasets
  c.data.eval_split = "validation"
  c.data.text_field = "text"  # JSONL field (or catalog feature) holding the text
  c.data.separator = ""  # .txt files: empty = one document per file; or "\n\n", "%", ...
  c.data.skip_malformed = False  # skip and count bad JSONL lines instead of failing on them
  c.data.data_dir = ""  # prepared ArrayRecord datasets; empty: WORKDIR/data
  c.data.manual_dir = ""  # files a tfds: catalog dataset would download, for offline machines
  c.data.world_seed = 0
  # How many records of each task kind the world generates (its people, towns and goods do not
  # change): e.g. --config.data.world_sizes.preferences=10000 for more preference pairs.
  c.data.world_sizes = ml_collections.ConfigDict(
      {"sft": 2000, "preferences": 1000, "rl": 1000, "kb_questions": 500})
  # One text file as a token stream instead of `source`: split 90/10 into train/validation,
  # random windows of seq_len per batch (nanoGPT's data path; jaxllm/data/stream.py).
  c.data.path = ""
  c.data.tokenizer_kind = "bpe"  # for data.path: bpe | char (one id per character)
  c.data.tokenizer = ""  # a tokenizer.json; empty: train a byte-level BPE -> WORKDIR/tokenizer.json
  c.data.tokenizer_vocab_size = 1024
  c.data.tokenizer_train_docs = 200_000  # per dataset, the first records of the train split
  c.data.seq_len = 128
  c.data.packing = "first_fit"  # first_fit | best_fit
  c.data.packing_bins = 0  # rows packed at a time; 0: the rows of one data shard's batch
  c.data.prefetch = 2  # batches prepared ahead on a thread
  c.data.read_threads = 0  # threads reading and tokenizing records ahead (0: in line, fastest
  #                          here with a fast tokenizer; see docs/benchmarks.md)
  c.data.num_workers = 0  # >0: grain worker processes (tokenizing, packing) instead of a thread
  # True: each process reads only the records of its data shards. False: every process reads
  # all and keeps its rows of each global batch.
  c.data.shard_by_process = True
  # Data shards (each its own stream, batch_size / shards rows of every batch); 0: one per
  # process. Fixed, the batches do not depend on the number of processes, and a checkpoint
  # resumes on any process count that divides it (jaxllm/data/batching.py).
  c.data.shards = 0

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 200
  c.train.batch_size = 16  # global, in sequences
  c.train.microbatches = 1  # gradient accumulation steps per batch
  c.train.z_loss = 0.0
  # > 0: the cross-entropy runs over pieces of this many positions, never holding the whole
  # float32 [batch, seq_len, vocab] logits (jaxllm/objectives/lm.py); must divide data.seq_len.
  c.train.loss_chunk = 0
  c.train.log_every = 10
  c.train.eval_every = 100
  c.train.eval_at_start = False  # also evaluate the initial params (step 0) of a fresh run
  c.train.eval_batches = 4
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 3
  c.train.async_checkpointing = True
  c.train.max_nonfinite_in_row = 20
  c.train.peak_flops_per_device = 0.0  # 0: look up the device in jaxllm/train/metrics.py
  # Memory a device may use, checked against the compiled step before the first step
  # (jaxllm/train/memory.py); 0: the device's limit (CPU: host memory / local devices).
  c.train.device_memory_gib = 0.0
  # XLA options for the compiled train and eval steps: "auto" (the measured-fastest for the
  # backend, jaxllm/train/step.py), "" (XLA's defaults) or "xla_name=value,xla_name=value".
  c.train.xla_options = "auto"

  # experiments/benchmark.py: timed train steps after compiling and warm-up, then the sampler.
  c.benchmark = ml_collections.ConfigDict()
  c.benchmark.steps = 20
  c.benchmark.warmup = 5
  c.benchmark.sampler = True
  c.benchmark.sample_batch = 8
  c.benchmark.prompt_len = 128
  c.benchmark.new_tokens = 128
  c.benchmark.repeats = 5

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 3e-4
  c.optimizer.schedule = "cosine"  # cosine | linear | constant (after warmup)
  c.optimizer.warmup_steps = 20
  c.optimizer.min_lr_ratio = 0.1
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.95
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.1
  c.optimizer.clip_norm = 1.0
  # Regex over param paths ('layer_0/mlp/up/kernel'): entries zero at the start stay zero
  # (pruning masks kept through a recovery fine-tune; jaxllm/train/optimizer.py keep_zeros).
  c.optimizer.keep_zeros = ""

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all remaining devices
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.rules = tuple(DEFAULT_RULES)

  c.init = ml_collections.ConfigDict()
  # A run directory to start from: its params (fresh optimizer), model config and tokenizer.
  # Pretraining from a checkpoint is continued pretraining / domain adaptation.
  c.init.checkpoint = ""
  c.init.step = -1  # its checkpoint step; -1: the latest (the run records the step it used)
  c.init.stage = ""  # recorded from the init run (its lineage, jaxllm/runs.py); not set by hand
  # Or a Hugging Face model directory (config.json, safetensors, tokenizer.json) to import:
  # its architecture replaces config.model (dtype, remat, scan_layers and attention_impl stay).
  c.init.hf_path = ""

  c.distributed = distributed_config()
  c.logging = logging_config()
  return c


def distributed_config() -> ml_collections.ConfigDict:
  """config.distributed: whether and how to join a multi-process job (jax.distributed;
  parallel/mesh.maybe_initialize_distributed)."""
  c = ml_collections.ConfigDict()
  c.initialize = False
  c.coordinator_address = ""  # empty: auto-detect (TPU VM, SLURM)
  c.num_processes = 1
  c.process_id = 0
  return c


def logging_config() -> ml_collections.ConfigDict:
  """config.logging: where metrics go besides the run directory's own files (metrics.jsonl,
  perf.jsonl, TensorBoard): Weights & Biases (jaxllm/train/wandb_logging.py), off by default."""
  c = ml_collections.ConfigDict()
  c.wandb = ml_collections.ConfigDict({
      "enabled": False,
      "project": "jaxllm",
      "entity": "",  # "": the account's default
      "name": "",  # "": the run directory's name
      "group": "",  # runs shown together (the pipeline sets it to its directory's name)
      "tags": "",  # comma-separated
      "mode": "",  # online | offline | disabled; "": WANDB_MODE, else online
  })
  return c


def on_accelerators(c: ml_collections.ConfigDict, remat: str) -> ml_collections.ConfigDict:
  """`c` set for GPU/TPU: bfloat16 compute (float32 params), scanned layers with `remat`,
  cuDNN flash attention on GPU, FSDP over every device."""
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  c.model.remat = remat
  c.model.attention_impl = "auto"
  c.mesh.data = 1
  c.mesh.fsdp = -1
  return c


def validate_early(config: ml_collections.ConfigDict) -> None:
  """`validate` before anything is prepared or written (jaxllm/rundir.py claims_workdir runs it):
  on a copy whose vocab_size 0 ("the tokenizer's", resolved later) stands in as 1. Configs
  without model and train sections (the tokenizer's, the pipeline's) are left alone."""
  if "model" not in config or "train" not in config:
    return
  copy = ml_collections.ConfigDict(config.to_dict())
  if copy.model.get("vocab_size") == 0:
    copy.model.vocab_size = 1
  validate(copy)


def validate(config: ml_collections.ConfigDict) -> ModelConfig:
  """Checks the fields that do not depend on the devices; returns the model config."""
  model_cfg = ModelConfig.from_dict(config.model)
  t, d = config.train, config.data
  if config.get("value_head") and config.get("stage") != "rl":
    raise ConfigError(f"config.value_head=True: only PPO (stage rl with config.rl.advantage="
                      f"'gae') trains a value head, not stage {config.get('stage')!r}; set False.")
  lora = config.get("lora")
  if lora is not None and lora.get("base_quant", "none") not in QUANTS:
    raise ConfigError(f"config.lora.base_quant={lora.base_quant!r} is not one of {QUANTS}.")
  if model_cfg.quant != "none" and (lora is None or lora.rank == 0):
    raise ConfigError(
        f"config.model.quant={model_cfg.quant!r}: quantized weights cannot be trained; "
        "fine-tune LoRA adapters over them (config.lora.rank > 0), or start from the float run.")
  for name in ("num_steps", "batch_size", "microbatches", "log_every", "eval_every",
               "checkpoint_every", "keep_checkpoints", "max_nonfinite_in_row"):
    if t[name] <= 0:
      raise ConfigError(f"config.train.{name}={t[name]} must be positive.")
  if t.batch_size % t.microbatches:
    raise ConfigError(f"config.train.batch_size={t.batch_size} is not divisible by "
                      f"config.train.microbatches={t.microbatches}.")
  if model_cfg.position == "learned" and d.seq_len > model_cfg.max_seq_len:
    raise ConfigError(f"config.data.seq_len={d.seq_len} exceeds config.model.max_seq_len="
                      f"{model_cfg.max_seq_len} (learned positions); lower one or raise the other.")
  chunk = t.loss_chunk
  if chunk < 0 or (chunk and d.seq_len % chunk):
    raise ConfigError(f"config.train.loss_chunk={chunk} must divide config.data.seq_len="
                      f"{d.seq_len}; pick a divisor, or 0 for the whole logits at once.")
  o = config.optimizer
  for name in ("lr", "min_lr_ratio", "b1", "b2", "eps", "weight_decay", "clip_norm"):
    value = o.get(name)
    if value is not None and not (math.isfinite(value) and value >= 0):
      raise ConfigError(f"config.optimizer.{name}={value} must be a finite number >= 0.")
  if config.optimizer.schedule not in ("cosine", "linear", "constant"):
    raise ConfigError(f"config.optimizer.schedule={config.optimizer.schedule!r} is not one of "
                      "cosine, linear, constant.")
  if not model_cfg.causal and "mlm" not in config:
    raise ConfigError("config.model.causal=False (bidirectional attention) is only trained by "
                      "masked LM, which needs a config.mlm section; set config.model.causal="
                      "True or start from jaxllm.recipes.pretrain.mlm_config "
                      "(configs/pretrain/mlm_tiny.py).")
  return model_cfg
