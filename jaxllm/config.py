"""Default run config (ml_collections) shared by the config files, its argument parser and checks.

Config files in configs/ call `pretrain_config(size)` and change what they need; every field can
be overridden on the command line, e.g. `--config.train.num_steps=50`.
"""

import dataclasses
import pathlib
from typing import Any

import ml_collections

from jaxllm.errors import ConfigError
from jaxllm.models.config import QUANTS, ModelConfig, get_size
from jaxllm.models.lora import DEFAULT_TARGETS as DEFAULT_LORA_TARGETS
from jaxllm.objectives import policy as policy_lib
from jaxllm.objectives.preference import LOSS_TYPES, REFERENCES
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


def pretrain_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Every field a pretraining run reads, with defaults for the named model size."""
  c = ml_collections.ConfigDict()
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
  # Or a Hugging Face model directory (config.json, safetensors, tokenizer.json) to import:
  # its architecture replaces config.model (dtype, remat, scan_layers and attention_impl stay).
  c.init.hf_path = ""

  c.distributed = ml_collections.ConfigDict()
  c.distributed.initialize = False
  c.distributed.coordinator_address = ""  # empty: auto-detect (TPU VM, SLURM)
  c.distributed.num_processes = 1
  c.distributed.process_id = 0
  return c


def accelerator_pretrain_config(size: str, arg: str | None, seq_len: int,
                                batch: int = 64) -> ml_collections.ConfigDict:
  """Pretraining on GPU/TPU: bfloat16 compute, FSDP over all devices, scanned layers, remat.

  `arg` takes steps, batch and seq_len, e.g. 'steps=1000,batch=256,seq_len=1024'.
  """
  args = parse_arg(arg, steps=10_000, batch=batch, seq_len=seq_len)
  c = on_accelerators(pretrain_config(size), remat="save_dots")
  c.data.seq_len = args.seq_len
  c.data.tokenizer_vocab_size = 32768
  c.data.num_workers = 4
  c.train.num_steps = args.steps
  c.train.batch_size = args.batch
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.optimizer.lr = 6e-4
  c.optimizer.warmup_steps = min(2000, args.steps // 10)
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


def mlm_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Masked-LM (BERT / RoBERTa) pretraining: a bidirectional model and the masking rates
  (jaxllm/objectives/mlm.py); the run's tokenizer gets the mask token as a special token."""
  c = pretrain_config(size)
  c.model.causal = False
  c.benchmark.sampler = False  # experiments/benchmark.py: nothing to sample from a masked LM
  c.mlm = ml_collections.ConfigDict()
  c.mlm.mask_rate = 0.15  # of the eligible tokens (real, not special), chosen for the loss
  c.mlm.mask_token_prob = 0.8  # of the chosen: replaced by mask_token
  c.mlm.random_token_prob = 0.1  # of the chosen: replaced by a random regular token
  c.mlm.mask_token = "<|mask|>"  # trained into the tokenizer, or added to a given one
  c.mlm.eval_seed = 0  # eval masks with this fixed key: eval numbers compare across steps
  return c


def validate_mlm(config: ml_collections.ConfigDict) -> None:
  """An mlm section needs a bidirectional model, and a bidirectional model an mlm section."""
  m, causal = config.get("mlm"), config.model.get("causal", True)
  if m is None:
    if not causal:
      raise ConfigError("config.model.causal=False (bidirectional attention) is only trained by "
                        "masked LM, which needs a config.mlm section; set config.model.causal="
                        "True or start from jaxllm.config.mlm_config (configs/pretrain/"
                        "mlm_tiny.py).")
    return
  if causal:
    raise ConfigError("config.mlm (masked LM) needs config.model.causal=False: a causal model "
                      "cannot see the tokens after a masked one; set --config.model.causal=False.")
  for name in ("mask_rate", "mask_token_prob", "random_token_prob"):
    if not 0.0 <= m[name] <= 1.0:
      raise ConfigError(f"config.mlm.{name}={m[name]} must be in [0, 1].")
  if m.mask_rate == 0.0:
    raise ConfigError("config.mlm.mask_rate=0.0 chooses no token to predict; set it in (0, 1] "
                      "(BERT: 0.15).")
  if m.mask_token_prob + m.random_token_prob > 1.0:
    raise ConfigError(f"config.mlm.mask_token_prob={m.mask_token_prob} + config.mlm."
                      f"random_token_prob={m.random_token_prob} exceeds 1; the rest of the "
                      "chosen tokens stay unchanged (BERT: 0.8 + 0.1).")
  if not m.mask_token:
    raise ConfigError("config.mlm.mask_token is empty; name the special token, e.g. '<|mask|>'.")


def sft_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Supervised fine-tuning on conversations: the pretraining fields, chat data, RAG data."""
  c = pretrain_config(size)
  c.data.seq_len = 256
  # "world" reads the world's SFT conversations; "world_rag" builds retrieval-augmented ones
  # (jaxllm.inference.retrieval.world_rag_conversations) into WORKDIR/rag_sft.jsonl.
  c.data.messages_field = "messages"
  c.data.rag = ml_collections.ConfigDict()
  c.data.rag.other_worlds = 12  # freshly generated worlds whose facts must be read, not recalled
  c.data.rag.k = 3  # passages per question
  c.data.rag.budget_tokens = 384  # passages + question, in tokens
  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 20
  # LoRA (jaxllm/models/lora.py): rank 0 fine-tunes every parameter.
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0
  c.lora.alpha = 16.0
  c.lora.dropout = 0.0
  c.lora.targets = DEFAULT_LORA_TARGETS  # regex over layer paths, e.g. 'layer_0/attn/q'
  c.lora.rslora = False  # scale alpha / sqrt(rank) instead of alpha / rank
  # "int8": the frozen base is held as int8 weights (QLoRA-style, jaxllm/compress/quantize.py);
  # a quantized init run (experiments/quantize.py) is an int8 base whatever this says.
  c.lora.base_quant = "none"
  # Greedy answers to held-out questions at every eval step (jaxllm/eval/qa.py).
  c.eval = ml_collections.ConfigDict()
  c.eval.qa_source = "world"  # "world": the world's eval SFT conversations; a .jsonl; "" = off
  c.eval.qa_questions = 200  # the first N
  c.eval.max_new_tokens = 96
  c.eval.batch_size = 64
  return c


def preference_data_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Fields shared by the reward-model and DPO stages: pairs from the world or .jsonl files."""
  c = sft_config(size)
  # "world" reads the world's preference pairs; a glob of .jsonl files holds
  # {"prompt", "chosen", "rejected", "margin"?} records (jaxllm/data/preferences.py).
  c.data.source = "world"
  c.data.seq_len = 96  # per sequence: a row holds a chosen and a rejected sequence
  c.data.packing = "rows"  # pairs are rows of their own, never packed
  # A simulated annotator relabels the training pairs (eval pairs keep the true labels):
  # noise = chance of a flipped label, length_bias = chance of preferring the longer reply.
  c.data.annotator = ml_collections.ConfigDict()
  c.data.annotator.noise = 0.0
  c.data.annotator.length_bias = 0.0
  c.data.annotator.seed = 0
  # On-policy pairs (jaxllm/rl/policy_pairs.py): with samples > 0 the init run answers each
  # question `samples` times and a right reply is paired against a wrong one (checked by the
  # world's verifier); these pairs replace config.data.source for training.
  c.data.on_policy = ml_collections.ConfigDict()
  c.data.on_policy.samples = 0
  c.data.on_policy.source = "world"  # the world's training SFT questions, or a .jsonl of them
  c.data.on_policy.questions = 1000  # the first N
  c.data.on_policy.temperature = 1.0
  c.data.on_policy.max_new_tokens = 96
  c.data.on_policy.batch_size = 64
  c.data.on_policy.gold_fallback = True  # no right sample: the reference reply is chosen
  c.train.eval_batches = 8
  return c


def reward_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Reward model: a scalar head on the init run's backbone, Bradley-Terry on pairs."""
  c = preference_data_config(size)
  c.reward = ml_collections.ConfigDict()
  c.reward.center_coefficient = 0.0  # c * (r_chosen + r_rejected)^2 keeps rewards near 0
  c.reward.use_margin = False  # subtract each pair's "margin" inside the sigmoid
  # w > 0: keep the LM head and add w * NLL(chosen reply) (hidden-state regularisation, GRM)
  c.reward.lm_weight = 0.0
  c.eval.qa_source = ""  # a reward model does not answer questions
  c.optimizer.lr = 1e-4
  c.optimizer.weight_decay = 0.0
  return c


def dpo_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """The DPO family (jaxllm/objectives/preference.py) from an SFT run, full or LoRA."""
  c = preference_data_config(size)
  c.preference = ml_collections.ConfigDict()
  c.preference.loss = "dpo"  # dpo | ipo | simpo | orpo (label_smoothing > 0 with dpo: cDPO)
  c.preference.beta = 0.1  # DPO/IPO beta, SimPO beta (about 2), ORPO lambda
  c.preference.label_smoothing = 0.0  # cDPO / robust SimPO: assumed label-flip rate
  c.preference.simpo_gamma = 0.5  # SimPO target margin
  c.preference.sft_weight = 0.0  # RPO: + weight * NLL of the chosen reply
  c.preference.dpop_lambda = 50.0  # DPOP: penalty on the chosen log-prob's fall below the ref
  # precomputed: reference log-probs computed once into WORKDIR/reference_logps.json;
  # in_step: a forward pass of the frozen reference in every step (LoRA: the base model).
  c.preference.reference = "precomputed"
  c.optimizer.lr = 1e-5
  c.optimizer.weight_decay = 0.0
  return c


def validate_preference(config: ml_collections.ConfigDict) -> None:
  """The preference stages' own fields."""
  if config.data.packing != "rows":
    raise ConfigError(f"config.data.packing={config.data.packing!r}: preference pairs are rows "
                      "of their own; set it to 'rows'.")
  r = config.get("reward")
  if r is not None:
    for name in ("center_coefficient", "lm_weight"):
      if r[name] < 0:
        raise ConfigError(f"config.reward.{name}={r[name]} must be >= 0.")
  p = config.get("preference")
  if p is None:
    return
  if p.loss not in LOSS_TYPES:
    raise ConfigError(f"config.preference.loss={p.loss!r} is not one of {LOSS_TYPES}.")
  if p.reference not in REFERENCES:
    raise ConfigError(f"config.preference.reference={p.reference!r} is not one of "
                      f"{REFERENCES}.")
  if p.beta <= 0:
    raise ConfigError(f"config.preference.beta={p.beta} must be positive.")
  if not 0.0 <= p.label_smoothing < 0.5:
    raise ConfigError(f"config.preference.label_smoothing={p.label_smoothing} must be in "
                      "[0, 0.5).")
  if p.label_smoothing and p.loss not in ("dpo", "simpo"):
    raise ConfigError(f"config.preference.label_smoothing applies to dpo and simpo, not "
                      f"{p.loss!r}; set it to 0.")
  for name in ("sft_weight", "dpop_lambda"):
    if p[name] < 0:
      raise ConfigError(f"config.preference.{name}={p[name]} must be >= 0.")


def rl_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """RL from an SFT run (jaxllm/rl, jaxllm/objectives/policy.py): GRPO and its variants with
  verifiable rewards, RLHF against a reward model, PPO with a value head."""
  c = sft_config(size)
  # "world": the world's training RL prompts (word problems); or a glob of .jsonl files of
  # {"prompt": str | "messages": [...], "answer"?: str, "tool_result"?: str}.
  c.data.source = "world"
  c.data.seq_len = 192  # prompt + completion; longer prompts are skipped and counted
  c.rl = ml_collections.ConfigDict()
  c.rl.group_size = 8  # completions per prompt; train.batch_size = prompts x group_size
  c.rl.temperature = 1.0
  c.rl.max_new_tokens = 96
  c.rl.advantage = "grpo"  # grpo | dr_grpo | rloo | gae (PPO: needs value_coef > 0)
  c.rl.epochs = 1  # optimisation passes over each rollout batch
  c.rl.minibatches = 1  # optimizer updates per pass
  c.rl.clip_low = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high] (clip-higher: high > low)
  c.rl.clip_high = 0.2
  c.rl.dual_clip = 0.0  # > 1: dual clip for negative advantages (0: off)
  c.rl.kl_coef = 0.0  # beta; 0 never runs the reference
  c.rl.kl_estimator = "k3"  # k1 | k2 | k3
  c.rl.kl_in_reward = False  # PPO: -beta (logp - ref) per token in the reward, not the loss
  c.rl.aggregation = "token_mean"  # token_mean | seq_mean_token_mean | seq_mean_token_sum_norm
  c.rl.entropy_coef = 0.0
  c.rl.drop_uniform_groups = True  # rows of groups with equal rewards get no loss
  c.rl.mask_truncated = True  # completions cut off at max_new_tokens get no loss
  # Reward weights (jaxllm/rl/rewards.py); "correct" is logged even at weight 0.
  c.rl.rewards = ml_collections.ConfigDict(
      {"correct": 1.0, "format": 0.0, "tool": 0.0, "reward_model": 0.0})
  c.rl.answer_style = "line"  # "The answer is X." (line) or <answer>X</answer> (tag)
  c.rl.reward_model = ""  # a reward-model run directory, for rewards.reward_model > 0
  c.rl.value_coef = 0.0  # PPO: weight of the value loss (the value head shares the trunk)
  c.rl.value_clip = 0.2
  c.rl.gamma = 1.0
  c.rl.gae_lambda = 0.95
  c.rl.whiten_advantages = True  # GAE advantages normalised over the batch
  c.train.batch_size = 64
  c.train.log_every = 1
  c.train.eval_at_start = True  # the init (SFT) model's held-out numbers, to compare against
  c.optimizer.lr = 1e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = "constant"
  c.optimizer.weight_decay = 0.0
  # Held-out prompts, every eval step: greedy accuracy (eval/qa_accuracy), pass@k from
  # pass_samples sampled replies, the format reward and (with a reward model) its score.
  c.eval.qa_source = "world"  # the world's eval RL prompts, a .jsonl, or "" (off)
  c.eval.qa_questions = 200
  c.eval.pass_k = 4  # 0: no sampled eval
  c.eval.pass_samples = 8
  return c


def validate_rl(config: ml_collections.ConfigDict) -> None:
  """The RL stage's own fields, before anything is loaded."""
  r, t = config.rl, config.train
  if r.group_size < 2:
    raise ConfigError(f"config.rl.group_size={r.group_size} must be >= 2 (advantages compare "
                      "the completions of a prompt).")
  if t.batch_size % r.group_size:
    raise ConfigError(f"config.train.batch_size={t.batch_size} must be a multiple of "
                      f"config.rl.group_size={r.group_size} (prompts x completions per prompt).")
  if r.epochs < 1 or r.minibatches < 1 or t.batch_size % (r.minibatches * t.microbatches):
    raise ConfigError(f"config.rl.epochs={r.epochs} and config.rl.minibatches={r.minibatches} "
                      f"must be >= 1, and config.train.batch_size={t.batch_size} divisible by "
                      f"minibatches x config.train.microbatches={t.microbatches}.")
  if r.temperature <= 0:
    raise ConfigError(f"config.rl.temperature={r.temperature} must be positive (RL samples).")
  if r.max_new_tokens < 1 or r.max_new_tokens >= config.data.seq_len:
    raise ConfigError(f"config.rl.max_new_tokens={r.max_new_tokens} must be in [1, "
                      f"config.data.seq_len={config.data.seq_len}).")
  for name, allowed in (("advantage", policy_lib.ADVANTAGES),
                        ("kl_estimator", policy_lib.KL_ESTIMATORS),
                        ("aggregation", policy_lib.AGGREGATIONS)):
    if r[name] not in allowed:
      raise ConfigError(f"config.rl.{name}={r[name]!r} is not one of {allowed}.")
  if not 0 <= r.clip_low < 1 or r.clip_high < 0:
    raise ConfigError(f"config.rl.clip_low={r.clip_low} must be in [0, 1) and "
                      f"config.rl.clip_high={r.clip_high} >= 0.")
  if r.dual_clip and r.dual_clip <= 1:
    raise ConfigError(f"config.rl.dual_clip={r.dual_clip} must be > 1 (or 0: off).")
  for name in ("kl_coef", "entropy_coef", "value_coef", "value_clip"):
    if r[name] < 0:
      raise ConfigError(f"config.rl.{name}={r[name]} must be >= 0.")
  if (r.advantage == "gae") != (r.value_coef > 0):
    raise ConfigError(f"config.rl.advantage={r.advantage!r} with config.rl.value_coef="
                      f"{r.value_coef}: GAE (PPO) trains a value head, so use advantage='gae' "
                      "with value_coef > 0, or a group estimator with value_coef=0.")
  if r.kl_in_reward and r.advantage != "gae":
    raise ConfigError("config.rl.kl_in_reward puts the KL penalty in per-token rewards, which "
                      "only GAE (advantage='gae') reads; set it to False.")
  if r.advantage == "gae" and config.lora.rank > 0:
    raise ConfigError("PPO (advantage='gae') trains a value head on the full model; set "
                      "config.lora.rank=0, or use a group estimator with LoRA.")
  if r.rewards.get("reward_model", 0.0) and not r.reward_model:
    raise ConfigError("config.rl.rewards.reward_model > 0 needs config.rl.reward_model, a "
                      "reward-model run directory (experiments/reward_model.py).")
  if config.eval.pass_k and config.eval.pass_samples < config.eval.pass_k:
    raise ConfigError(f"config.eval.pass_samples={config.eval.pass_samples} must be >= "
                      f"config.eval.pass_k={config.eval.pass_k}.")


def validate(config: ml_collections.ConfigDict) -> ModelConfig:
  """Checks the fields that do not depend on the devices; returns the model config."""
  model_cfg = ModelConfig.from_dict(config.model)
  t, d = config.train, config.data
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
  if config.optimizer.schedule not in ("cosine", "linear", "constant"):
    raise ConfigError(f"config.optimizer.schedule={config.optimizer.schedule!r} is not one of "
                      "cosine, linear, constant.")
  validate_mlm(config)
  return model_cfg


def distill_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Knowledge distillation (experiments/distill.py, jaxllm/objectives/distill.py): a fresh
  student (config.model) trained on a frozen teacher run's logits and on the pretraining text,
  with the teacher's tokenizer."""
  c = pretrain_config(size)
  c.model.vocab_size = 0  # 0: the teacher's (student and teacher must share the vocabulary)
  c.teacher = ml_collections.ConfigDict()
  c.teacher.checkpoint = ""  # the teacher: a run directory (pretraining or SFT)
  c.teacher.step = -1  # its checkpoint step; -1: the latest (the run records the step it used)
  c.distill = ml_collections.ConfigDict()
  # loss = kd_weight * T^2 * KL(teacher^T || student^T) + (1 - kd_weight) * CE(data);
  # kd_weight = 0 trains the same student on the data alone (the baseline). T 1 and 0.9 were
  # the best measured on the world; T 2 ended worse than the data alone (docs/benchmarks.md).
  c.distill.temperature = 1.0
  c.distill.kd_weight = 0.9
  return c


def validate_distill(config: ml_collections.ConfigDict) -> None:
  """The distillation stage's own fields, before anything is loaded."""
  from jaxllm.objectives import distill as distill_lib  # pylint: disable=import-outside-toplevel
  if not config.teacher.checkpoint:
    raise ConfigError("config.teacher.checkpoint is empty; set it to the teacher's run "
                      "directory (--config.teacher.checkpoint=RUN_DIR, e.g. a pretraining run).")
  distill_lib.check_weights(config.distill.temperature, config.distill.kd_weight)
  if config.init.checkpoint or config.init.get("hf_path"):
    raise ConfigError("config.init.checkpoint / config.init.hf_path are set, but a distilled "
                      "student starts from fresh params; the run to learn from is "
                      "config.teacher.checkpoint. Clear config.init.")
  if config.data.tokenizer:
    raise ConfigError(f"config.data.tokenizer={config.data.tokenizer!r}: the student uses its "
                      "teacher's tokenizer (config.teacher.checkpoint's tokenizer.json, copied "
                      "into the workdir); leave config.data.tokenizer empty.")
