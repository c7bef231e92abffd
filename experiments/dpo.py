"""Preference optimisation from an SFT run: DPO, conservative DPO, DPOP, IPO, SimPO or ORPO.

  python experiments/dpo.py --config=configs/dpo/tiny.py --workdir=/tmp/jaxllm/dpo \\
      --config.init.checkpoint=/tmp/jaxllm/sft
  ... --config.preference.loss=ipo  (or dpop, simpo, orpo; --config.preference.label_smoothing=0.1
      with dpo is conservative DPO; --config.lora.rank=8 trains LoRA adapters only)

The policy starts from the init run, which is also the frozen reference. With
config.preference.reference="precomputed" the reference log-probs of every pair are computed
once into WORKDIR/reference_logps.json and carried in the batches; with "in_step" the reference
runs in every step (for a LoRA policy that is the base model without adapters, so no second
copy of the params is held). Every eval step logs the held-out pairs' rewards/accuracy and
margins, and the exact match of greedy answers to held-out questions (eval/qa_accuracy).
Running again with the same --workdir resumes from its newest checkpoint.
"""

import functools

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.data import inputs
from jaxllm.eval import qa
from jaxllm.inference import runs
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.models.frozen import WithFrozen
from jaxllm.objectives import preference
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.rl import policy_pairs
from jaxllm.train import loop, reference_logps


def run(config, workdir, hooks=()):
  """Loads the init run (policy and reference), builds the pairs and runs the one loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the SFT run (or Hugging Face model) to align")
  config_lib.validate_preference(config)
  init = runs.start_from(config, workdir)
  policy_pairs.prepare_for_run(config, workdir, init)  # with config.data.on_policy.samples > 0
  tokenizer = init.tokenizer
  model_cfg = config_lib.validate(config)
  lora = lora_lib.LoraConfig.from_config(config.lora)
  p = config.preference
  needs_reference = p.loss not in preference.REFERENCE_FREE
  precomputed = needs_reference and p.reference == "precomputed"
  table = (reference_logps.for_run(config, workdir, Transformer(model_cfg), init.params, tokenizer)
           if precomputed else None)
  train_iter, eval_batches = inputs.preference_pairs(config, workdir, tokenizer, table)
  loss_fn = functools.partial(
      preference.preference_loss, loss_type=p.loss, beta=p.beta,
      label_smoothing=p.label_smoothing, gamma=p.simpo_gamma, sft_weight=p.sft_weight,
      dpop_lambda=p.dpop_lambda, reference=p.reference)
  evals = qa.training_eval(config, model_cfg, tokenizer, lora)
  if lora is not None:  # adapters train; the init params are frozen (and are the reference)
    model, init_params, frozen = (lora_lib.LoraModel(Transformer(model_cfg, lora=lora)), None,
                                  init.params)
  elif needs_reference and not precomputed:  # the policy trains beside a frozen reference copy
    model, init_params, frozen = WithFrozen(Transformer(model_cfg)), init.params, init.params
  else:
    model, init_params, frozen = Transformer(model_cfg), init.params, None
  try:
    return loop.train(config, workdir, model, loss_fn, train_iter, eval_batches,
                      init_params=init_params, hooks=hooks, frozen_params=frozen, evals=evals,
                      sequences_per_row=2)
  finally:
    train_iter.close()


if __name__ == "__main__":
  cli.run_stage(run, "Config file (see configs/dpo/).")
