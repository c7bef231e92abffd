"""Entry points: user errors print one clear line and exit 2, without a traceback; and the one
convention for flags in every script.

That covers the command line too: a flag or `--config.a.b=value` override of the wrong type, a
field the config does not have, a config file that cannot be loaded.

Flags, the same in every script of experiments/:
  --workdir=DIR          the run directory the command trains into (and resumes), or reads
  --out=DIR              a new directory the command writes from the run in --workdir
  --config=FILE[:ARG]    settings; every field overrides as --config.a.b=VALUE (commands that
                         read a run default to their recipe's settings, so no file is needed)
  --step=N               a checkpoint other than the newest
  --print_config         print the resolved config (every field, overrides applied) and exit
  --temperature, --top_k, --top_p, --max_new_tokens, --seed   sampling, where a command samples
  booleans               --name / --noname
"""

import difflib
import re
import sys
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from jaxllm.errors import UserError


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _config_file(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def unknown_override(config, argv: list[str]) -> str | None:
  """The first `--config.a.b=value` whose path the config lacks, said with its fix."""
  for arg in argv:
    match = re.match(r"--config\.([\w.]+)(=|$)", arg)
    if not match:
      continue
    node, walked = config, "config"
    for key in match.group(1).split("."):
      fields = list(node.keys()) if hasattr(node, "keys") else []
      if key not in fields:
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = f"; its fields: {', '.join(sorted(fields))}" if fields else ""
        return (f"{arg.split('=')[0]}: {walked} has no field {key!r}{hint}{listed}.")
      node, walked = node[key], f"{walked}.{key}"
  return None


def _explain_override_error(argv: list[str], error: Exception) -> str:
  path = _config_file(argv)
  if path:
    try:
      from jaxllm import config as config_lib  # pylint: disable=import-outside-toplevel
      file, _, arg = path.partition(":")
      config = config_lib.import_file(file).get_config(*([arg] if arg else []))
      found = unknown_override(config, argv)
      if found:
        return found
    except Exception:  # noqa: BLE001  (only for the message; fall through to the generic one)
      pass
  return f"a --config override names no field of the config ({error})."


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    missing = re.match(r"flag --(\w+)=None: Flag --\w+ must have a value other than None", lines[0])
    if missing:
      name = missing.group(1)
      fail(f"--{name} is required: {flags.FLAGS[name].help} (see --help).")
    if isinstance(e.__context__, UserError) or "Traceback" in str(e):
      # An error raised by the config file's get_config: its own last line says it.
      fail(f"{lines[0].split(': ')[0]}: {lines[-1].split(': ', 1)[-1]}")
    fail(lines[0] + " (see --helpfull for the flags).")
  except (KeyError, AttributeError) as e:
    fail(_explain_override_error(argv, e))
  except (UserError, OSError) as e:
    _fail_for_user_error(e)
  return []


def _fail_for_user_error(error: Exception) -> None:
  """Exits 2 with the message of a UserError or of a config file that cannot be loaded
  (ml_collections defers that error to the first use of the config); re-raises anything else."""
  if isinstance(error, UserError):
    fail(str(error))
  if "config file" not in str(error) and "Configuration is not available" not in str(error):
    raise error
  reason = [ln.strip() for ln in str(error).splitlines() if ln.strip()][-1]
  fail(f"--config: the config file cannot be loaded ({reason}); give a file such as "
       "configs/pretrain/tiny.py.")


def _not_from_orbax_threads(record) -> bool:
  """Drops orbax's error logs of its background threads (each with a long traceback): the error
  they log is raised again in the main thread, where it is reported in one line."""
  return not ("orbax" in record.pathname and record.levelno >= logging.ERROR)


def _quiet_closed_loop(hook):
  """`hook` (sys.excepthook or sys.unraisablehook) without the "Event loop is closed" errors
  that tensorstore's callbacks raise once orbax has given up on a failed save."""
  def filtered(*args):
    error = args[1] if len(args) == 3 else getattr(args[0], "exc_value", None)
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
      return
    hook(*args)
  return filtered


def run(main: Callable[[list[str]], None]) -> None:
  def wrapped(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
      logging.get_absl_logger().addFilter(_not_from_orbax_threads)
      sys.excepthook = _quiet_closed_loop(sys.excepthook)
      sys.unraisablehook = _quiet_closed_loop(sys.unraisablehook)
    try:
      main(argv)
    except (UserError, OSError) as e:
      _fail_for_user_error(e)
  app.run(wrapped, flags_parser=parse_flags)


def run_stage(run_fn: Callable, config_help: str) -> None:
  """`python experiments/STAGE.py --config=FILE --workdir=DIR`: calls run_fn(config, workdir).

  The flags are defined here, when the script runs, not when a recipe is imported, so several
  recipes can be imported into one process (tests, the pipeline).
  """
  config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
  define_print_config()
  flags.mark_flags_as_required(["config"])

  def main(argv):
    del argv
    if print_config(flags.FLAGS.config):
      return
    require("workdir")
    run_fn(flags.FLAGS.config, flags.FLAGS.workdir)
  run(main)


def define_print_config() -> None:
  flags.DEFINE_bool("print_config", False, "Print the resolved config (every field, after the "
                    "--config.* overrides) and exit; any field overrides as --config.a.b=VALUE.")


def print_config(config) -> bool:
  """With --print_config: prints `config` (every field and value) and returns True."""
  if not flags.FLAGS.print_config:
    return False
  print(config)
  return True


def require(name: str) -> None:
  """The one-line error for a flag a command needs (checked after --print_config)."""
  if flags.FLAGS[name].value is None:
    fail(f"--{name} is required: {flags.FLAGS[name].help} (see --help).")


def run_on_run(run_fn: Callable, config_file, config_help: str,
               out_help: str | None = None) -> None:
  """`python experiments/X.py --workdir=RUN [--out=DIR] [--step=N] [--config=FILE]`: calls
  run_fn(config, workdir[, out], step=step) for a command that reads a trained run.

  --config defaults to `config_file` (the recipe's own file, whose get_config() gives its
  defaults), so --config.FIELD=VALUE overrides work without a config file.
  """
  config_flags.DEFINE_config_file("config", str(config_file), config_help, lock_config=True)
  define_run_flags(required=False)
  define_print_config()
  if out_help:
    flags.DEFINE_string("out", None, out_help)

  def main(argv):
    del argv
    f = flags.FLAGS
    if print_config(f.config):
      return
    for name in ("workdir", "out") if out_help else ("workdir",):
      require(name)
    run_fn(f.config, f.workdir, *([f.out] if out_help else []), step=f.step)
  run(main)


def define_run_flags(required: bool = True) -> None:
  """--workdir (required unless the command checks it itself, `require`) and --step: the run a
  command reads and its checkpoint."""
  flags.DEFINE_string("workdir", None, "Run directory (config.json, checkpoints/, "
                      "tokenizer.json).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
  if required:
    flags.mark_flag_as_required("workdir")


def define_sampling_flags(temperature: float, max_new_tokens: int, top_k: bool = True) -> None:
  """--temperature, --top_p, --top_k, --max_new_tokens and --seed, named alike in every
  command that samples (the defaults fit the command)."""
  flags.DEFINE_float("temperature", temperature, "Softmax temperature; 0 is greedy.")
  if top_k:
    flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).")
  flags.DEFINE_float("top_p", 1.0, "Keep the most likely tokens up to this probability mass.")
  flags.DEFINE_integer("max_new_tokens", max_new_tokens, "Tokens to generate at most.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
