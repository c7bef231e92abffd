"""Train a tokenizer on text files and measure its compression on held-out documents.

  python experiments/train_tokenizer.py --config=configs/tokenizer/bpe.py \\
      --config.input='data/*.jsonl' --config.vocab_size=8192 --workdir=/tmp/jaxllm/tokenizer

The stage: jaxllm/recipes/tokenizer.py.
"""

from jaxllm.recipes import tokenizer

if __name__ == "__main__":
  tokenizer.main()
