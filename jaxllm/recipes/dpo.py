"""Preference optimisation from an SFT run: DPO, conservative DPO, DPOP, IPO, SimPO or ORPO (+ RPO),
full or LoRA.

  python experiments/dpo.py --config=configs/dpo/tiny.py --workdir=/tmp/jaxllm/dpo \\
      --config.init.checkpoint=/tmp/jaxllm/sft

The policy starts from the init run, which is also the frozen reference. With
config.preference.reference="precomputed" the reference log-probs of every pair are computed
once into WORKDIR/reference_logps.json (jaxllm/train/reference_logps.py) and carried in the
batches; with "in_step" the reference runs in every step (jaxllm/models/frozen.py; for a LoRA
policy that is the base model without adapters, so no second copy of the params is held).
Every eval step logs the held-out pairs' rewards/accuracies and margins, and the exact match of
greedy answers to held-out questions (eval/qa_accuracy).
"""

import functools

import ml_collections

from jaxllm import cli, rundir, runs
from jaxllm import config as config_lib
from jaxllm.data import inputs, preferences
from jaxllm.errors import ConfigError
from jaxllm.eval import qa
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.models.frozen import WithFrozen
from jaxllm.objectives import preference
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.recipes import reward_model
from jaxllm.rl import policy_pairs
from jaxllm.train import aot, loop, reference_logps

# The progress line's stage keys (jaxllm/train/loop.py adds loss, gradient norm, tok/s, ...).
PROGRESS = (("train/rewards/accuracies", "pair acc {:.3f}"),
            ("train/rewards/margins", "margin {:.3f}"),
            ("eval/rewards/accuracies", "eval pair acc {:.3f}"),
            ("eval/rewards/margins", "eval margin {:.3f}"), ("eval/qa_accuracy", "qa acc {:.3f}"))


def default_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """The DPO family (jaxllm/objectives/preference.py) from an SFT run, full or LoRA."""
  c = reward_model.pairs_config(size, "dpo")
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


def validate_fields(config: ml_collections.ConfigDict) -> None:
  """The DPO stage's own fields, before anything is loaded."""
  reward_model.validate_pairs(config)
  p = config.preference
  if p.loss not in preference.LOSS_TYPES:
    raise ConfigError(f"config.preference.loss={p.loss!r} is not one of "
                      f"{preference.LOSS_TYPES}.")
  if p.reference not in preference.REFERENCES:
    raise ConfigError(f"config.preference.reference={p.reference!r} is not one of "
                      f"{preference.REFERENCES}.")
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


def validate(config: ml_collections.ConfigDict):
  """Every field of a DPO run; returns the model config."""
  validate_fields(config)
  lora_lib.LoraConfig.from_config(config.lora)
  return config_lib.validate(config)


def loss_fn(config):
  p = config.preference
  return functools.partial(
      preference.preference_loss, loss_type=p.loss, beta=p.beta,
      label_smoothing=p.label_smoothing, gamma=p.simpo_gamma, sft_weight=p.sft_weight,
      dpop_lambda=p.dpop_lambda, reference=p.reference)


def policy_model(config, model_cfg) -> tuple[object, str]:
  """(the model trained, what its frozen params are): "lora" (adapters train; the init params
  are frozen and are the reference), "reference" (the policy trains beside a frozen reference
  copy of the init params), or "" (no frozen params: reference-free, or a precomputed table)."""
  p = config.preference
  lora = lora_lib.LoraConfig.from_config(config.lora)
  if lora is not None:
    return lora_lib.LoraModel(Transformer(model_cfg, lora=lora)), "lora"
  if p.loss not in preference.REFERENCE_FREE and p.reference != "precomputed":
    return WithFrozen(Transformer(model_cfg)), "reference"
  return Transformer(model_cfg), ""


def step_spec(config) -> aot.StepSpec:
  """The train step without data (experiments/compile.py)."""
  validate_fields(config)
  model_cfg = validate(config)
  p = config.preference
  precomputed = p.loss not in preference.REFERENCE_FREE and p.reference == "precomputed"
  model, frozen = policy_model(config, model_cfg)
  return aot.StepSpec(model, loss_fn(config),
                      preferences.pair_layout(config.data.seq_len, reference=precomputed),
                      frozen=bool(frozen), sequences_per_row=2, lora=frozen == "lora")


@rundir.claims_workdir
def run(config, workdir, hooks=()):
  """Loads the init run (policy and reference), builds the pairs and runs the one loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the SFT run (or Hugging Face model) to align")
  validate_fields(config)
  init = runs.start_from(config, workdir)
  policy_pairs.prepare_for_run(config, workdir, init)  # with config.data.on_policy.samples > 0
  tokenizer = init.tokenizer
  model_cfg = validate(config)
  lora = lora_lib.LoraConfig.from_config(config.lora)
  p = config.preference
  needs_reference = p.loss not in preference.REFERENCE_FREE
  precomputed = needs_reference and p.reference == "precomputed"
  table = (reference_logps.for_run(config, workdir, Transformer(model_cfg), init.params, tokenizer)
           if precomputed else None)
  train_iter, eval_batches = inputs.preference_pairs(config, workdir, tokenizer, table)
  evals = qa.training_eval(config, model_cfg, tokenizer, lora)
  model, frozen_kind = policy_model(config, model_cfg)
  init_params = None if frozen_kind == "lora" else init.params  # LoRA: fresh adapters train
  frozen = init.params if frozen_kind else None
  try:
    return loop.train(config, workdir, model, loss_fn(config), train_iter, eval_batches,
                      init_params=init_params, hooks=hooks, frozen_params=frozen, evals=evals,
                      sequences_per_row=2, progress=PROGRESS)
  finally:
    train_iter.close()


def main():
  """python -m jaxllm.recipes.dpo --config=FILE --workdir=DIR (experiments/dpo.py)."""
  cli.run_stage(run, "Config file (see configs/dpo/).")


if __name__ == "__main__":
  main()
