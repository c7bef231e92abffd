"""Retrieval-augmented fine-tuning of the tiny pretrained model: answer knowledge questions from
BM25-retrieved passages, citing the passage sentence, and from memory without passages.

  python experiments/sft.py --config=configs/sft/rag_tiny.py --workdir=/tmp/jaxllm/rag \\
      --config.init.checkpoint=/tmp/jaxllm/tiny
  python experiments/evaluate.py --workdir=/tmp/jaxllm/rag --config.suites=rag
  python experiments/chat.py --workdir=/tmp/jaxllm/rag \\
      --rag_index=/tmp/jaxllm/tiny/data/world-seed0/kb.jsonl

The data (jaxllm.inference.retrieval.world_rag_conversations) mixes the world's training
questions with and without passages, and questions about `other_worlds` freshly generated
worlds, whose people the model cannot recall: it has to read.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import sft


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=1200, other_worlds=12)
  c = sft.default_config("tiny")
  c.data.source = "world_rag"
  c.data.rag.other_worlds = args.other_worlds
  c.train.num_steps = args.steps
  c.train.batch_size = 16
  c.train.log_every = 50
  c.train.eval_every = 400
  c.train.checkpoint_every = 400
  return c
