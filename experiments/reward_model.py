"""Train a reward model on preference pairs: Bradley-Terry on a scalar head over the init run.

  python experiments/reward_model.py --config=configs/reward/tiny.py --workdir=/tmp/jaxllm/rm \\
      --config.init.checkpoint=/tmp/jaxllm/sft

The backbone starts from the init run (an SFT or pretrained run; its output head is dropped)
and a fresh score head reads the hidden state of each sequence's last token
(jaxllm/models/reward.py). Pairs come from config.data.source ("world": the world's preference
pairs); config.data.annotator relabels the training pairs with a simulated annotator's noise and
length bias, while eval pairs keep their true labels, so eval/accuracy is the held-out pairwise
accuracy. jaxllm.inference.scoring.RewardScorer scores conversations with the trained run.
Running again with the same --workdir resumes from its newest checkpoint.
"""

import functools

import jax

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.data import inputs
from jaxllm.errors import ConfigError
from jaxllm.inference import runs
from jaxllm.models import reward
from jaxllm.objectives.reward import reward_loss
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.rl import policy_pairs
from jaxllm.train import loop


def run(config, workdir, hooks=()):
  """Loads the init run, builds the pairs and trains the reward model with the one loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the SFT (or pretrained) run the reward model starts from")
  if config.lora.rank:
    raise ConfigError(f"config.lora.rank={config.lora.rank}: reward models train every "
                      "parameter here (the score head must train with the backbone); set 0.")
  config_lib.validate_preference(config)
  init = runs.start_from(config, workdir)
  policy_pairs.prepare_for_run(config, workdir, init)  # with config.data.on_policy.samples > 0
  model_cfg = config_lib.validate(config)
  model = runs.reward_model(config, model_cfg)
  params = reward.params_from_lm(init.params, model_cfg,
                                 jax.random.fold_in(jax.random.key(config.seed), 2),
                                 keep_lm_head=model.lm_head)
  train_iter, eval_batches = inputs.preference_pairs(config, workdir, init.tokenizer)
  loss_fn = functools.partial(reward_loss, center_coefficient=config.reward.center_coefficient,
                              use_margin=config.reward.use_margin,
                              lm_weight=config.reward.lm_weight)
  try:
    return loop.train(config, workdir, model, loss_fn, train_iter,
                      eval_batches, init_params=params, hooks=hooks, sequences_per_row=2)
  finally:
    train_iter.close()


if __name__ == "__main__":
  cli.run_stage(run, "Config file (see configs/reward/).")
