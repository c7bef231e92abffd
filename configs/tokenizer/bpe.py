"""Byte-level BPE (GPT-4 split pattern) trained on text files; writes a Hugging Face tokenizer.

  python experiments/train_tokenizer.py --config=configs/tokenizer/bpe.py \
      --config.input='data/*.jsonl' --config.vocab_size=8192 --workdir=/tmp/jaxllm/tokenizer

`--config=configs/tokenizer/bpe.py:vocab_size=32768,kind=unigram` sets the size and the kind
(bpe | wordpiece | unigram) in one go; any field can be overridden too.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import tokenizer


def get_config(arg=None):
  args = config_lib.parse_arg(arg, vocab_size=8192, kind="bpe")
  return tokenizer.default_config(args.vocab_size, args.kind)
