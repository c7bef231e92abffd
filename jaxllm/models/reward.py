"""Reward model: the decoder backbone and a scalar head on the last real token of each sequence.

    tokens [B, T], valid [B, T] (1 on real tokens, 0 on padding, left or right)
      -> Transformer(output="hidden") -> hidden [B, T, D]
      -> hidden at the last real token [B, D] -> linear "score" head -> reward [B] (float32)

Padding may sit on either side: positions count real tokens only and padding is its own
attention segment, so a sequence gets the same reward however it is padded. Params are
{"backbone": the LM's params without its output head, "score": {"kernel" [D, 1], "bias" [1]}};
`params_from_lm` builds them from a pretrained or SFT checkpoint with a fresh head.
`PolicyWithValue` is the same head on every position of an LM that keeps its output head: the
policy and value function of PPO.

With `lm_head=True` the backbone keeps the LM's output head and `return_logits=True` also
returns the next-token logits [B, T, V]: the reward loss can then keep a language-modelling
term on the chosen replies (hidden-state regularisation, Yang et al. 2024, "Regularizing Hidden
States Enables Learning Generalizable Reward Model for LLMs").
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.models.config import ModelConfig
from jaxllm.models.transformer import Transformer


def padding_inputs(valid_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(positions, segment_ids) for sequences padded anywhere: positions count real tokens from
  0; segment id 1 on real tokens and 0 on padding, so neither attends to the other."""
  valid_bt = valid_bt.astype(jnp.int32)
  positions_bt = jnp.maximum(jnp.cumsum(valid_bt, axis=1) - 1, 0)
  return positions_bt, valid_bt


def last_token_index(valid_bt: jax.Array) -> jax.Array:
  """Index of the last real token of each row [B] (0 for a row with none)."""
  t = jnp.arange(valid_bt.shape[1])
  return jnp.maximum(jnp.max(jnp.where(valid_bt > 0, t, -1), axis=1), 0)


def head_init_std(d_model: int) -> float:
  """1 / sqrt(D + 1), the score head's init scale (as TRL's reward models)."""
  return 1.0 / np.sqrt(d_model + 1)


class RewardModel(nn.Module):
  """(tokens [B, T], valid [B, T]) -> float32 reward [B]; valid=None means no padding.

  lm_head: keep the LM's output head; then return_logits=True returns (reward [B], logits
  [B, T, V]) where logits[:, t] predict token t + 1.
  """

  cfg: ModelConfig
  lm_head: bool = False

  @nn.compact
  def __call__(self, tokens_bt, valid_bt=None, deterministic: bool = True,
               return_logits: bool = False) -> Any:
    if return_logits and not self.lm_head:
      raise ValueError("RewardModel(lm_head=False) has no logits to return; build it with "
                       "lm_head=True.")
    if valid_bt is None:
      valid_bt = jnp.ones(tokens_bt.shape, jnp.int32)
    positions_bt, segment_ids_bt = padding_inputs(valid_bt)
    backbone = Transformer(self.cfg, output="logits" if self.lm_head else "hidden",
                           name="backbone")
    out = backbone(tokens_bt, positions_bt, segment_ids_bt, deterministic=deterministic,
                   **({"return_hidden": True} if self.lm_head else {}))
    logits_btv, hidden_btd = out if self.lm_head else (None, out)
    last_b = last_token_index(valid_bt)
    hidden_bd = jnp.take_along_axis(hidden_btd, last_b[:, None, None], axis=1)[:, 0]
    reward_b = score_head(self.cfg)(hidden_bd.astype(jnp.float32))[..., 0]
    return (reward_b, logits_btv) if return_logits else reward_b


def score_head(cfg: ModelConfig) -> nn.Dense:
  """The scalar head of reward and value models: float32 Dense(1) named "score"."""
  return nn.Dense(
      1, dtype=jnp.float32, param_dtype=jnp.dtype(cfg.param_dtype),
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.normal(head_init_std(cfg.d_model)), ("embed", None)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
      name="score")


class PolicyWithValue(nn.Module):
  """A policy LM with a value head on its final hidden state, for PPO: (tokens [B, T],
  positions, segment_ids) -> (logits [B, T, V], values [B, T]) with values aligned as the
  policy's log-probs (jaxllm/objectives/policy.py): values[:, t] = V(state before token t), read
  from the hidden state at t - 1 (index 0 holds 0).

  Params {"backbone": the LM's params (output head kept), "score": the value head}: the LM and
  its value function share the trunk (TRL's AutoModelForCausalLMWithValueHead). `params_from_lm(
  ..., keep_lm_head=True)` builds them; `params["backbone"]` alone is the policy to sample from.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_bt, positions_bt=None, segment_ids_bt=None,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    logits_btv, hidden_btd = Transformer(self.cfg, name="backbone")(
        tokens_bt, positions_bt, segment_ids_bt, deterministic=deterministic, return_hidden=True)
    values_bt = score_head(self.cfg)(hidden_btd.astype(jnp.float32))[..., 0]
    return logits_btv, jnp.pad(values_bt[:, :-1], ((0, 0), (1, 0)))


def params_from_lm(lm_params: dict[str, Any], cfg: ModelConfig, rng: jax.Array,
                   keep_lm_head: bool = False) -> dict:
  """Reward-model params from a language model's: its backbone (the output head dropped unless
  `keep_lm_head`, for RewardModel(lm_head=True)) and a freshly initialised score head."""
  backbone = {k: v for k, v in lm_params.items() if keep_lm_head or k != "lm_head"}
  kernel = head_init_std(cfg.d_model) * jax.random.normal(rng, (cfg.d_model, 1))
  dtype = jnp.dtype(cfg.param_dtype)
  return {"backbone": backbone,
          "score": {"kernel": kernel.astype(dtype), "bias": jnp.zeros((1,), dtype)}}
