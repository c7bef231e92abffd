"""Entry-point helper: user errors print one clear line and exit 2, without a traceback."""

import sys
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from jaxllm.errors import UserError


def run(main: Callable[[list[str]], None]) -> None:
  def wrapped(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
      main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
  app.run(wrapped)


def run_stage(run_fn: Callable, config_help: str) -> None:
  """`python experiments/STAGE.py --config=FILE --workdir=DIR`: calls run_fn(config, workdir).

  The flags are defined here, when the script runs, not when it is imported, so several stage
  scripts' run() functions can be imported into one process (tests, pipelines).
  """
  config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    del argv
    run_fn(flags.FLAGS.config, flags.FLAGS.workdir)
  run(main)
