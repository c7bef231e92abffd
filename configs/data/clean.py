"""FineWeb-style cleaning of raw text into gzip JSONL shards (input of tokenizer training).

  python experiments/prepare_data.py --config=configs/data/clean.py \
      --config.input='raw/*.jsonl.gz,raw/*.html' --workdir=/tmp/jaxllm/clean

Steps and thresholds are datatrove's FineWeb pipeline: URL filter, HTML extraction, language
(en, score > 0.65), Gopher repetition and quality, C4 (without the terminal-punctuation rule, as
FineWeb), FineWeb quality, PII masking, then exact and MinHash dedup (5-grams, 14 bands x 8 rows).
`:dedup=false` turns both dedups off; `:workers=4` sets the pool size (0: all cores). Any field
can be overridden, e.g. --config.language.languages="('en', 'de')" --config.separator='\n\n'.
Split the input over machines with --config.process_index=i --config.process_count=N.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import prepare_data


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dedup=True, workers=0)
  c = prepare_data.default_config()
  c.c4_quality.filter_no_terminal_punct = False  # FineWeb's setting (datatrove's default: True)
  c.dedup.exact = args.dedup
  c.dedup.minhash = args.dedup
  c.num_workers = args.workers
  return c
