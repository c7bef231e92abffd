"""An RL run assembled from its config: policy model, reference, rewards, rollouts, evals.

    init run (SFT) ------------> policy params (PPO: + a fresh value head; LoRA: frozen base)
                   \\----------> reference = the init params (LoRA: the base without adapters)
    config.rl.rewards ---------> Rewards (verifiers; the reward model of config.rl.reward_model)
    prompts (config.data) -----> RolloutSource (sampler + rewards + advantages)
    held-out prompts ----------> evals: greedy accuracy, pass@k, format, reward-model score
    -> jaxllm/train/loop.train with objectives/policy.policy_loss

experiments/rl.py calls `run`; the pieces are separate functions for scripts of your own.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxllm import config as config_lib
from jaxllm.data import inputs, readers, world
from jaxllm.errors import ConfigError, UserError
from jaxllm.eval import qa
from jaxllm.inference import runs
from jaxllm.inference.sampler import Sampler
from jaxllm.inference.scoring import RewardScorer
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.models.reward import PolicyWithValue, params_from_lm
from jaxllm.objectives import policy
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.rl import report
from jaxllm.rl import rewards as rewards_lib
from jaxllm.rl import rollout as rollout_lib
from jaxllm.train import loop
from jaxllm.train import state as state_lib
from jaxllm.train import step as step_lib


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


def make_policy(config, model_cfg, init_params, rng) -> Policy:
  lm = Transformer(model_cfg)
  lora = lora_lib.LoraConfig.from_config(config.lora)
  if config.rl.advantage == "gae":
    return Policy(PolicyWithValue(model_cfg),
                  params_from_lm(init_params, model_cfg, rng, keep_lm_head=True), None,
                  lambda params, frozen: params["backbone"], lm)
  if lora is not None:
    return Policy(lora_lib.LoraModel(Transformer(model_cfg, lora=lora)), None, init_params,
                  lambda params, frozen: lora_lib.merge(frozen, params, lora), lm)
  return Policy(lm, init_params, None, lambda params, frozen: params, lm)


def make_rewards(config, records: Sequence[dict]) -> rewards_lib.Rewards:
  r = config.rl
  scorer = scorer_params = None
  if r.rewards.get("reward_model", 0.0):
    rm = runs.load_run(r.reward_model)
    if not runs.is_reward_run(rm.config):
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
  conversations = [rewards_lib.prompt_messages(r) for r in records]
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


def rollout_source(config, tokenizer, policy_: Policy, init_params, rewards, mesh, rules,
                   records: Sequence[dict]) -> rollout_lib.RolloutSource:
  """The rollouts: the sampler, the trainer's log-prob functions and the reference's."""
  r = config.rl
  settings = rollout_lib.RolloutSettings(
      prompts_per_batch=config.train.batch_size // r.group_size, group_size=r.group_size,
      seq_len=config.data.seq_len, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
      advantage=r.advantage, drop_uniform_groups=r.drop_uniform_groups,
      mask_truncated=r.mask_truncated, kl_coef=r.kl_coef, kl_in_reward=r.kl_in_reward,
      gamma=r.gamma, gae_lambda=r.gae_lambda, whiten_advantages=r.whiten_advantages,
      seed=config.seed)
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
        placed = jax.device_put(init_params, state_lib.params_shardings(
            policy_.lm, mesh, rules, config.data.seq_len))
      ref_fn = lambda frozen, batch: ref_lm(placed, batch)
  sampler = Sampler(policy_.lm, None, tokenizer.pad_id, vocab_limit=tokenizer.vocab_size)
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


def run(config, workdir, hooks=(), rewards: rewards_lib.Rewards | None = None):
  """Loads the init run (and reward model), builds the rollouts and runs the one loop.

  `rewards` (a rewards.Rewards of your own functions) replaces config.rl.rewards.
  """
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the SFT run (or Hugging Face model) to improve")
  if jax.process_count() > 1:
    raise ConfigError("RL runs in one process (any number of local devices); the rollouts "
                      "are not yet split across processes.")
  config_lib.validate_rl(config)
  init = runs.start_from(config, workdir)
  tokenizer = init.tokenizer
  model_cfg = config_lib.validate(config)
  records = prompt_records(config.data.source, config.data.world_seed, "train",
                           inputs.world_sizes(config.data))
  rewards = rewards or make_rewards(config, records)
  policy_ = make_policy(config, model_cfg, init.params,
                        jax.random.fold_in(jax.random.key(config.seed), 2))
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  source = rollout_source(config, tokenizer, policy_, init.params, rewards, mesh, rules, records)
  if source.too_long:
    print(f"{source.too_long} of {len(records)} prompts are longer than config.data.seq_len - "
          f"config.rl.max_new_tokens = {config.data.seq_len - config.rl.max_new_tokens} tokens "
          "and are skipped.", flush=True)
  evals = held_out_eval(config, tokenizer, policy_, rewards)
  state = loop.train(config, workdir, policy_.model, loss_fn(config), source, None,
                     init_params=policy_.init_params, hooks=hooks, frozen_params=policy_.frozen,
                     evals=evals, updates_per_step=(config.rl.epochs, config.rl.minibatches))
  if jax.process_index() == 0 and int(jax.device_get(state["step"])) == config.train.num_steps:
    print(report.describe(report.write(workdir)), flush=True)
  return state
