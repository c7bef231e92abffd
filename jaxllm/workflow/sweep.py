"""Hyperparameter sweeps: a config's get_sweep() points, one run per point, a CSV and a plot.

A config file may define `get_sweep(arg=None)` returning a list of {dotted field path: value}
dicts; `grid()` builds the cartesian product of some axes. experiments/sweep.py runs each point
as its own process, `python -m jaxllm.recipes.<config.stage>` (or --module), in
WORKDIR/<point name> (a rerun skips the finished ones), then writes WORKDIR/sweep.csv and
WORKDIR/sweep.png.
"""

import csv
import dataclasses
import difflib
import importlib.util
import inspect
import itertools
import math
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from jaxllm import config as config_lib
from jaxllm import storage
from jaxllm.errors import ConfigError, UserError
from jaxllm.train import metrics as metrics_lib

MODES = ("auto", "min", "max")
_SETTABLE = (bool, int, float, str, tuple)  # field types a --config.KEY=VALUE flag can set
_EXAMPLE = ('`def get_sweep(arg=None): return sweep.grid(**{"optimizer.lr": [1e-3, 3e-3]})` '
            'with `from jaxllm.workflow import sweep`')


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """Cartesian product of the axes, the last axis varying fastest.

  `grid(**{"optimizer.lr": [1e-3, 1e-2], "train.batch_size": [8, 16]})` gives
  [{lr 1e-3, bs 8}, {lr 1e-3, bs 16}, {lr 1e-2, bs 8}, {lr 1e-2, bs 16}].
  """
  for key, values in axes.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
      raise ConfigError(f"sweep.grid({key}=...) takes a non-empty list of values, got "
                        f"{values!r}.")
  return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A config file's sweep: its points, checked against its config."""
  config: str  # as given: PATH or PATH:ARG
  path: Path
  arg: str | None
  base: ml_collections.ConfigDict  # get_config(arg), before any override
  points: list[dict[str, Any]]

  @property
  def keys(self) -> list[str]:
    """The swept field paths, in order of first appearance."""
    return list(dict.fromkeys(k for p in self.points for k in p))


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep."""
  index: int
  name: str
  overrides: dict[str, Any]
  workdir: Path
  argv: list[str]
  values: dict[str, Any]  # every swept key's value in the config the run builds
  num_steps: int | None  # config.train.num_steps of that config


def split_config_arg(config: str) -> tuple[Path, str | None]:
  """'configs/pretrain/tiny.py:steps=50' -> (path, 'steps=50'), as ml_collections splits it."""
  path, sep, arg = config.partition(":")
  return Path(path), (arg if sep else None)


def load_module(path: str | Path) -> ModuleType:
  """Imports a config file as a module."""
  if not Path(path).is_file():
    raise ConfigError(f"--config={path}: no such file; give a config file such as "
                      "configs/pretrain/tiny.py.")
  return config_lib.import_file(path)


def _call(module: ModuleType, path: Path, name: str, arg: str | None) -> Any:
  """module.NAME(arg), or module.NAME() without an argument, as config_flags calls get_config."""
  fn = getattr(module, name)
  args = () if arg is None else (arg,)
  try:
    inspect.signature(fn).bind(*args)
  except TypeError:
    raise ConfigError(f"{path}: {name}() cannot take the config argument {arg!r}; define it "
                      f"as {name}(arg=None).") from None
  return fn(*args)


def load(config: str) -> Sweep:
  """Loads PATH[:ARG]'s get_config(ARG) and get_sweep(ARG) and checks every point."""
  path, arg = split_config_arg(config)
  module = load_module(path)
  for name in ("get_config", "get_sweep"):
    if not callable(getattr(module, name, None)):
      raise ConfigError(f"{path} defines no {name}(); a sweep needs get_config() and a "
                        f"get_sweep() returning a list of {{field path: value}} dicts, e.g. "
                        f"{_EXAMPLE}.")
  base = _call(module, path, "get_config", arg)
  points = _call(module, path, "get_sweep", arg)
  if (not isinstance(points, (list, tuple)) or not points
      or not all(isinstance(p, dict) and p for p in points)):
    raise ConfigError(f"{path}: get_sweep() returned {points!r}; it must return a non-empty "
                      f"list of non-empty {{field path: value}} dicts, e.g. {_EXAMPLE}.")
  points = [{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()} for p in points]
  validate(points, base, str(path))
  return Sweep(config, path, arg, base, points)


def _leaf_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  out = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out += _leaf_paths(value, f"{prefix}{key}.")
    else:
      out.append(prefix + key)
  return out


def field_type(config: ml_collections.ConfigDict, key: str) -> type:
  """The type of the field at dotted path `key`; ConfigError if the config has no such field."""
  node = config
  parts = key.split(".")
  for depth, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = difflib.get_close_matches(key, _leaf_paths(config), n=1)
      hints = [f"did you mean {close[0]!r}?"] if close else []
      if depth and isinstance(node, ml_collections.ConfigDict):
        hints.append(f"{'.'.join(parts[:depth])} has {', '.join(sorted(node))}")
      elif not depth:
        hints.append(f"the top-level fields are {', '.join(sorted(config))}")
      raise ConfigError(f"the config has no field {key!r} ({'; '.join(hints)})")
    if depth == len(parts) - 1:
      kind = node.get_type(part)
      if isinstance(kind, type) and issubclass(kind, ml_collections.ConfigDict):
        raise ConfigError(f"{key!r} is a group of fields ({', '.join(sorted(node[part]))}), "
                          f"not one field; sweep one of them, e.g. '{key}.FIELD'")
      if kind not in _SETTABLE:
        raise ConfigError(f"config.{key} has type {kind.__name__}, which a --config.{key}= "
                          "flag cannot set")
      return kind
    node = node[part]
  raise AssertionError(key)


def _compatible(kind: type, value: Any) -> bool:
  if kind is float:  # ints are fine for floats, as in ConfigDict
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is int:
    return isinstance(value, int) and not isinstance(value, bool)
  return isinstance(value, kind)


def validate(points: Sequence[dict[str, Any]], config: ml_collections.ConfigDict,
             source: str) -> None:
  """Every point's keys exist in `config` and its values have the fields' types."""
  seen = {}
  for i, point in enumerate(points):
    for key, value in point.items():
      where = f"{source}: get_sweep() point {i} {point}"
      try:
        kind = field_type(config, key)
      except ConfigError as e:
        raise ConfigError(f"{where}: {e}; fix the key in get_sweep().") from None
      if not _compatible(kind, value):
        raise ConfigError(f"{where}: config.{key} is of type {kind.__name__} but the point "
                          f"gives {value!r} ({type(value).__name__}); give a {kind.__name__}.")
    same = tuple(sorted(format_overrides(point)))
    if same in seen:
      raise ConfigError(f"{source}: get_sweep() points {seen[same]} and {i} are the same "
                        f"({point}); remove one.")
    seen[same] = i


def format_value(value: Any) -> str:
  """A value as ml_collections' flag parsers read it back for a field of its type."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value)


def format_overrides(point: dict[str, Any]) -> list[str]:
  """{'optimizer.lr': 0.001} -> ['optimizer.lr=0.001']."""
  return [f"{key}={format_value(value)}" for key, value in point.items()]


def point_name(index: int, point: dict[str, Any], max_len: int = 120) -> str:
  """A directory name: '000-optimizer.lr=0.001', unsafe characters replaced by '_'."""
  name = f"{index:03d}-" + ",".join(format_overrides(point))
  return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)[:max_len]  # the index keeps names unique


def command(module: str, config_path: str, workdir: str | Path, point: dict[str, Any],
            extra_overrides: Sequence[str] = (), python: str = sys.executable) -> list[str]:
  """The argv of one point's run (`python -m MODULE`): the extra 'key=value' overrides, then
  the point's."""
  overrides = [*extra_overrides, *format_overrides(point)]
  return [python, "-m", module, f"--config={config_path}", f"--workdir={workdir}",
          *(f"--config.{o}" for o in overrides)]


def module_for(sweep: "Sweep", module: str | None = None) -> str:
  """The module each point runs: `module`, or the recipe the config's stage names
  (jaxllm.recipes.<config.stage>)."""
  if not module:
    stage = sweep.base.get("stage")
    if not stage:
      raise ConfigError(f"--config={sweep.config}: the config has no `stage` field to tell its "
                        "recipe; pass --module, e.g. --module=jaxllm.recipes.pretrain.")
    module = f"jaxllm.recipes.{stage}"
  try:
    found = importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    found = False
  if not found:
    raise ConfigError(f"--module={module}: no such module; give a recipe such as "
                      "jaxllm.recipes.pretrain, or a module of yours with a main().")
  return module


def parse_extra(extra: Sequence[str], sweep: Sweep) -> list[str]:
  """Checks the --set=KEY=VALUE overrides: known fields, none swept; returns 'key=value'."""
  out = []
  for item in extra:
    key, sep, _ = item.partition("=")
    if not sep or not key:
      raise ConfigError(f"--set={item}: expected FIELD=VALUE, e.g. --set=train.num_steps=50.")
    try:
      field_type(sweep.base, key)
    except ConfigError as e:
      raise ConfigError(f"--set={item}: {e}.") from None
    if key in sweep.keys:
      raise ConfigError(f"--set={item}: {key} is swept by get_sweep() in {sweep.path}; drop "
                        "the --set or the key.")
    out.append(item)
  return out


def resolve(config: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """The config a recipe builds from --config=CONFIG and --config.KEY=VALUE overrides,
  parsed by ml_collections' own flag machinery."""
  argv = ["sweep", f"--config={config}", *(f"--config.{o}" for o in overrides)]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  try:
    with warnings.catch_warnings():  # ml_collections loads the file with load_module()
      warnings.simplefilter("ignore", DeprecationWarning)
      flag_values(argv)
  except flags.Error as e:
    raise ConfigError(f"--config={config} with {list(overrides)}: {e}") from None
  return flag_values.config


def plan(config: str, workdir: str | Path, module: str | None = None,
         extra: Sequence[str] = (), python: str = sys.executable) -> tuple[Sweep, list[Point]]:
  """The sweep and the run of each point, checked before anything runs."""
  sweep = load(config)
  extra = parse_extra(extra, sweep)
  module = module_for(sweep, module)
  if extra:
    try:
      resolve(config, extra)
    except ConfigError as e:
      raise ConfigError(f"--set: {e}") from None
  points = []
  for i, overrides in enumerate(sweep.points):
    name = point_name(i, overrides)
    run_dir = Path(workdir) / name
    argv = command(module, config, run_dir, overrides, extra, python)
    try:
      resolved = resolve(config, [*extra, *format_overrides(overrides)])
    except ConfigError as e:
      raise ConfigError(f"get_sweep() point {i} {overrides}: {e}") from None
    values = {k: config_path.get_value(k, resolved) for k in sweep.keys}
    num_steps = resolved.get("train", {}).get("num_steps")
    points.append(Point(i, name, overrides, run_dir, argv, values, num_steps))
  return sweep, points


def result(workdir: str | Path, metric: str,
           mode: str = "last") -> tuple[float, int] | None:
  """(value, step) of `metric` in WORKDIR/metrics.jsonl (perf.jsonl for timings): the last
  logged value (mode 'last'), or the lowest ('min') or highest ('max') over the run; None if it
  was never logged."""
  name = "perf.jsonl" if metric.startswith(metrics_lib.TIMING_PREFIXES) else "metrics.jsonl"
  found = [(float(r[metric]), int(r["step"])) for r in metrics_lib.read_metrics(workdir, name)
           if metric in r]
  if not found:
    return None
  if mode == "last":
    return found[-1]
  if mode not in ("min", "max"):
    raise ConfigError(f"mode={mode!r} is not one of last, min, max.")
  finite = [f for f in found if math.isfinite(f[0])] or found
  return (min if mode == "min" else max)(finite, key=lambda f: f[0])


def is_complete(workdir: str | Path, num_steps: int | None) -> bool:
  """Whether WORKDIR/metrics.jsonl has logged the final step."""
  if num_steps is None:
    return False
  return any(int(r["step"]) >= num_steps for r in metrics_lib.read_metrics(workdir))


def metric_names(workdirs: Sequence[str | Path]) -> list[str]:
  """Every metric logged by any of the runs."""
  return sorted({k for w in workdirs for name in ("metrics.jsonl", "perf.jsonl")
                 for r in metrics_lib.read_metrics(w, name) for k in r} - {"step"})


def best_mode(metric: str, mode: str = "auto") -> str:
  """'min' for losses and perplexities, else 'max', unless `mode` says."""
  if mode not in MODES:
    raise ConfigError(f"--mode={mode} is not one of {', '.join(MODES)}.")
  if mode != "auto":
    return mode
  return "min" if "loss" in metric or "perplexity" in metric else "max"


def _finite(value: Any) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def best(rows: Sequence[dict[str, Any]], metric: str, mode: str = "auto") -> dict | None:
  """The finished (ok or skipped) row with the best finite metric, or None."""
  usable = [r for r in rows if r["status"] in ("ok", "skipped") and _finite(r.get(metric))]
  if not usable:
    return None
  pick = min if best_mode(metric, mode) == "min" else max
  return pick(usable, key=lambda r: r[metric])


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float) and not isinstance(value, bool):
    return repr(value)
  return format_value(value)


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
  """One line per row, the columns of the first row; written to a temporary file, then moved."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _cell(v) for k, v in row.items()})
  tmp.replace(path)


def _numeric(values: Sequence[Any]) -> bool:
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot(path: str | Path, rows: Sequence[dict[str, Any]], keys: Sequence[str],
         metric: str) -> None:
  """`metric` against the first swept key, one line per combination of the other keys."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  x_key, others = keys[0], list(keys[1:])
  usable = [r for r in rows if _finite(r.get(metric))]
  numeric = _numeric([r[x_key] for r in usable])
  categories = list(dict.fromkeys(format_value(r[x_key]) for r in usable))
  position = ((lambda v: v) if numeric else (lambda v: categories.index(format_value(v))))
  groups: dict[tuple, list[dict]] = {}
  for row in usable:
    groups.setdefault(tuple(format_value(row[k]) for k in others), []).append(row)

  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  try:
    for combo, group in groups.items():
      group = sorted(group, key=lambda r: position(r[x_key]))
      label = ", ".join(f"{k}={v}" for k, v in zip(others, combo)) or None
      ax.plot([position(r[x_key]) for r in group], [r[metric] for r in group], marker="o",
              label=label)
    xs = [r[x_key] for r in usable]
    if numeric and xs and min(xs) > 0 and max(xs) > 10 * min(xs):
      ax.set_xscale("log")
    if not numeric:
      ax.set_xticks(range(len(categories)), categories)
    if not usable:
      ax.text(0.5, 0.5, f"no run logged a finite {metric}", ha="center", va="center",
              transform=ax.transAxes)
    ax.set_xlabel(x_key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x_key}")
    ax.grid(alpha=0.3)
    if others and usable:
      ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
  finally:
    plt.close(fig)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
          best_row: dict | None = None) -> str:
  """A plain-text table of the rows; the best one is marked with '*'."""
  show = lambda v: f"{v:.6g}" if isinstance(v, float) else _cell(v)
  cells = [[show(r.get(c)) for c in columns] for r in rows]
  marks = ["*" if r is best_row else " " for r in rows]
  widths = [max([len(c)] + [len(line[j]) for line in cells]) for j, c in enumerate(columns)]
  fmt = lambda mark, line: (mark + " " + "  ".join(v.ljust(w) for v, w in zip(line, widths))
                           ).rstrip()
  return "\n".join([fmt(" ", columns)] + [fmt(m, line) for m, line in zip(marks, cells)])


class _ForwardSigterm:
  """While a point runs, SIGTERM to the sweep goes to the run (which checkpoints and exits
  cleanly) and the sweep stops after it."""

  def __init__(self):
    self.child: subprocess.Popen | None = None
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signum)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def run(config: str, workdir: str | Path, *, metric: str = "eval/loss", mode: str = "auto",
        module: str | None = None, extra: Sequence[str] = (), python: str = sys.executable,
        echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Runs every point that has not logged its final step; writes WORKDIR/sweep.csv and
  WORKDIR/sweep.png; returns the rows. Raises UserError at the end if a point failed."""
  best_mode(metric, mode)  # a bad --mode fails before anything runs
  storage.require_local(workdir, "--workdir", "a sweep appends each point's log and its table "
                        "to local files")
  sweep, points = plan(config, workdir, module, extra, python)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  rows = []
  with _ForwardSigterm() as sigterm:
    for p in points:
      if sigterm.requested:
        break
      prefix = f"[{p.index + 1}/{len(points)}] {p.name}"
      seconds = None
      if is_complete(p.workdir, p.num_steps):
        status = "skipped"
        echo(f"{prefix}: finished before (step {p.num_steps} logged), skipped")
      else:
        p.workdir.mkdir(parents=True, exist_ok=True)
        log = p.workdir / "log.txt"
        echo(f"{prefix}: running, output in {log}")
        start = time.perf_counter()
        with log.open("a") as f:
          f.write(f"$ {shlex.join(p.argv)}\n")
          f.flush()
          sigterm.child = subprocess.Popen(p.argv, stdout=f, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)
          returncode = sigterm.child.wait()
          sigterm.child = None
        seconds = round(time.perf_counter() - start, 1)
        if returncode:
          status = "failed"
          lines = log.read_text(errors="replace").strip().splitlines()
          echo(f"{prefix}: failed (exit {returncode}) after {seconds}s: "
               f"{lines[-1] if lines else ''}")
        elif p.num_steps is not None and not is_complete(p.workdir, p.num_steps):
          status = "interrupted"
          echo(f"{prefix}: stopped before step {p.num_steps} after {seconds}s")
        else:
          status = "ok"
          echo(f"{prefix}: done in {seconds}s")
      found = result(p.workdir, metric)
      rows.append({"point": p.name, "workdir": str(p.workdir), **p.values,
                   metric: found[0] if found else None, "step": found[1] if found else None,
                   "status": status, "seconds": seconds})

  write_csv(workdir / "sweep.csv", rows)
  plot(workdir / "sweep.png", rows, sweep.keys, metric)
  winner = best(rows, metric, mode)
  echo(table(rows, ["point", *sweep.keys, metric, "step", "status", "seconds"], winner))
  if winner is not None:
    echo(f"best ({best_mode(metric, mode)} {metric}): {winner['point']} {metric}="
         f"{winner[metric]:.6g}")
  echo(f"wrote {workdir / 'sweep.csv'} and {workdir / 'sweep.png'}")

  if sigterm.requested:
    echo("SIGTERM: the sweep stopped; run the same command to resume.")
    return rows
  failed = [r for r in rows if r["status"] in ("failed", "interrupted")]
  if failed:
    raise UserError(f"{len(failed)} of {len(rows)} sweep points did not finish: "
                    + ", ".join(f"{r['workdir']}/log.txt" for r in failed)
                    + "; fix the cause and run the same command to resume.")
  if all(r[metric] is None for r in rows):
    seen = metric_names([p.workdir for p in points])
    raise UserError(f"--metric={metric} was not logged by any point; logged: "
                    f"{', '.join(seen) or 'nothing'}.")
  return rows
