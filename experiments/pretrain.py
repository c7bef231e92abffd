"""Pretrain a decoder LM with next-token prediction.

  python experiments/pretrain.py --config=configs/pretrain/tiny.py --workdir=/tmp/jaxllm/tiny

Any config field can be overridden: --config.train.num_steps=50 --config.model.num_layers=2.
Running again with the same --workdir resumes from its newest checkpoint.
"""

import functools

import jax
from absl import flags
from ml_collections import config_flags

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.data import corpus, lm_batches
from jaxllm.data.byte_tokenizer import ByteTokenizer
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
  """Builds data, model and loss from `config` and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  model_cfg = config_lib.validate(config)
  tokenizer = ByteTokenizer()
  if model_cfg.vocab_size < tokenizer.vocab_size:
    raise config_lib.ConfigError(
        f"config.model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
        f"{tokenizer.vocab_size} ids; raise it.")
  train_windows, eval_windows = corpus.lm_windows(config.data, tokenizer)
  tc = config.train
  train_iter = lm_batches.BatchIterator(train_windows, tc.batch_size, config.seed, shuffle=True,
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count())

  def eval_batches():  # microbatch-sized, so eval fits wherever a train microbatch fits
    it = lm_batches.BatchIterator(eval_windows, tc.batch_size // tc.microbatches, config.seed,
                                  shuffle=False,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
    return [next(it) for _ in range(tc.eval_batches)]

  loss_fn = functools.partial(lm.lm_loss, z_loss=tc.z_loss)
  return loop.train(config, workdir, Transformer(model_cfg), loss_fn, train_iter, eval_batches,
                    hooks=hooks)


def main(argv):
  del argv
  run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
