"""Rollouts: prompts -> G sampled completions each -> rewards -> advantages -> a training batch.

One RL iteration's batch, built by `RolloutSource.next_for(params, frozen)` from the params being
trained (the train loop calls it before each step, jaxllm/train/loop.py):

    prompts (P per iteration, in a seeded shuffled order, epoch after epoch)
      -> Sampler (KV cache, temperature) with the current policy: G completions per prompt
      -> rewards (jaxllm/rl/rewards.py): verifier(s) and/or the reward model
      -> rows [P * G, T]: prompt + completion, right-padded; loss_mask on completion tokens
      -> trainer forward passes: old log-probs (and values, PPO) with the current params,
         reference log-probs with the frozen reference when the KL needs them
      -> advantages: group estimators (grpo, dr_grpo, rloo) or GAE (PPO)
      -> {"tokens", "valid", "loss_mask", "old_logps", "advantages", "ref_logps"?,
          "old_values"?, "returns"?}  (jaxllm/objectives/policy.policy_loss reads them)

Groups whose completions all got the same reward carry no signal under group advantages; with
`drop_uniform_groups` their rows get no loss, and the fraction dropped is logged. With
`oversample` = k > 1, k times the prompts are sampled and the batch is refilled with groups that
carry signal first (DAPO's dynamic sampling at a fixed shape: uniform groups fill only the slots
left over); rollout/signal_groups is the share of sampled groups with signal, and the reward and
accuracy metrics describe every sampled completion, not only the kept ones. With
`mask_truncated`, completions cut off by max_new_tokens (no stop token) get no loss either
(DAPO's overlong filtering).

Time split, per iteration: time/sample_seconds (generation), time/reward_seconds (scoring),
time/logp_seconds (trainer and reference forward passes, advantages) and time/train_seconds
(from the end of the previous rollout until its updates were done: the optimizer steps, plus an
eval or checkpoint when one fell in between).

Determinism: the prompt order depends on (seed, epoch) and the sampler's key on (seed,
iteration), so the state {"iteration", "cursor"} is all a checkpoint needs: a resumed run
samples exactly what the uninterrupted run sampled. Log-probs for the ratio are the trainer's
own (recomputed), not the sampler's; their difference is logged (rollout/logprob_diff).
"""

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.data import chat
from jaxllm.errors import ConfigError
from jaxllm.inference.sampler import SampleOutput, Sampler
from jaxllm.objectives import policy
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.rl import rewards as rewards_lib
from jaxllm.train import loop


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
  """What a rollout batch is made of (config.rl and config.data.seq_len)."""
  prompts_per_batch: int
  group_size: int
  seq_len: int
  max_new_tokens: int = 96
  temperature: float = 1.0
  advantage: str = "grpo"  # grpo | dr_grpo | rloo | gae
  drop_uniform_groups: bool = True
  mask_truncated: bool = True
  kl_coef: float = 0.0
  kl_in_reward: bool = False  # PPO: -kl_coef * (logp - ref) per token in the reward, not the loss
  gamma: float = 1.0
  gae_lambda: float = 0.95
  whiten_advantages: bool = True  # GAE only
  oversample: int = 1  # sample this many times the prompts; keep the groups with signal first
  seed: int = 0

  @property
  def needs_reference(self) -> bool:
    return self.kl_coef > 0


def row_layout(s: RolloutSettings) -> dict[str, tuple[tuple[int, ...], type]]:
  """key -> (shape of one row, dtype) of the training rows a rollout makes with settings `s`."""
  t = (s.seq_len,)
  layout = {"tokens": (t, np.int32), "valid": (t, np.int32), "old_logps": (t, np.float32)}
  if s.needs_reference and not s.kl_in_reward:
    layout["ref_logps"] = (t, np.float32)
  layout["advantages"] = (t, np.float32)
  if s.advantage == "gae":
    layout.update(returns=(t, np.float32), old_values=(t, np.float32))
  layout["loss_mask"] = (t, np.float32)
  return layout


def prompt_order(num_prompts: int, seed: int, epoch: int) -> np.ndarray:
  """The order prompts are taken in during `epoch`: a permutation seeded by (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(num_prompts)


def encode_prompts(tokenizer, records: Sequence[dict], max_prompt_len: int,
                   ) -> tuple[list[dict], list[list[int]], int]:
  """(records kept, their chat-template prompt ids, how many were too long) for prompts of at
  most `max_prompt_len` tokens."""
  kept, ids, too_long = [], [], 0
  for record in records:
    prompt, _ = chat.render_chat(tokenizer, chat.prompt_messages(record),
                                 add_generation_prompt=True)
    if len(prompt) > max_prompt_len:
      too_long += 1
      continue
    kept.append(record)
    ids.append(prompt)
  return kept, ids, too_long


def build_rows(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
               seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
  """tokens, valid and completion masks [N, seq_len] of prompt + completion rows (right-padded)."""
  n = len(prompts)
  tokens = np.full((n, seq_len), pad_id, np.int32)
  valid = np.zeros((n, seq_len), np.int32)
  completion = np.zeros((n, seq_len), np.float32)
  for i, (p, c) in enumerate(zip(prompts, completions)):
    if len(p) + len(c) > seq_len:
      raise ValueError(f"row {i}: {len(p)} prompt + {len(c)} completion tokens exceed "
                       f"seq_len={seq_len}.")
    tokens[i, :len(p)] = p
    tokens[i, len(p):len(p) + len(c)] = c
    valid[i, :len(p) + len(c)] = 1
    completion[i, len(p):len(p) + len(c)] = 1.0
  return {"tokens": tokens, "valid": valid, "completion": completion}


def signal_first(total_n: np.ndarray, group_size: int, groups: int) -> np.ndarray:
  """Row indices of `groups` whole groups: those whose rewards differ first, in sampled order,
  then uniform ones for the slots left over (their rows get no loss when uniform groups are
  dropped)."""
  uniform = policy.uniform_groups(total_n, group_size)
  order = np.concatenate([np.flatnonzero(~uniform), np.flatnonzero(uniform)])[:groups]
  return (order[:, None] * group_size + np.arange(group_size)[None, :]).reshape(-1)


def sequence_rewards_to_tokens(rewards_n: np.ndarray, completion_nt: np.ndarray) -> np.ndarray:
  """[N, T] with each row's reward on its last completion token (PPO's sparse reward)."""
  out = np.zeros(completion_nt.shape, np.float32)
  has = completion_nt.any(axis=1)
  last = completion_nt.shape[1] - 1 - np.argmax(completion_nt[:, ::-1], axis=1)
  out[np.arange(len(out))[has], last[has]] = rewards_n[has]
  return out


class RolloutSource(loop.OnPolicySource):
  """The RL loop's data: `next_for(params, frozen)` samples and scores one iteration's batch.

  to_lm(params, frozen): the LM params to sample with (the policy's backbone for PPO, LoRA
  adapters merged into the base). logps_fn(params, frozen, batch) -> (log-probs, values) of the
  trained model; ref_logps_fn(batch) -> the reference's log-probs (called only when the KL
  needs them). `last_metrics` holds the latest rollout's "rollout/..." and "time/..." values.
  """

  def __init__(self, settings: RolloutSettings, tokenizer, records: Sequence[dict],
               rewards: rewards_lib.Rewards, sampler: Sampler, to_lm: Callable,
               logps_fn: Callable, ref_logps_fn: Callable | None, mesh, chunk_rows: int):
    s = settings
    if s.advantage not in policy.ADVANTAGES:
      raise ConfigError(f"config.rl.advantage={s.advantage!r} is not one of {policy.ADVANTAGES}.")
    if s.oversample < 1 or (s.oversample > 1 and s.advantage == "gae"):
      raise ConfigError(f"config.rl.oversample={s.oversample}: use 1 or more, and 1 with "
                        "advantage='gae' (only group advantages make groups without signal).")
    self.settings, self.tokenizer, self.rewards = s, tokenizer, rewards
    self.sampler, self.to_lm = sampler, to_lm
    self.logps_fn, self.ref_logps_fn = logps_fn, ref_logps_fn
    self.mesh, self.chunk_rows = mesh, chunk_rows
    self.records, self.prompts, self.too_long = encode_prompts(
        tokenizer, records, s.seq_len - s.max_new_tokens)
    if len(self.records) < s.prompts_per_batch:
      raise ConfigError(
          f"{len(self.records)} prompts fit in config.data.seq_len={s.seq_len} minus "
          f"config.rl.max_new_tokens={s.max_new_tokens} ({self.too_long} are longer), fewer than "
          f"the {s.prompts_per_batch} prompts per batch; raise seq_len or lower the batch.")
    self.stops = chat.stop_ids(tokenizer)
    self.iteration, self.cursor = 0, 0
    self._order: tuple[int, np.ndarray | None] = (-1, None)  # (epoch, its prompt order)
    self.last_metrics: dict[str, float] = {}
    self._train_started: float | None = None

  # -- iterator state (checkpointed with the train state) --
  def get_state(self) -> dict:
    # Every process takes the same prompts: a checkpoint resumes on any number of processes.
    return {"iteration": self.iteration, "cursor": self.cursor, "same_in_every_process": True}

  def set_state(self, state: dict) -> None:
    self.iteration, self.cursor = int(state["iteration"]), int(state["cursor"])
    self._train_started = None

  def close(self) -> None:
    pass

  def _take_prompts(self, count: int) -> list[int]:
    n = len(self.records)
    out = []
    for c in range(self.cursor, self.cursor + count):
      if self._order[0] != c // n:
        self._order = (c // n, prompt_order(n, self.settings.seed, c // n))
      out.append(int(self._order[1][c % n]))
    self.cursor += count
    return out

  def sampler_seed(self) -> int:
    """The sampler's seed for this iteration, from (seed, iteration)."""
    return int(np.random.default_rng([self.settings.seed, self.iteration, 7]).integers(2**31))

  def next_for(self, params, frozen=None) -> dict[str, np.ndarray]:
    s = self.settings
    jax.block_until_ready(params)
    ready = time.perf_counter()
    chosen = self._take_prompts(s.prompts_per_batch * s.oversample)
    records = [self.records[i] for i in chosen for _ in range(s.group_size)]
    prompts = [self.prompts[i] for i in chosen for _ in range(s.group_size)]
    self.sampler.params = self.to_lm(params, frozen)
    out = self.sampler.generate(prompts, s.max_new_tokens, temperature=s.temperature,
                                stop_tokens=self.stops, seed=self.sampler_seed())
    sampled = time.perf_counter()
    completions = out.completions()
    replies = [self.tokenizer.decode(c[:-1] if stopped else c)
               for c, stopped in zip(completions, out.stopped)]
    total, parts = self._score(records, replies)
    scored = time.perf_counter()
    reward_metrics = self._reward_metrics(total, parts)
    if s.oversample > 1:
      keep = signal_first(total, s.group_size, s.prompts_per_batch)
      reward_metrics["rollout/signal_groups"] = float(
          (~policy.uniform_groups(total, s.group_size)).mean())
      prompts, completions = [prompts[i] for i in keep], [completions[i] for i in keep]
      total = total[keep]
      out = SampleOutput(*(getattr(out, f.name)[keep] for f in dataclasses.fields(out)))
    rows = build_rows(prompts, completions, s.seq_len, self.tokenizer.pad_id or 0)
    batch, extra = self._finish(params, frozen, rows, total, out)
    done = time.perf_counter()

    metrics = {**self._metrics(rows, out, extra), **reward_metrics}
    metrics.update({"time/sample_seconds": sampled - ready, "time/reward_seconds": scored - sampled,
                    "time/logp_seconds": done - scored})
    if self._train_started is not None:  # the previous iteration's updates ran until `ready`
      metrics["time/train_seconds"] = ready - self._train_started
    self._train_started = done
    self.last_metrics = metrics
    self.iteration += 1
    return sharding_lib.local_rows(batch)  # this process's rows of the global batch

  def _score(self, records: list[dict], replies: list[str]) -> tuple[np.ndarray, dict]:
    """Rewards of every reply, in every process. With several processes each scores its share
    of the replies and the scores are gathered; a reward model, whose params may span every
    process's devices (a program all of them run together), scores them all in every process."""
    if jax.process_count() == 1 or self.rewards.on_device:
      return self.rewards.evaluate(records, replies)
    mine = sharding_lib.process_rows(len(replies))
    total, parts = self.rewards.evaluate(records[mine], replies[mine])
    return sharding_lib.gather_rows((total, parts))

  def _forward(self, fn, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, Any]:
    """fn over the rows in chunks (global batches on the mesh) -> numpy (logps, values)."""
    logps, values = [], []
    n = len(rows["tokens"])
    for start in range(0, n, self.chunk_rows):
      chunk = {k: rows[k][start:start + self.chunk_rows] for k in ("tokens", "valid")}
      # Every process holds every row; each places its share, and the results come back whole.
      lp, v = sharding_lib.fetch(fn(sharding_lib.global_batch(sharding_lib.local_rows(chunk),
                                                              self.mesh)))
      logps.append(lp)
      values.append(v)
    return (np.concatenate(logps), None if values[0] is None else np.concatenate(values))

  def _finish(self, params, frozen, rows, total, out) -> tuple[dict, dict]:
    s = self.settings
    mask = rows["completion"].copy()
    if s.mask_truncated:
      mask *= out.stopped[:, None]
    old_logps, old_values = self._forward(lambda b: self.logps_fn(params, frozen, b), rows)
    batch = {"tokens": rows["tokens"], "valid": rows["valid"], "old_logps": old_logps}
    extra: dict[str, Any] = {"old_logps": old_logps}
    ref_logps = None
    if s.needs_reference:
      if self.ref_logps_fn is None:
        raise ConfigError("config.rl.kl_coef > 0 needs a reference model.")
      ref_logps, _ = self._forward(lambda b: self.ref_logps_fn(frozen, b), rows)
      extra["ref_logps"] = ref_logps
      if not s.kl_in_reward:
        batch["ref_logps"] = ref_logps
    if s.advantage == "gae":
      if old_values is None:
        raise ConfigError("config.rl.advantage='gae' needs the value head (PolicyWithValue).")
      token_rewards = sequence_rewards_to_tokens(total, rows["completion"])
      if s.kl_in_reward and ref_logps is not None:
        token_rewards -= s.kl_coef * (old_logps - ref_logps) * rows["completion"]
      advantages, returns = policy.gae(jnp.asarray(token_rewards), jnp.asarray(old_values),
                                       jnp.asarray(rows["completion"]), s.gamma, s.gae_lambda)
      if s.whiten_advantages:
        advantages = policy.whiten(advantages, jnp.asarray(mask))
      batch.update(advantages=np.asarray(advantages), returns=np.asarray(returns),
                   old_values=old_values)
      extra["dropped_groups"] = 0.0
    else:
      per_row = policy.group_advantages(total, s.group_size, s.advantage)
      uniform = policy.uniform_groups(total, s.group_size)
      if s.drop_uniform_groups:
        mask *= np.repeat(~uniform, s.group_size)[:, None]
      batch["advantages"] = per_row[:, None] * rows["completion"]
      extra["dropped_groups"] = float(uniform.mean()) if s.drop_uniform_groups else 0.0
      extra["uniform_groups"] = float(uniform.mean())
    batch["loss_mask"] = mask.astype(np.float32)
    batch = {k: np.asarray(v, np.int32 if k in ("tokens", "valid") else np.float32)
             for k, v in batch.items()}
    return batch, extra

  def _reward_metrics(self, total, parts) -> dict[str, float]:
    """Rewards of every sampled completion (before any oversampled groups are left out)."""
    s = self.settings
    m: dict[str, float] = {"rollout/samples": float(len(total)),
                           "rollout/reward_mean": float(total.mean()),
                           "rollout/reward_std": float(total.std())}
    for name, values in parts.items():
      m[f"rollout/reward_{name}"] = float(values.mean())
    if "correct" in parts:
      right = parts["correct"].reshape(-1, s.group_size) > 0
      m["rollout/accuracy"] = float(right.mean())
      m[f"rollout/pass@{s.group_size}"] = float(right.any(axis=1).mean())
    return m

  def _metrics(self, rows, out, extra) -> dict[str, float]:
    """What the kept batch looks like: lengths, dropped groups, log-prob agreement, KL."""
    s = self.settings
    completion = rows["completion"]
    m: dict[str, float] = {}
    m["rollout/response_length"] = float(out.lengths.mean())
    m["rollout/response_length_max"] = float(out.lengths.max())
    m["rollout/truncated_fraction"] = float(1.0 - out.stopped.mean())
    if "uniform_groups" in extra:
      m["rollout/uniform_groups"] = extra["uniform_groups"]
    m["rollout/dropped_groups"] = extra["dropped_groups"]
    count = max(completion.sum(), 1.0)
    # The sampler's log-probs of its own tokens (at its temperature) against the trainer's.
    sampler_logps = np.zeros_like(completion)
    for i, n in enumerate(out.lengths):
      start = int(np.argmax(completion[i])) if completion[i].any() else 0
      sampler_logps[i, start:start + n] = (out.logprobs[i, :n] if s.temperature > 0
                                           else out.raw_logprobs[i, :n])
    diff = np.abs(sampler_logps - extra["old_logps"]) * completion
    m["rollout/logprob_diff"] = float(diff.sum() / count)
    m["rollout/logprob_diff_max"] = float(diff.max())
    if "ref_logps" in extra:
      kl = np.asarray(policy.kl_estimate(jnp.asarray(extra["old_logps"]),
                                         jnp.asarray(extra["ref_logps"]), "k3"))
      m["rollout/kl_ref"] = float((kl * completion).sum() / count)
    m["rollout/entropy_proxy"] = float(-(extra["old_logps"] * completion).sum() / count)
    return m
