"""Clean raw text (.txt, .jsonl(.gz), .html) into gzip JSONL shards with per-step statistics.

  python experiments/prepare_data.py --config=configs/data/clean.py \
      --config.input='raw/*.jsonl' --workdir=/tmp/jaxllm/clean

Writes WORKDIR/shard-00000-of-0000N.jsonl.gz (one {"text", "id", "url"?, "metadata"?} per line,
readable with jaxllm.data.readers), WORKDIR/stats.json and WORKDIR/config.json, and prints a
table of documents in / kept / dropped per step. With --config.process_count=P the output of
process i goes to WORKDIR/process-0000i-of-0000P/.
"""

from absl import flags
from ml_collections import config_flags

from jaxllm import cli
from jaxllm.data.cleaning import runner

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (see configs/data/).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory: shards, stats.json, config.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  print(runner.summary_table(runner.run(FLAGS.config, FLAGS.workdir)))


if __name__ == "__main__":
  cli.run(main)
