"""Documents for language modelling, chosen by config.data.source."""

from pathlib import Path

import numpy as np

from jaxllm.data import lm_batches, synthetic
from jaxllm.errors import ConfigError

SOURCES = ("synthetic", "text_file")


def load_documents(data_config) -> list[str]:
  """synthetic: the embedded world; text_file: config.data.path split on blank lines."""
  if data_config.source == "synthetic":
    return synthetic.generate_corpus(data_config.world_seed, data_config.num_docs)
  if data_config.source == "text_file":
    path = Path(data_config.get("path", ""))
    if not path.is_file():
      raise ConfigError(f"config.data.path={str(path)!r} is not a file; give a UTF-8 text file.")
    docs = [d.strip() for d in path.read_text(encoding="utf-8").split("\n\n")]
    return [d for d in docs if d]
  raise ConfigError(f"config.data.source={data_config.source!r} is not one of {SOURCES}.")


def lm_windows(data_config, tokenizer) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(train, eval) packed windows; the last eval_fraction of documents is held out."""
  docs = [tokenizer.encode(d) for d in load_documents(data_config)]
  num_eval = max(1, int(len(docs) * data_config.eval_fraction))
  if len(docs) <= num_eval:
    raise ConfigError(f"config.data: {len(docs)} documents leave none for training after holding "
                      f"out {num_eval} for eval; add documents or lower eval_fraction.")
  return (lm_batches.pack_windows(docs[:-num_eval], data_config.seq_len),
          lm_batches.pack_windows(docs[-num_eval:], data_config.seq_len))
