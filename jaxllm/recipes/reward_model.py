"""Reward model: Bradley-Terry on preference pairs with a scalar head over an SFT (or pretrained)
run's backbone.

  python experiments/reward_model.py --config=configs/reward/tiny.py --workdir=/tmp/jaxllm/rm \\
      --config.init.checkpoint=/tmp/jaxllm/sft

The backbone starts from the init run (its output head is dropped) and a fresh score head reads
the hidden state of each sequence's last token (jaxllm/models/reward.py). Pairs come from
config.data.source ("world": the world's preference pairs; or .jsonl files); config.data.annotator
relabels the training pairs with a simulated annotator's noise and length bias, while eval pairs
keep their true labels, so eval/accuracy is the held-out pairwise accuracy.
jaxllm.inference.scoring.RewardScorer scores conversations with the trained run. `pairs_config`
and `validate_pairs` are the pair-data fields this stage shares with DPO (jaxllm/recipes/dpo.py).
"""

import functools

import jax
import ml_collections

from jaxllm import cli, rundir, runs
from jaxllm import config as config_lib
from jaxllm.data import inputs, preferences
from jaxllm.errors import ConfigError
from jaxllm.models import reward
from jaxllm.objectives.reward import reward_loss
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.recipes import sft
from jaxllm.rl import policy_pairs
from jaxllm.train import aot, loop

# The progress line's stage keys (jaxllm/train/loop.py adds loss, accuracy, tok/s, ...).
PROGRESS = (("train/margin", "margin {:.3f}"), ("eval/margin", "eval margin {:.3f}"))


def pairs_config(size: str, stage: str) -> ml_collections.ConfigDict:
  """Fields shared by the reward-model and DPO stages: pairs from the world or .jsonl files."""
  c = sft.default_config(size, stage)
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


def validate_pairs(config: ml_collections.ConfigDict) -> None:
  """The pair-data fields of the reward-model and DPO stages."""
  if config.data.packing != "rows":
    raise ConfigError(f"config.data.packing={config.data.packing!r}: preference pairs are rows "
                      "of their own; set it to 'rows'.")


def default_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Reward model: a scalar head on the init run's backbone, Bradley-Terry on pairs."""
  c = pairs_config(size, "reward_model")
  c.reward = ml_collections.ConfigDict()
  c.reward.center_coefficient = 0.0  # c * (r_chosen + r_rejected)^2 keeps rewards near 0
  c.reward.use_margin = False  # subtract each pair's "margin" inside the sigmoid
  # w > 0: keep the LM head and add w * NLL(chosen reply) (hidden-state regularisation, GRM)
  c.reward.lm_weight = 0.0
  c.eval.qa_source = ""  # a reward model does not answer questions
  c.optimizer.lr = 1e-4
  c.optimizer.weight_decay = 0.0
  return c


def validate_fields(config: ml_collections.ConfigDict) -> None:
  """The reward-model stage's own fields, before anything is loaded."""
  validate_pairs(config)
  if config.lora.rank:
    raise ConfigError(f"config.lora.rank={config.lora.rank}: reward models train every "
                      "parameter here (the score head must train with the backbone); set 0.")
  for name in ("center_coefficient", "lm_weight"):
    if config.reward[name] < 0:
      raise ConfigError(f"config.reward.{name}={config.reward[name]} must be >= 0.")


def validate(config: ml_collections.ConfigDict):
  """Every field of a reward-model run; returns the model config."""
  validate_fields(config)
  return config_lib.validate(config)


def loss_fn(config):
  return functools.partial(reward_loss, center_coefficient=config.reward.center_coefficient,
                           use_margin=config.reward.use_margin, lm_weight=config.reward.lm_weight)


def step_spec(config) -> aot.StepSpec:
  """The train step without data (experiments/compile.py)."""
  model = runs.reward_model(config, validate(config))
  return aot.StepSpec(model, loss_fn(config), preferences.pair_layout(config.data.seq_len),
                      sequences_per_row=2, lm_head=model.lm_head)


@rundir.claims_workdir
def run(config, workdir, hooks=()):
  """Loads the init run, builds the pairs and trains the reward model with the one loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the SFT (or pretrained) run the reward model starts from")
  validate_fields(config)
  init = runs.start_from(config, workdir)
  policy_pairs.prepare_for_run(config, workdir, init)  # with config.data.on_policy.samples > 0
  model_cfg = validate(config)
  model = runs.reward_model(config, model_cfg)
  params = reward.params_from_lm(init.params, model_cfg,
                                 jax.random.fold_in(jax.random.key(config.seed), 2),
                                 keep_lm_head=model.lm_head)
  train_iter, eval_batches = inputs.preference_pairs(config, workdir, init.tokenizer)
  try:
    return loop.train(config, workdir, model, loss_fn(config), train_iter,
                      eval_batches, init_params=params, hooks=hooks, sequences_per_row=2,
                      progress=PROGRESS)
  finally:
    train_iter.close()


def main():
  """python -m jaxllm.recipes.reward_model --config=FILE --workdir=DIR
  (experiments/reward_model.py)."""
  cli.run_stage(run, "Config file (see configs/reward/).")


if __name__ == "__main__":
  main()
