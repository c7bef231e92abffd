"""Batched sampling with a KV cache: prefill once, then decode inside one compiled while loop.

    prompts (token lists) --pad left to a bucket--> [B, P]
      -> prefill: one forward over the prompts writes cache slots 0..P-1, samples token 1
      -> decode loop (lax.while_loop): feed the last token at slot P + i, sample the next one
      -> tokens [B, N], lengths [B], log-probs under the sampling distribution and the raw model

Prompts are right-aligned (left padding), so every row writes the same cache slot each step;
positions count real tokens only (a row's first token has position 0), and padded slots are
masked, so each row computes what the model computes on that row alone.

Shapes are bucketed: the batch, prompt length and new-token count are padded up to the next
bucket (powers of two by default), so a session of requests compiles a handful of programs.
Sampling settings (temperature, top-k, top-p, stop tokens) are traced values: changing them
does not recompile; stop strings (jaxllm/inference/stop_strings.py) are a traced table whose
shape comes in a few buckets. Each row draws from its own key, fold_in(fold_in(seed, row),
step), so a row's sample does not depend on the other rows or on padding.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.errors import UserError
from jaxllm.models import transformer
from jaxllm.parallel import sharding as sharding_lib

NEG_INF = -1e30  # finite, so that 0 * masked stays 0 and softmax of an all-masked row is uniform


@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """What `Sampler.generate` returns, one row per prompt (numpy arrays).

  tokens: [B, N] int32 sampled tokens; after `lengths[b]` they are pad_id.
  lengths: [B] int32 tokens generated, a stop token included.
  logprobs: [B, N] float32 log-prob of each token under the sampling distribution (temperature,
    top-k, top-p applied); 0 for greedy decoding and after the end.
  raw_logprobs: [B, N] float32 log-prob of each token under the model (temperature 1, no
    filtering): what a teacher-forced forward pass gives; 0 after the end.
  stopped: [B] bool, True where a stop token ended the row (False: max_new_tokens did).
  """
  tokens: np.ndarray
  lengths: np.ndarray
  logprobs: np.ndarray
  raw_logprobs: np.ndarray
  stopped: np.ndarray

  def completions(self) -> list[list[int]]:
    """The generated tokens of each row, stop token included."""
    return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths)]


def filter_logits(logits_bv: jnp.ndarray, top_k: jnp.ndarray, top_p: jnp.ndarray) -> jnp.ndarray:
  """Keeps the top_k largest logits (0: all), then the smallest set whose probability reaches
  top_p (1: all; the token that crosses it is kept), as Hugging Face's TopK then TopP warpers;
  the rest become NEG_INF. Tokens tied with the last kept one are kept too."""
  vocab = logits_bv.shape[-1]
  sorted_bv = -jnp.sort(-logits_bv, axis=-1)  # descending
  rank_v = jnp.arange(vocab)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
  sorted_bv = jnp.where(rank_v < k, sorted_bv, NEG_INF)
  probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
  mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
  keep_bv = (rank_v < k) & ((mass_before_bv < top_p) | (rank_v == 0))
  threshold_b1 = jnp.min(jnp.where(keep_bv, sorted_bv, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_bv >= threshold_b1, logits_bv, NEG_INF)


def sampling_logits(logits_bv: jnp.ndarray, temperature: jnp.ndarray, top_k: jnp.ndarray,
                    top_p: jnp.ndarray) -> jnp.ndarray:
  """Logits of the sampling distribution: divided by temperature, then filtered.

  The sort behind filtering runs only when top_k > 0 or top_p < 1.
  """
  scaled_bv = logits_bv / jnp.where(temperature > 0, temperature, 1.0)
  return jax.lax.cond((top_k > 0) | (top_p < 1.0), filter_logits, lambda x, *_: x, scaled_bv,
                      top_k, top_p)


def _pick(logits_bv, rng, rows_b, step, temperature, top_k, top_p, vocab_limit=None):
  """(tokens [B], sampling log-probs [B], raw log-probs [B]) for one step.

  vocab_limit: ids at or above it (a model vocabulary padded past the tokenizer's) are never
  sampled; the raw log-probs still normalise over every logit, as a forward pass does.
  """
  allowed_bv = logits_bv
  if vocab_limit is not None and vocab_limit < logits_bv.shape[-1]:
    allowed_bv = jnp.where(jnp.arange(logits_bv.shape[-1]) < vocab_limit, logits_bv, NEG_INF)
  sample_bv = sampling_logits(allowed_bv, temperature, top_k, top_p)
  keys_b = jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(rng, r), step))(rows_b)
  sampled_b = jax.vmap(jax.random.categorical)(keys_b, sample_bv)
  greedy = temperature <= 0
  tokens_b = jnp.where(greedy, jnp.argmax(allowed_bv, axis=-1), sampled_b).astype(jnp.int32)
  sample_logp_b = jnp.take_along_axis(jax.nn.log_softmax(sample_bv, axis=-1), tokens_b[:, None],
                                      axis=-1)[:, 0]
  raw_logp_b = jnp.take_along_axis(jax.nn.log_softmax(logits_bv, axis=-1), tokens_b[:, None],
                                   axis=-1)[:, 0]
  return tokens_b, jnp.where(greedy, 0.0, sample_logp_b), raw_logp_b


def generate_tokens(model: nn.Module, params: Any, prompts_bp: jnp.ndarray,
                    prompt_lengths_b: jnp.ndarray, max_new_b: jnp.ndarray, rng: jax.Array,
                    temperature: jnp.ndarray, top_k: jnp.ndarray, top_p: jnp.ndarray,
                    stop_tokens_s: jnp.ndarray, pad_id: int, num_new: int,
                    use_cache: bool = True, vocab_limit: int | None = None,
                    stop_table_mvq: jnp.ndarray | None = None) -> dict:
  """The pure sampling function (jit it): prompts right-aligned in [B, P] -> dict of arrays.

  max_new_b: [B] tokens to generate at most per row (<= num_new; 0 for padding rows).
  stop_tokens_s: [S] ids that end a row (pad with -1).
  use_cache=False recomputes the whole sequence every step instead (the slow reference).
  vocab_limit: sample only ids below it (see _pick).
  stop_table_mvq: stop strings (stop_strings.table): a row also ends when its text contains one.
  """
  cfg = model.cfg
  pick = functools.partial(_pick, rng=rng, rows_b=jnp.arange(prompts_bp.shape[0]),
                           temperature=temperature, top_k=top_k, top_p=top_p,
                           vocab_limit=vocab_limit)
  batch, prompt_len = prompts_bp.shape
  total_len = prompt_len + num_new
  pad_b = prompt_len - prompt_lengths_b
  slots_s = jnp.arange(total_len)
  kv_mask_bs = slots_s[None, :] >= pad_b[:, None]
  positions_bs = jnp.maximum(slots_s[None, :] - pad_b[:, None], 0)
  apply = functools.partial(model.apply, {"params": params})

  if use_cache:
    logits_bpv, cache = apply(prompts_bp, positions_bs[:, :prompt_len],
                              cache=transformer.init_cache(cfg, batch, total_len), cache_index=0,
                              kv_mask_bs=kv_mask_bs)
    first_logits_bv, memory = logits_bpv[:, -1], cache
  else:  # the sequence so far, in slots; segment 0 marks padding
    buffer_bs = jnp.full((batch, total_len), pad_id, jnp.int32).at[:, :prompt_len].set(prompts_bp)
    segments_bs = kv_mask_bs.astype(jnp.int32)
    first_logits_bv = apply(buffer_bs, positions_bs, segments_bs)[:, prompt_len - 1]
    memory = buffer_bs

  def next_logits(memory, last_b, slot):
    """Logits after feeding last_b at cache slot `slot`, and the updated cache / buffer."""
    if use_cache:
      positions_b1 = jax.lax.dynamic_slice_in_dim(positions_bs, slot, 1, axis=1)
      logits_b1v, memory = apply(last_b[:, None], positions_b1, cache=memory, cache_index=slot,
                                 kv_mask_bs=kv_mask_bs)
      return logits_b1v[:, 0], memory
    memory = jax.lax.dynamic_update_slice_in_dim(memory, last_b[:, None], slot, axis=1)
    logits_bsv = apply(memory, positions_bs, kv_mask_bs.astype(jnp.int32))
    return jax.lax.dynamic_index_in_dim(logits_bsv, slot, axis=1, keepdims=False), memory

  def finish(state, tokens_b, logp_b, raw_b):
    """Writes step i's tokens for rows still running; marks rows that end here."""
    i, done_b = state["i"], state["done"]
    live_b = ~done_b

    def put(out, x, fill):
      return out.at[:, i].set(jnp.where(live_b, x, fill))

    is_stop_b = jnp.any(tokens_b[:, None] == stop_tokens_s[None, :], axis=-1)
    if stop_table_mvq is not None:  # each stop string's automaton reads the token's bytes
      num_strings, vocab, num_states = stop_table_mvq.shape
      stop_bm = stop_table_mvq[jnp.arange(num_strings)[None, :],
                               jnp.clip(tokens_b, 0, vocab - 1)[:, None],
                               state["stop_state"]].astype(jnp.int32)
      is_stop_b |= jnp.any(stop_bm == num_states - 1, axis=-1)
      state = dict(state, stop_state=stop_bm)
    return dict(state, i=i + 1, last=tokens_b,
                tokens=put(state["tokens"], tokens_b, pad_id),
                logprobs=put(state["logprobs"], logp_b, 0.0),
                raw_logprobs=put(state["raw_logprobs"], raw_b, 0.0),
                lengths=state["lengths"] + live_b,
                stopped=state["stopped"] | (live_b & is_stop_b),
                done=done_b | is_stop_b | (i + 1 >= max_new_b))

  state = dict(
      i=jnp.int32(0), memory=memory, done=max_new_b <= 0, last=jnp.zeros((batch,), jnp.int32),
      tokens=jnp.full((batch, num_new), pad_id, jnp.int32),
      logprobs=jnp.zeros((batch, num_new), jnp.float32),
      raw_logprobs=jnp.zeros((batch, num_new), jnp.float32),
      lengths=jnp.zeros((batch,), jnp.int32), stopped=jnp.zeros((batch,), bool))
  if stop_table_mvq is not None:
    state["stop_state"] = jnp.zeros((batch, stop_table_mvq.shape[0]), jnp.int32)
  state = finish(state, *pick(first_logits_bv, step=0))

  def body(state):
    i = state["i"]  # tokens generated so far; the last one goes to slot P + i - 1
    logits_bv, memory = next_logits(state["memory"], state["last"], prompt_len + i - 1)
    picked = pick(logits_bv, step=i)
    return finish(dict(state, memory=memory), *picked)

  def cond(state):
    return (state["i"] < num_new) & ~jnp.all(state["done"])

  state = jax.lax.while_loop(cond, body, state)
  return {k: state[k] for k in ("tokens", "lengths", "logprobs", "raw_logprobs", "stopped")}


def bucket(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= n, or the next power of two above the largest bucket."""
  for b in buckets:
    if n <= b:
      return b
  return 1 << (n - 1).bit_length()


POWERS_OF_TWO = tuple(1 << i for i in range(20))


class Sampler:
  """Generates from a model and its params, compiling once per (batch, prompt, new) bucket.

  mesh / rules: when the params are sharded on a mesh, the logical axis rules to trace under.
  use_cache=False recomputes the full forward pass each step (a reference for tests and speed).
  vocab_limit: the tokenizer's size when the model's vocabulary is padded past it.
  `num_compiles` counts programs traced so far.
  """

  def __init__(self, model: nn.Module, params: Any, pad_id: int, *, mesh=None, rules=(),
               batch_buckets: Sequence[int] = POWERS_OF_TWO,
               length_buckets: Sequence[int] = tuple(b for b in POWERS_OF_TWO if b >= 16),
               max_stop_tokens: int = 8, use_cache: bool = True,
               vocab_limit: int | None = None):
    cfg = getattr(model, "cfg", None)
    if cfg is not None and not cfg.causal:
      raise UserError("the sampler decodes left to right and needs a causal model; this one is "
                      "bidirectional (config.model.causal=False, a masked-LM run).")
    self.model, self.params, self.pad_id = model, params, pad_id
    self.use_cache, self.vocab_limit = use_cache, vocab_limit
    self.mesh, self.rules = mesh, tuple(rules)
    self.batch_buckets, self.length_buckets = tuple(batch_buckets), tuple(length_buckets)
    self.max_stop_tokens = max_stop_tokens
    self.num_compiles = 0
    self._jitted = jax.jit(self._traced, static_argnames=("num_new",))

  def _traced(self, params, prompts_bp, prompt_lengths_b, max_new_b, rng, temperature, top_k,
              top_p, stop_tokens_s, stop_table_mvq=None, *, num_new):
    self.num_compiles += 1  # runs at trace time only
    return generate_tokens(self.model, params, prompts_bp, prompt_lengths_b, max_new_b, rng,
                           temperature, top_k, top_p, stop_tokens_s, self.pad_id, num_new,
                           self.use_cache, self.vocab_limit, stop_table_mvq)

  def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], *,
               temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               stop_tokens: Sequence[int] = (), seed: int = 0,
               stop_table: np.ndarray | None = None) -> SampleOutput:
    """Samples a completion for each prompt (token lists of any lengths >= 1).

    temperature 0 is greedy decoding. max_new_tokens is one count or one per prompt.
    stop_table: stop strings (jaxllm.inference.stop_strings.table); a row whose text contains
    one ends there (`stopped`), its last token holding the string's end.
    """
    if not prompts:
      raise UserError("generate() needs at least one prompt.")
    lengths = [len(p) for p in prompts]
    if min(lengths) < 1:
      raise UserError(f"prompt {lengths.index(0)} is empty; every prompt needs a token (a BOS).")
    max_new = ([int(max_new_tokens)] * len(prompts) if np.ndim(max_new_tokens) == 0
               else [int(n) for n in max_new_tokens])
    if len(max_new) != len(prompts) or min(max_new) < 0:
      raise UserError(f"max_new_tokens={max_new_tokens!r}: give one count >= 0, or one per "
                      f"prompt ({len(prompts)}).")
    if len(stop_tokens) > self.max_stop_tokens:
      raise UserError(f"{len(stop_tokens)} stop tokens; at most {self.max_stop_tokens} "
                      "(Sampler(max_stop_tokens=...)).")
    if top_k < 0 or not 0.0 < top_p <= 1.0 or temperature < 0:
      raise UserError(f"temperature={temperature} (>= 0), top_k={top_k} (>= 0) and "
                      f"top_p={top_p} (in (0, 1]) are out of range.")
    num = len(prompts)
    batch = bucket(num, self.batch_buckets)
    prompt_len = bucket(max(lengths), self.length_buckets)
    num_new = bucket(max(max(max_new), 1), self.length_buckets)
    prompts_bp = np.full((batch, prompt_len), self.pad_id, np.int32)
    prompt_lengths_b = np.ones((batch,), np.int32)
    for b, p in enumerate(prompts):
      prompts_bp[b, prompt_len - len(p):] = p
      prompt_lengths_b[b] = len(p)
    max_new_b = np.zeros((batch,), np.int32)
    max_new_b[:num] = max_new
    stops = np.full((self.max_stop_tokens,), -1, np.int32)
    stops[:len(stop_tokens)] = stop_tokens
    args = (self.params, prompts_bp, prompt_lengths_b, max_new_b, jax.random.key(seed),
            np.float32(temperature), np.int32(top_k), np.float32(top_p), stops, stop_table)
    with mesh_context(self.mesh, self.rules):
      out = self._jitted(*args, num_new=num_new)
    out = sharding_lib.fetch(out)  # whole in every process (the rows may be split over hosts)
    return SampleOutput(tokens=out["tokens"][:num, :max(max_new)],
                        lengths=out["lengths"][:num],
                        logprobs=out["logprobs"][:num, :max(max_new)],
                        raw_logprobs=out["raw_logprobs"][:num, :max(max_new)],
                        stopped=out["stopped"][:num])


def mesh_context(mesh, rules):
  """Mesh and logical rules for tracing sharded params (nothing without a mesh)."""
  stack = contextlib.ExitStack()
  if mesh is not None:
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(rules))
  return stack
