"""Masked language modeling (BERT / RoBERTa): corrupt some tokens, predict the originals.

For a bidirectional model (config.model.causal=False). Each step draws a fresh corruption from
its rng (RoBERTa's dynamic masking): every eligible position (a real token, segment id > 0, that
is not a special token such as BOS/EOS/PAD/mask) is chosen independently with probability
`mask_rate` (0.15), as Hugging Face's DataCollatorForLanguageModeling does; of the chosen,
`mask_token_prob` (0.8) become the mask token, `random_token_prob` (0.1) a uniformly drawn
regular (non-special) token, and the rest stay as they are. The loss is the cross-entropy of
the ORIGINAL token at the chosen positions only, so the model cannot learn to copy its input.
Evaluation (rng=None) masks with a fixed key, so eval numbers are comparable across steps.

The packed text rows of jaxllm/data/batching.py serve as they are: the row is `inputs` (the
next-token shift of `targets` plays no part), and segment ids keep attention and masking
within each document. The loss follows the objective contract of jaxllm/objectives/lm.py:
a sum over the chosen positions, metrics["weight"] = their number, "nll" and "accuracy" sums.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxllm.objectives import lm

MASK_TOKEN = "<|mask|>"


@dataclasses.dataclass(frozen=True)
class Masking:
  """How to corrupt a row. Ids index the tokenizer (model vocab padding is never drawn)."""

  mask_id: int
  special_ids: tuple[int, ...]  # never chosen, never drawn as a random replacement
  vocab_size: int  # the tokenizer's: random replacements are regular ids below it
  mask_rate: float = 0.15
  mask_token_prob: float = 0.8
  random_token_prob: float = 0.1
  eval_seed: int = 0

  def regular_ids(self) -> np.ndarray:
    """The ids a random replacement is drawn from, int32 [R]."""
    return np.setdiff1d(np.arange(self.vocab_size), self.special_ids).astype(np.int32)


def special_ids(tokenizer) -> tuple[int, ...]:
  """Ids of the tokenizer's special tokens (BOS, EOS, PAD, chat markers, mask, unk ...)."""
  added = tokenizer.hf_tokenizer.get_added_tokens_decoder()
  return tuple(sorted(i for i, token in added.items() if token.special))


def masking(mlm_config: ml_collections.ConfigDict, tokenizer) -> Masking:
  """config.mlm and the run's tokenizer (which holds config.mlm.mask_token) -> Masking."""
  m = mlm_config
  return Masking(mask_id=tokenizer.token_id(m.mask_token), special_ids=special_ids(tokenizer),
                 vocab_size=tokenizer.vocab_size, mask_rate=m.mask_rate,
                 mask_token_prob=m.mask_token_prob, random_token_prob=m.random_token_prob,
                 eval_seed=m.eval_seed)


def mask_tokens(tokens_bt: jax.Array, rng: jax.Array, masking: Masking,
                segment_ids_bt: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(corrupted tokens [B, T], chosen [B, T] bool) for a row of tokens; pure and jittable.

  Which positions are chosen and what each becomes depend only on `rng` and on which positions
  are eligible, never on the token values themselves.
  """
  shape = tokens_bt.shape
  eligible_bt = ~jnp.isin(tokens_bt, np.asarray(masking.special_ids, np.int32))
  if segment_ids_bt is not None:
    eligible_bt &= segment_ids_bt > 0
  choose_key, action_key, random_key = jax.random.split(rng, 3)
  chosen_bt = eligible_bt & (jax.random.uniform(choose_key, shape) < masking.mask_rate)
  action_bt = jax.random.uniform(action_key, shape)
  to_mask_bt = chosen_bt & (action_bt < masking.mask_token_prob)
  to_random_bt = chosen_bt & ~to_mask_bt & (
      action_bt < masking.mask_token_prob + masking.random_token_prob)
  regular_r = jnp.asarray(masking.regular_ids())
  random_bt = regular_r[jax.random.randint(random_key, shape, 0, regular_r.shape[0])]
  corrupted_bt = jnp.where(to_mask_bt, jnp.asarray(masking.mask_id, tokens_bt.dtype),
                           jnp.where(to_random_bt, random_bt.astype(tokens_bt.dtype), tokens_bt))
  return corrupted_bt, chosen_bt


def mlm_batch(batch: dict[str, jax.Array], rng: jax.Array,
              masking: Masking) -> dict[str, jax.Array]:
  """A packed text batch -> the LM batch of its MLM task: corrupted `inputs` in, the original
  tokens as `targets`, `loss_mask` on the chosen positions; positions and segment ids kept."""
  tokens_bt = batch["inputs"]
  segment_ids_bt = batch.get("segment_ids")
  corrupted_bt, chosen_bt = mask_tokens(tokens_bt, rng, masking, segment_ids_bt)
  out = {"inputs": corrupted_bt, "targets": tokens_bt,
         "loss_mask": chosen_bt.astype(jnp.float32)}
  for key in ("positions", "segment_ids"):
    if batch.get(key) is not None:
      out[key] = batch[key]
  return out


def mlm_loss(params, batch: dict[str, jax.Array], rng: jax.Array | None, model,
             masking: Masking, z_loss: float = 0.0,
             chunk: int = 0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MLM loss (sum over chosen positions) and metrics; `model` must be bidirectional.

  rng=None means evaluation: no dropout, and the corruption of jax.random.key(eval_seed).
  z_loss and chunk as in lm.lm_loss.
  """
  if rng is None:
    mask_rng, dropout_rng = jax.random.key(masking.eval_seed), None
  else:
    mask_rng, dropout_rng = jax.random.split(rng)
  return lm.lm_loss(params, mlm_batch(batch, mask_rng, masking), dropout_rng, model,
                    z_loss=z_loss, chunk=chunk)
