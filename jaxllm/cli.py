"""Entry-point helper: user errors print one clear line and exit 2, without a traceback."""

import sys
from typing import Callable

from absl import app, flags, logging

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
