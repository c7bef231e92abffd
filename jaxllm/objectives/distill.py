"""Knowledge distillation: a student trained on a frozen teacher's logits and on the data.

Per target token (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"):

  loss = kd_weight * T^2 * KL(p_teacher^T || p_student^T) + (1 - kd_weight) * CE(student, data)

where p^T = softmax(logits / T) is the distribution at temperature T. The T^2 factor keeps the
gradient of the KL term on the scale of the cross-entropy's as T changes (its gradient w.r.t. the
student's logits is (p_student^T - p_teacher^T) / T). kd_weight = 0 is the student trained on
the data alone; kd_weight = 1 matches the teacher alone. The KL is the forward one (the
teacher's distribution weights the log-ratio), so the student covers every token the teacher
finds likely.

`with_teacher(student, teacher)` is the student with the teacher's params as its frozen params
(jaxllm/models/frozen.py, as a LoRA base or a DPO reference): its params are the student's
(`init`/`apply`), the teacher's are bound inside the compiled step, and `frozen_model` is the
teacher Transformer. The training loop (jaxllm/train/loop.py, `frozen_params`) places them on
the mesh, passes them to every step unchanged, gives them no optimizer state and does not
checkpoint them. The loss follows the
objective contract of jaxllm/objectives/lm.py: sums over target tokens, metrics["weight"] = their
number; "nll" is the student's data cross-entropy (so eval/perplexity is the student's plain
perplexity), "kl" the KL at temperature T (without T^2), "teacher_nll" the teacher's
cross-entropy on the same tokens.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxllm.errors import ConfigError
from jaxllm.models.frozen import WithFrozen
from jaxllm.models.transformer import dense
from jaxllm.objectives import lm


def with_teacher(student: nn.Module, teacher: nn.Module) -> WithFrozen:
  """The student, with the teacher as the module of its frozen params (jaxllm/models/frozen.py);
  ConfigError when their vocabularies differ (the losses compare logits id by id)."""
  student_vocab, teacher_vocab = student.cfg.vocab_size, teacher.cfg.vocab_size
  if student_vocab != teacher_vocab:
    raise ConfigError(
        f"config.model.vocab_size={student_vocab} (the student) differs from the teacher's "
        f"model.vocab_size={teacher_vocab} (config.teacher.checkpoint's config.json); the "
        f"losses compare logits id by id, so set config.model.vocab_size={teacher_vocab} "
        "(or 0 for the teacher's).")
  return WithFrozen(student, frozen_module=teacher)


def check_weights(temperature: float, kd_weight: float) -> None:
  """ConfigError naming config.distill's field when a weight is out of range."""
  if not temperature > 0:
    raise ConfigError(f"config.distill.temperature={temperature} must be positive (1 is the "
                      "plain softmax; Hinton et al. use 1 to 20).")
  if not 0.0 <= kd_weight <= 1.0:
    raise ConfigError(f"config.distill.kd_weight={kd_weight} must be in [0, 1] (0: the data "
                      "alone, 1: the teacher alone).")


def distill_sums(student_logits_btv: jax.Array, teacher_logits_btv: jax.Array,
                 targets_bt: jax.Array, mask_bt: jax.Array, temperature: float,
                 kd_weight: float, z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Sum over tokens where mask is nonzero of kd_weight * T^2 * KL + (1 - kd_weight) * CE
  (+ z_loss * logsumexp^2 of the student's logits); softmaxes and KL in float32."""
  mask_bt = mask_bt.astype(jnp.float32)
  _, metrics = lm.masked_lm_sums(student_logits_btv, targets_bt, mask_bt, z_loss)
  teacher_logits_btv = teacher_logits_btv.astype(jnp.float32)
  log_p_teacher_btv = jax.nn.log_softmax(teacher_logits_btv / temperature, axis=-1)
  log_p_student_btv = jax.nn.log_softmax(
      student_logits_btv.astype(jnp.float32) / temperature, axis=-1)
  kl_bt = jnp.sum(jnp.exp(log_p_teacher_btv) * (log_p_teacher_btv - log_p_student_btv), axis=-1)
  teacher_nll_bt, _ = lm.token_cross_entropy(teacher_logits_btv, targets_bt)
  metrics.update(kl=jnp.sum(kl_bt * mask_bt), teacher_nll=jnp.sum(teacher_nll_bt * mask_bt))
  loss = (kd_weight * temperature ** 2 * metrics["kl"] + (1.0 - kd_weight) * metrics["nll"]
          + z_loss * metrics.get("z_loss", 0.0))
  return loss, metrics


def chunked_distill_sums(student_hidden_btd: jax.Array, student_head_dv: jax.Array,
                         teacher_hidden_btd: jax.Array, teacher_head_dv: jax.Array,
                         targets_bt: jax.Array, mask_bt: jax.Array, chunk: int,
                         temperature: float, kd_weight: float,
                         z_loss: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """distill_sums over pieces of `chunk` positions (as lm.chunked_lm_sums): neither model's
  whole float32 [B, T, V] logits are ever in memory; the backward pass recomputes each piece."""
  b, t, _ = student_hidden_btd.shape
  if chunk <= 0 or t % chunk:
    raise ConfigError(f"config.train.loss_chunk={chunk} must divide the sequence length {t}; "
                      "pick a divisor (or 0 for the whole logits at once).")
  pieces = lambda x: x.reshape(b, t // chunk, chunk, *x.shape[2:]).swapaxes(0, 1)

  def logits(hidden_bcd, head_dv):
    logits_bcv = dense(hidden_bcd, head_dv.astype(hidden_bcd.dtype), 1, jnp.float32)
    return nn.with_logical_constraint(logits_bcv, ("act_batch", "act_len", "act_vocab"))

  @jax.checkpoint
  def piece_sums(student_bcd, teacher_bcd, targets_bc, mask_bc):
    return distill_sums(logits(student_bcd, student_head_dv), logits(teacher_bcd, teacher_head_dv),
                        targets_bc, mask_bc, temperature, kd_weight, z_loss)

  def body(total, xs):
    return jax.tree.map(jnp.add, total, piece_sums(*xs)), None

  xs = (pieces(student_hidden_btd), pieces(teacher_hidden_btd), pieces(targets_bt),
        pieces(mask_bt))
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                       jax.eval_shape(piece_sums, *(jax.tree.map(lambda x: x[0], xs))))
  total, _ = jax.lax.scan(body, zeros, xs)
  return total


def distill_loss(params, batch: dict[str, jax.Array], rng: jax.Array, model: WithFrozen,
                 temperature: float, kd_weight: float, z_loss: float = 0.0,
                 chunk: int = 0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The student's distillation loss on a packed LM batch (inputs, targets, loss_mask [B, T];
  optional positions, segment_ids). `model` is `with_teacher(...)` with the teacher's params bound.

  rng=None means evaluation (no dropout in the student; the teacher never has dropout).
  chunk > 0: the logits of both models are made piece by piece (chunked_distill_sums).
  """
  check_weights(temperature, kd_weight)
  inputs = lm.model_inputs(batch)
  student_kwargs = {"deterministic": rng is None,
                    "rngs": {} if rng is None else {"dropout": rng}}
  if chunk:
    student_hidden_btd = model.model.clone(output="hidden").apply(
        {"params": params}, batch["inputs"], **inputs, **student_kwargs)
    teacher = model.frozen_model
    teacher_hidden_btd = model.frozen_apply(
        batch["inputs"], module=teacher.clone(output="hidden"), deterministic=True, **inputs)
    teacher_head_dv = jax.lax.stop_gradient(lm.output_head(teacher, model.bound_frozen()))
    return chunked_distill_sums(student_hidden_btd, lm.output_head(model.model, params),
                                teacher_hidden_btd, teacher_head_dv, batch["targets"],
                                batch["loss_mask"], chunk, temperature, kd_weight, z_loss)
  student_logits_btv = model.apply({"params": params}, batch["inputs"], **inputs,
                                   **student_kwargs)
  teacher_logits_btv = model.frozen_apply(batch["inputs"], deterministic=True, **inputs)
  return distill_sums(student_logits_btv, teacher_logits_btv, batch["targets"],
                      batch["loss_mask"], temperature, kd_weight, z_loss)
