"""Byte-level BPE (GPT-4 split pattern) trained on text files; writes a Hugging Face tokenizer.

  python experiments/train_tokenizer.py --config=configs/tokenizer/bpe.py \
      --config.input='data/*.jsonl' --config.vocab_size=8192 --workdir=/tmp/jaxllm/tokenizer

`--config=configs/tokenizer/bpe.py:vocab_size=32768,kind=unigram` sets the size and the kind
(bpe | wordpiece | unigram) in one go; any field can be overridden too.
"""

import ml_collections

from jaxllm import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, vocab_size=8192, kind="bpe")
  c = ml_collections.ConfigDict()
  c.input = ""  # comma-separated globs of .txt, .jsonl(.gz), .html files
  c.text_field = "text"  # .jsonl: the field that holds the text
  c.separator = ""  # .txt: "" keeps each file whole; e.g. "\n\n" splits it into documents
  c.skip_malformed = False  # .jsonl: skip and count bad lines instead of stopping
  c.kind = args.kind  # bpe | wordpiece | unigram
  c.vocab_size = args.vocab_size  # special tokens included
  c.min_frequency = 2  # bpe/wordpiece: a pair must occur this often to be merged
  c.heldout_fraction = 0.02  # documents 0, ~1/f, ~2/f, ... are held out to measure compression
  return c
