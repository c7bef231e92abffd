"""Tokenizer training: a tokenizer trained on text files, with its compression measured on
held-out documents.

  python experiments/train_tokenizer.py --config=configs/tokenizer/bpe.py \\
      --config.input='data/*.jsonl' --config.vocab_size=8192 --workdir=/tmp/jaxllm/tokenizer

Writes WORKDIR/tokenizer.json and tokenizer_config.json (loadable by `Tokenizer.from_file` and
`transformers.AutoTokenizer.from_pretrained(WORKDIR)`), config.json, and stats.json with the
held-out bytes per token and the reader's counts of dropped or repaired records.
"""

import json
import math
import time

import ml_collections

from jaxllm import cli, rundir, storage
from jaxllm.data import chat, readers
from jaxllm.data import tokenizer as tokenizer_lib
from jaxllm.errors import ConfigError, UserError


def default_config(vocab_size: int = 8192, kind: str = "bpe") -> ml_collections.ConfigDict:
  """Every field tokenizer training reads."""
  c = ml_collections.ConfigDict()
  c.input = ""  # comma-separated globs of .txt, .jsonl(.gz), .html files
  c.text_field = "text"  # .jsonl: the field that holds the text
  c.separator = ""  # .txt: "" keeps each file whole; e.g. "\n\n" splits it into documents
  c.skip_malformed = False  # .jsonl: skip and count bad lines instead of stopping
  c.kind = kind  # bpe | wordpiece | unigram
  c.vocab_size = vocab_size  # special tokens included
  c.min_frequency = 2  # bpe/wordpiece: a pair must occur this often to be merged
  # The most digits one token may hold: 3 as in GPT-4 and Llama 3; 1 as in Llama 2, Mistral and
  # Gemma (every digit its own token, so arithmetic is learned digit by digit).
  c.max_digits = 3
  c.heldout_fraction = 0.02  # documents 0, ~1/f, ~2/f, ... are held out to measure compression
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the fields before any file is read."""
  if not config.input.strip():
    raise ConfigError("config.input is empty; pass --config.input=GLOB (comma-separate several).")
  if config.kind not in tokenizer_lib.KINDS:
    raise ConfigError(f"config.kind={config.kind!r} is not one of "
                      f"{', '.join(tokenizer_lib.KINDS)}.")
  minimum = tokenizer_lib.min_vocab_size(config.kind)
  if config.vocab_size < minimum:
    raise ConfigError(f"config.vocab_size={config.vocab_size} is below {minimum}, the smallest "
                      f"{config.kind} vocabulary (its base alphabet + "
                      f"{len(tokenizer_lib.SPECIAL_TOKENS)} special tokens); raise it.")
  if not 0 <= config.heldout_fraction < 1:
    raise ConfigError(f"config.heldout_fraction={config.heldout_fraction} must be in [0, 1).")
  if not isinstance(config.max_digits, int) or config.max_digits < 1:
    raise ConfigError(f"config.max_digits={config.max_digits!r} must be an integer >= 1.")
  if config.min_frequency < 0:
    raise ConfigError(f"config.min_frequency={config.min_frequency} must be >= 0.")


def is_heldout(index: int, fraction: float) -> bool:
  """Whether document `index` is held out: evenly spaced, starting with document 0."""
  return math.ceil((index + 1) * fraction) > math.ceil(index * fraction)


@rundir.claims_workdir
def run(config, workdir, hooks=()) -> dict:
  """Trains the tokenizer, saves it to `workdir` and returns the stats it writes there."""
  del hooks  # no training loop
  validate(config)
  paths = readers.expand_inputs(config.input)
  workdir = storage.path(workdir)  # a local folder or gs://
  workdir.mkdir(parents=True, exist_ok=True)
  rundir.write_text(workdir / "config.json", config.to_json(indent=2) + "\n")
  counts = readers.ReadCounts()
  heldout, train = [], {"documents": 0, "bytes": 0}

  def train_texts():
    index = 0
    for path in paths:
      for doc in readers.iter_documents(path, counts, text_field=config.text_field,
                                        separator=config.separator or None,
                                        skip_malformed=config.skip_malformed):
        if is_heldout(index, config.heldout_fraction):
          heldout.append(doc.text)
        else:
          train["documents"] += 1
          train["bytes"] += len(doc.text.encode("utf-8"))
          yield doc.text
        index += 1
    if not train["documents"]:
      raise UserError(f"no documents left to train on: {config.input!r} gave {len(heldout)} "
                      "document(s) and all were held out; add documents or set "
                      "config.heldout_fraction=0.")

  start = time.perf_counter()
  tokenizer = tokenizer_lib.train_tokenizer(train_texts(), kind=config.kind,
                                            vocab_size=config.vocab_size,
                                            min_frequency=config.min_frequency,
                                            max_digits=config.max_digits)
  seconds = time.perf_counter() - start
  chat.save_pretrained(tokenizer, workdir)

  num_tokens = sum(map(len, tokenizer.encode_batch(heldout)))
  num_bytes = sum(len(t.encode("utf-8")) for t in heldout)
  stats = {
      "kind": config.kind,
      "vocab_size": tokenizer.vocab_size,
      "train": {**train, "seconds": round(seconds, 3)},
      "heldout": {"documents": len(heldout), "bytes": num_bytes, "tokens": num_tokens,
                  "bytes_per_token": num_bytes / num_tokens if num_tokens else None},
      "read": counts.as_dict(),
  }
  rundir.write_text(workdir / "stats.json", json.dumps(stats, indent=2) + "\n")
  print(f"read {counts.records} documents from {counts.files} files ({counts.bytes} bytes); "
        f"dropped {counts.empty} empty, skipped {counts.malformed_lines} malformed lines, "
        f"repaired {counts.invalid_utf8} invalid UTF-8")
  print(f"trained {config.kind} tokenizer: {tokenizer.vocab_size} ids on {train['documents']} "
        f"documents ({train['bytes']} bytes) in {seconds:.1f}s -> {workdir / 'tokenizer.json'}")
  if tokenizer.vocab_size < config.vocab_size:
    print(f"note: {tokenizer.vocab_size} ids, below config.vocab_size={config.vocab_size}: the "
          "text ran out of pieces worth adding (more text, or a lower min_frequency, adds more)")
  if heldout:
    print(f"held-out compression: {stats['heldout']['bytes_per_token']:.3f} bytes/token "
          f"({len(heldout)} documents, {num_bytes} bytes, {num_tokens} tokens)")
  else:
    print("held-out compression: not measured (config.heldout_fraction=0)")
  return stats


def main():
  """python -m jaxllm.recipes.tokenizer --config=FILE --workdir=DIR
  (experiments/train_tokenizer.py)."""
  cli.run_stage(run, "Config file (see configs/tokenizer/).")


if __name__ == "__main__":
  main()
