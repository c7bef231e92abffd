"""Clean raw text (.txt, .jsonl(.gz), .html) into gzip JSONL shards with per-step statistics.

  python experiments/prepare_data.py --config=configs/data/clean.py \\
      --config.input='raw/*.jsonl' --workdir=/tmp/jaxllm/clean

The stage: jaxllm/recipes/prepare_data.py.
"""

from jaxllm.recipes import prepare_data

if __name__ == "__main__":
  prepare_data.main()
