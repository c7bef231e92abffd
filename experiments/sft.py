"""Supervised fine-tuning on conversations: next-token loss on the assistant's tokens only.

  python experiments/sft.py --config=configs/sft/tiny.py --workdir=/tmp/jaxllm/sft \\
      --config.init.checkpoint=/tmp/jaxllm/tiny

The init run gives the params (a fresh optimizer state), the model config and the tokenizer
(copied into WORKDIR, so the run directory is self-contained). Conversations are rendered with
the ChatML template and packed with segment ids, so examples never attend to each other.
Running again with the same --workdir resumes from its newest checkpoint.
"""

import functools
import json
import pathlib

import jax
from absl import flags
from ml_collections import config_flags

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.data import inputs, pipeline
from jaxllm.errors import ConfigError
from jaxllm.inference import retrieval, runs
from jaxllm.models import Transformer
from jaxllm.objectives import lm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.train import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (see configs/sft/).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints, tokenizer.")
flags.mark_flags_as_required(["config", "workdir"])


def _rag_data(config, workdir, tokenizer) -> str:
  """Writes the world's RAG conversations to WORKDIR/rag_sft.jsonl (process 0 first)."""
  path = pathlib.Path(workdir) / "rag_sft.jsonl"
  rag = config.data.rag

  def write():
    path.parent.mkdir(parents=True, exist_ok=True)
    records = retrieval.world_rag_conversations(tokenizer, config.data.world_seed,
                                                rag.other_worlds, rag.k, rag.budget_tokens)
    with open(path, "w", encoding="utf-8") as f:
      for i, r in enumerate(records):
        f.write(json.dumps({"messages": r["messages"], "id": f"rag-{i}"}) + "\n")
  mesh_lib.process_zero_first(lambda: not path.exists(), write, "RAG conversations")
  return str(path)


def run(config, workdir, hooks=()):
  """Loads the init run, builds the conversation data and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  if not config.init.checkpoint:
    raise ConfigError("config.init.checkpoint is empty; set it to the pretrained run directory "
                      "to fine-tune (--config.init.checkpoint=/tmp/jaxllm/tiny).")
  init = runs.load_run(config.init.checkpoint, None if config.init.step < 0 else config.init.step)
  for key, value in init.config.model.items():  # the checkpoint fixes the shapes
    config.model[key] = value
  tokenizer = init.tokenizer
  if jax.process_index() == 0:
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    tokenizer.save(pathlib.Path(workdir) / "tokenizer.json")
  if config.data.source == "world_rag":
    config.data.source = _rag_data(config, workdir, tokenizer)
  model_cfg = config_lib.validate(config)
  train_iter, eval_batches = inputs.train_and_eval(
      config, workdir, "conversations",
      pipeline.chat_example(tokenizer, config.data.messages_field))
  loss_fn = functools.partial(lm.lm_loss, z_loss=config.train.z_loss)
  try:
    return loop.train(config, workdir, Transformer(model_cfg), loss_fn, train_iter, eval_batches,
                      init_params=init.params, hooks=hooks)
  finally:
    train_iter.close()


def main(argv):
  del argv
  run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
