"""Reinforcement learning from an SFT run: GRPO-style with verifiable rewards, RLHF against a
trained reward model, PPO with a value head; the run assembled from its config.

  python experiments/rl.py --config=configs/rl/grpo_tiny.py --workdir=/tmp/jaxllm/grpo \\
      --config.init.checkpoint=/tmp/jaxllm/sft

    init run (SFT) ------------> policy params (PPO: + a fresh value head; LoRA: frozen base)
                   \\----------> reference = the init params (LoRA: the base without adapters)
    config.rl.rewards ---------> Rewards (verifiers; the reward model of config.rl.reward_model)
    prompts (config.data) -----> RolloutSource (sampler + rewards + advantages)
    held-out prompts ----------> evals: greedy accuracy, pass@k, format, reward-model score
    -> jaxllm/train/loop.train with objectives/policy.policy_loss

`run` is the stage; the pieces are separate functions for scripts of your own.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxllm import cli, rundir, runs
from jaxllm import config as config_lib
from jaxllm.data import chat, inputs, readers, world
from jaxllm.errors import ConfigError, UserError
from jaxllm.eval import qa
from jaxllm.inference.sampler import Sampler
from jaxllm.inference.scoring import RewardScorer
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.models import params as params_lib
from jaxllm.models.reward import PolicyWithValue, params_from_lm
from jaxllm.objectives import policy
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.recipes import sft
from jaxllm.rl import report
from jaxllm.rl import rewards as rewards_lib
from jaxllm.rl import rollout as rollout_lib
from jaxllm.train import aot, loop
from jaxllm.train import step as step_lib

# The progress line's stage keys (jaxllm/train/loop.py adds loss, gradient norm, tok/s, ...).
PROGRESS = (("eval/qa_accuracy", "qa acc {:.3f}"), ("rollout/reward_mean", "reward {:.3f}"),
            ("rollout/accuracy", "sample acc {:.3f}"),
            ("rollout/reward_reward_model", "RM score {:.3f}"),
            ("rollout/response_length", "len {:.1f}"), ("train/kl", "kl {:.4f}"),
            ("train/clip_fraction", "clip {:.3f}"),
            ("eval/reward_model_score", "eval RM score {:.3f}"))


def default_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """RL from an SFT run (jaxllm/rl, jaxllm/objectives/policy.py): GRPO and its variants with
  verifiable rewards, RLHF against a reward model, PPO with a value head."""
  c = sft.default_config(size, "rl")
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
  # DAPO dynamic sampling at a fixed shape: sample this many times the prompts per batch and
  # fill the batch with groups whose rewards differ first (1: off).
  c.rl.oversample = 1
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


def validate_fields(config: ml_collections.ConfigDict) -> None:
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
  for name, allowed in (("advantage", policy.ADVANTAGES),
                        ("kl_estimator", policy.KL_ESTIMATORS),
                        ("aggregation", policy.AGGREGATIONS)):
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


def validate(config: ml_collections.ConfigDict):
  """Every field of an RL run; returns the model config."""
  validate_fields(config)
  lora_lib.LoraConfig.from_config(config.lora)
  return config_lib.validate(config)


def prompt_records(source: str, world_seed: int, split: str, sizes=None,
                   field: str = "config.data.source") -> list[dict]:
  """RL prompts: "world" (the world's RL word problems of `split`) or a glob of .jsonl files of
  {"prompt" | "messages", "answer"?, ...}."""
  if source == "world":
    return world.generate(world_seed, sizes=sizes)[split]["rl"]
  counts = readers.ReadCounts()
  paths = readers.expand_inputs(source)
  records = [obj for path in paths for _, obj in readers.iter_jsonl(path, counts)]
  if not records:
    raise ConfigError(f"{field}={source!r} holds no prompts.")
  for i, r in enumerate(records):
    if not isinstance(r, dict) or not ("prompt" in r or "messages" in r):
      raise ConfigError(f"{field}={source!r}: record {i} has neither 'prompt' nor 'messages'.")
  return records


@dataclasses.dataclass
class Policy:
  """The trained model and how to get an LM to sample from its params."""
  model: Any  # what the loop trains: Transformer, PolicyWithValue or LoraModel
  init_params: Any  # None for LoRA (fresh adapters)
  frozen: Any  # LoRA: the base params; else None
  to_lm: Callable[[Any, Any], Any]  # (params, frozen) -> LM params for the sampler
  lm: Transformer  # the LM those params run in


def policy_model(config, model_cfg):
  """What the loop trains: PolicyWithValue (PPO), a LoraModel over the frozen init params, or
  the Transformer itself."""
  lora = lora_lib.LoraConfig.from_config(config.lora)
  if config.rl.advantage == "gae":
    return PolicyWithValue(model_cfg)
  if lora is not None:
    return lora_lib.LoraModel(Transformer(model_cfg, lora=lora))
  return Transformer(model_cfg)


def make_policy(config, model_cfg, init_params, rng) -> Policy:
  lm, model = Transformer(model_cfg), policy_model(config, model_cfg)
  lora = lora_lib.LoraConfig.from_config(config.lora)
  if config.rl.advantage == "gae":
    return Policy(model, params_from_lm(init_params, model_cfg, rng, keep_lm_head=True), None,
                  lambda params, frozen: params["backbone"], lm)
  if lora is not None:
    return Policy(model, None, init_params,
                  lambda params, frozen: lora_lib.merge(frozen, params, lora), lm)
  return Policy(model, init_params, None, lambda params, frozen: params, lm)


def make_rewards(config, records: Sequence[dict]) -> rewards_lib.Rewards:
  r = config.rl
  scorer = scorer_params = None
  if r.rewards.get("reward_model", 0.0):
    rm = runs.load_run(r.reward_model)
    if not runs.is_reward_model(rm.config):
      raise UserError(f"config.rl.reward_model={r.reward_model!r} is not a reward-model run "
                      "(experiments/reward_model.py writes one).")
    scorer = RewardScorer(rm.model, rm.tokenizer, max_len=rm.config.data.seq_len,
                          batch_size=config.eval.batch_size)
    scorer_params = rm.params
  return rewards_lib.make_rewards(dict(r.rewards), style=r.answer_style, scorer=scorer,
                                  scorer_params=scorer_params,
                                  log_accuracy=all("answer" in rec for rec in records))


def held_out_eval(config, tokenizer, policy_: Policy, rewards: rewards_lib.Rewards) -> tuple:
  """fn(params, frozen) -> {"eval/qa_accuracy", "eval/pass@k", "eval/format",
  "eval/reward_model_score"?}: greedy replies to held-out prompts (and pass_samples sampled
  ones for pass@k), scored by the run's reward components."""
  e = config.eval
  if not e.qa_source or e.qa_questions <= 0:
    return ()
  records = prompt_records(e.qa_source, config.data.world_seed, "eval",
                           inputs.world_sizes(config.data), "config.eval.qa_source")
  records = records[:e.qa_questions]
  smp = Sampler(policy_.lm, None, tokenizer.pad_id, vocab_limit=tokenizer.vocab_size)
  conversations = [chat.prompt_messages(r) for r in records]
  names = [n for n in ("correct", "format", "reward_model") if n in rewards.components]
  style = config.rl.answer_style

  def evaluate(params, frozen):
    smp.params = policy_.to_lm(params, frozen)
    replies = qa.reply_to(smp, tokenizer, conversations, max_new_tokens=config.rl.max_new_tokens,
                          batch_size=e.batch_size)
    out = {"eval/questions": float(len(records))}
    for name in names:
      values = rewards.components[name](records, replies)
      key = {"correct": "eval/qa_accuracy", "format": "eval/format",
             "reward_model": "eval/reward_model_score"}[name]
      out[key] = float(np.mean(values))
    if e.pass_k and "correct" in rewards.components and all("answer" in r for r in records):
      out[f"eval/pass@{e.pass_k}"], out["eval/sample_accuracy"] = qa.sampled_pass_at_k(
          smp, tokenizer, conversations, [r["answer"] for r in records], n=e.pass_samples,
          k=e.pass_k, temperature=config.rl.temperature, seed=config.seed,
          max_new_tokens=config.rl.max_new_tokens, batch_size=e.batch_size, style=style)
    return out
  return (evaluate,)


def rollout_settings(config) -> rollout_lib.RolloutSettings:
  r = config.rl
  return rollout_lib.RolloutSettings(
      prompts_per_batch=config.train.batch_size // r.group_size, group_size=r.group_size,
      seq_len=config.data.seq_len, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
      advantage=r.advantage, drop_uniform_groups=r.drop_uniform_groups,
      mask_truncated=r.mask_truncated, kl_coef=r.kl_coef, kl_in_reward=r.kl_in_reward,
      gamma=r.gamma, gae_lambda=r.gae_lambda, whiten_advantages=r.whiten_advantages,
      oversample=r.oversample, seed=config.seed)


def step_spec(config) -> aot.StepSpec:
  """The policy update step without rollouts (experiments/compile.py): config.rl.epochs x
  config.rl.minibatches optimizer updates over a batch of rollout rows."""
  validate_fields(config)
  config.value_head = config.rl.advantage == "gae"
  model_cfg = validate(config)
  lora = bool(config.lora.rank) and config.rl.advantage != "gae"
  return aot.StepSpec(policy_model(config, model_cfg), loss_fn(config),
                      rollout_lib.row_layout(rollout_settings(config)), frozen=lora, lora=lora,
                      updates_per_step=(config.rl.epochs, config.rl.minibatches))


def rollout_source(config, tokenizer, policy_: Policy, init_params, rewards, mesh, rules,
                   records: Sequence[dict]) -> rollout_lib.RolloutSource:
  """The rollouts: the sampler, the trainer's log-prob functions and the reference's."""
  r = config.rl
  settings = rollout_settings(config)
  temperature = r.temperature
  logps = jax.jit(lambda params, frozen, batch: policy.rollout_logps(
      params, batch, step_lib.bind_frozen(policy_.model, frozen), temperature))
  ref_fn = None
  if settings.needs_reference:
    ref_lm = jax.jit(lambda params, batch: policy.rollout_logps(params, batch, policy_.lm,
                                                                temperature))
    if policy_.frozen is not None:  # LoRA: the base without adapters is the reference
      ref_fn = lambda frozen, batch: ref_lm(frozen, batch)
    else:
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        placed = jax.device_put(init_params, params_lib.params_shardings(
            policy_.lm, mesh, rules, config.data.seq_len))
      ref_fn = lambda frozen, batch: ref_lm(placed, batch)
  # Under the mesh's rules the rows are split over the data x fsdp devices: with several
  # processes, each process's devices sample their share of the prompts.
  sampler = Sampler(policy_.lm, None, tokenizer.pad_id, mesh=mesh, rules=rules,
                    vocab_limit=tokenizer.vocab_size)
  chunk = config.train.batch_size // r.minibatches // config.train.microbatches
  return rollout_lib.RolloutSource(settings, tokenizer, records, rewards, sampler,
                                   policy_.to_lm, logps, ref_fn, mesh, chunk)


def loss_fn(config) -> Callable:
  r = config.rl
  return functools.partial(
      policy.policy_loss, temperature=r.temperature, clip_low=r.clip_low,
      clip_high=r.clip_high, dual_clip=r.dual_clip,
      kl_coef=0.0 if r.kl_in_reward else r.kl_coef, kl_estimator=r.kl_estimator,
      aggregation=r.aggregation, norm_length=float(r.max_new_tokens),
      entropy_coef=r.entropy_coef, value_coef=r.value_coef, value_clip=r.value_clip)


@rundir.claims_workdir
def run(config, workdir, hooks=(), rewards: rewards_lib.Rewards | None = None):
  """Loads the init run (and reward model), builds the rollouts and runs the one loop.

  `rewards` (a rewards.Rewards of your own functions) replaces config.rl.rewards.
  """
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the SFT run (or Hugging Face model) to improve")
  validate_fields(config)
  config.value_head = config.rl.advantage == "gae"  # PPO: checkpoints hold PolicyWithValue
  init = runs.start_from(config, workdir)
  tokenizer = init.tokenizer
  model_cfg = validate(config)
  records = prompt_records(config.data.source, config.data.world_seed, "train",
                           inputs.world_sizes(config.data))
  rewards = rewards or make_rewards(config, records)
  policy_ = make_policy(config, model_cfg, init.params,
                        jax.random.fold_in(jax.random.key(config.seed), 2))
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  source = rollout_source(config, tokenizer, policy_, init.params, rewards, mesh, rules, records)
  if source.too_long and jax.process_index() == 0:
    print(f"{source.too_long} of {len(records)} prompts are longer than config.data.seq_len - "
          f"config.rl.max_new_tokens = {config.data.seq_len - config.rl.max_new_tokens} tokens "
          "and are skipped.", flush=True)
  evals = held_out_eval(config, tokenizer, policy_, rewards)
  state = loop.train(config, workdir, policy_.model, loss_fn(config), source, None,
                     init_params=policy_.init_params, hooks=hooks, frozen_params=policy_.frozen,
                     evals=evals, updates_per_step=(config.rl.epochs, config.rl.minibatches),
                     progress=PROGRESS)
  if jax.process_index() == 0 and int(jax.device_get(state["step"])) == config.train.num_steps:
    print(report.describe(report.write(workdir)), flush=True)
  return state


def main():
  """python -m jaxllm.recipes.rl --config=FILE --workdir=DIR (experiments/rl.py)."""
  cli.run_stage(run, "Config file (see configs/rl/).")


if __name__ == "__main__":
  main()
