"""Pretrain a decoder LM with next-token prediction.

  python experiments/pretrain.py --config=configs/pretrain/tiny.py --workdir=/tmp/jaxllm/tiny

Any config field can be overridden: --config.train.num_steps=50 --config.model.num_layers=2.
Running again with the same --workdir resumes from its newest checkpoint.
"""

import functools

from absl import flags
from ml_collections import config_flags

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.data import inputs, pipeline
from jaxllm.models import Transformer
from jaxllm.objectives import lm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.train import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (see configs/pretrain/).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir, hooks=()):
  """Builds data, tokenizer, model and loss from `config` and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  train_sources, weights = inputs.open_sources(config.data, "text", "train", workdir)
  tokenizer = inputs.tokenizer(config.data, workdir, train_sources)
  inputs.check_vocab(config, tokenizer.vocab_size)
  model_cfg = config_lib.validate(config)
  train_iter, eval_batches = inputs.train_and_eval(
      config, workdir, "text", pipeline.text_example(tokenizer), train_sources, weights)
  loss_fn = functools.partial(lm.lm_loss, z_loss=config.train.z_loss)
  try:
    return loop.train(config, workdir, Transformer(model_cfg), loss_fn, train_iter, eval_batches,
                      hooks=hooks)
  finally:
    train_iter.close()


def main(argv):
  del argv
  run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
