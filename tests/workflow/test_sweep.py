"""Sweeps (jaxllm/workflow/sweep.py, experiments/sweep.py): points, commands, results, reruns."""

import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from jaxllm.errors import ConfigError, UserError
from jaxllm.workflow import sweep
from tests.conftest import FAST_COMPILE_FLAGS
from tests.helpers import ROOT, read_metrics

TINY = "configs/pretrain/tiny.py"


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = FAST_COMPILE_FLAGS  # one CPU device in the child
  return env


def _sweep_script(*args):
  return subprocess.run([sys.executable, "experiments/sweep.py", *args], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=300)


def _config_file(tmp_path, body, folder="pretrain", name="sweep_cfg.py"):
  """A config file in TMP/FOLDER/NAME: the tiny pretraining config, made short, plus `body`."""
  path = tmp_path / folder / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(textwrap.dedent("""\
      from jaxllm import config as config_lib
      from jaxllm.workflow import sweep


      def get_config(arg=None):
        c = config_lib.base_config("tiny")
        c.train.num_steps = 4
        c.train.batch_size = 4
        c.train.log_every = 2
        c.train.eval_every = 4
        c.train.checkpoint_every = 4
        c.train.eval_batches = 1
        c.train.async_checkpointing = False
        c.data.seq_len = 32
        c.optimizer.warmup_steps = 1
        return c
      """) + textwrap.dedent(body))
  return path


def _write_metrics(workdir, records, tail=""):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_grid_is_the_cartesian_product_last_axis_fastest():
  points = sweep.grid(**{"optimizer.lr": [1e-3, 1e-2], "train.batch_size": [8, 16, 32]})
  assert points == [{"optimizer.lr": lr, "train.batch_size": bs}
                    for lr in (1e-3, 1e-2) for bs in (8, 16, 32)]
  assert list(points[0]) == ["optimizer.lr", "train.batch_size"]
  with pytest.raises(ConfigError, match="optimizer.lr"):
    sweep.grid(**{"optimizer.lr": []})


def test_tiny_config_sweeps_the_learning_rate_around_its_default():
  loaded = sweep.load(TINY)
  assert loaded.keys == ["optimizer.lr"]
  lrs = [p["optimizer.lr"] for p in loaded.points]
  assert len(lrs) == 4 and loaded.base.optimizer.lr in lrs and min(lrs) < 3e-3 < max(lrs)
  assert sweep.module_for(loaded) == "jaxllm.recipes.pretrain"


@pytest.mark.parametrize("points,message", [
    ('[{"optimizer.lr": 1e-3}, {"optimizer.lrr": 1e-2}]',
     r"point 1 .*no field 'optimizer.lrr' \(did you mean 'optimizer.lr'\?; optimizer has b1, "),
    ('[{"optimizer.learning_rate": 1e-3}]',
     r"point 0 .*no field 'optimizer.learning_rate' \(.*optimizer has b1, .*, lr, "),
    ('[{"optimiser.lr": 1e-3}]', r"did you mean 'optimizer.lr'\?; the top-level fields are "),
    ('[{"train.batch_size": 8.5}]', r"point 0 .*config.train.batch_size is of type int .*8.5"),
    ('[{"train.eval_at_start": 1}]', r"point 0 .*train.eval_at_start is of type bool"),
    ('[{"optimizer": 1}]',
     r"point 0 .*'optimizer' is a group of fields \(b1, .*, lr, .*'optimizer.FIELD'"),
    ('[{"optimizer.lr": 1e-3}, {"optimizer.lr": 1e-3}]', r"points 0 and 1 are the same"),
    ("[]", r"non-empty list"),
])
def test_bad_points_name_the_point_and_the_key(tmp_path, points, message):
  path = _config_file(tmp_path, f"\n\ndef get_sweep(arg=None):\n  return {points}\n")
  with pytest.raises(ConfigError, match=message) as error:
    sweep.load(str(path))
  assert str(path) in str(error.value)


def test_missing_get_sweep_names_the_file_and_the_fix(tmp_path):
  path = _config_file(tmp_path, "")
  with pytest.raises(ConfigError, match=re.escape(f"{path} defines no get_sweep()")) as error:
    sweep.load(str(path))
  assert "def get_sweep(arg=None)" in str(error.value)


def test_config_argument_reaches_get_config_and_get_sweep(tmp_path):
  path = _config_file(tmp_path, """

      def get_sweep(arg=None):
        return [{"train.num_steps": int(arg)}, {"train.num_steps": 2 * int(arg)}]
      """)
  loaded = sweep.load(f"{path}:3")
  assert loaded.arg == "3" and [p["train.num_steps"] for p in loaded.points] == [3, 6]


def test_commands_round_trip_through_ml_collections_flags():
  point = {"optimizer.lr": 3e-5, "optimizer.b1": 1, "train.eval_at_start": True,
           "train.async_checkpointing": False, "train.batch_size": 8,
           "data.source": "my data/*.jsonl", "data.separator": "true",
           "mesh.rules": (("batch", "data"), ("embed", None)), "model.dtype": "bfloat16"}
  sweep.validate([point], sweep.load(TINY).base, TINY)
  argv = sweep.command("jaxllm.recipes.pretrain", TINY, "/tmp/w/000", point, ["seed=7"],
                       python="python3")
  assert argv[:5] == ["python3", "-m", "jaxllm.recipes.pretrain", f"--config={TINY}",
                      "--workdir=/tmp/w/000"]
  assert "--config.optimizer.lr=3e-05" in argv and "--config.train.eval_at_start=true" in argv
  assert shlex.split(shlex.join(argv)) == argv
  overrides = [a.removeprefix("--config.") for a in argv[5:]]
  config = sweep.resolve(TINY, overrides)  # what the recipe's config flag builds
  assert config.seed == 7
  expected = {**point, "optimizer.b1": 1.0}  # an int given for a float field reads as a float
  for key, value in expected.items():
    got = config
    for part in key.split("."):
      got = got[part]
    assert got == value and type(got) is type(value), key


def test_point_names_are_unique_and_filesystem_safe():
  points = [{"optimizer.lr": 1e-3, "data.source": "a/b c*?"},
            {"optimizer.lr": 1e-3, "data.source": "a/b_c__"},
            {"mesh.rules": (("batch", "data"),), "train.eval_at_start": True}]
  names = [sweep.point_name(i, p) for i, p in enumerate(points)]
  assert names[0] == "000-optimizer.lr=0.001,data.source=a_b_c__"
  assert len(set(names)) == len(names)
  assert all(re.fullmatch(r"[A-Za-z0-9._=,+-]+", n) for n in names)
  assert sweep.point_name(1, {"data.source": "x" * 500}).startswith("001-")
  assert len(sweep.point_name(1, {"data.source": "x" * 500})) <= 120


def test_result_reads_the_last_logged_value(tmp_path):
  _write_metrics(tmp_path, [
      {"step": 2, "train/loss": 5.0},
      {"step": 4, "train/loss": 4.0},
      {"step": 4, "eval/loss": 4.5, "eval/accuracy": 0.1},
      {"step": 6, "train/loss": "nan"},
      {"step": 8, "eval/loss": 4.25, "eval/accuracy": 0.3},
  ], tail='{"step": 10, "eval/lo')  # a line cut off by a killed run
  assert sweep.result(tmp_path, "eval/loss") == (4.25, 8)
  value, step = sweep.result(tmp_path, "train/loss")
  assert math.isnan(value) and step == 6
  assert sweep.result(tmp_path, "train/loss", "min") == (4.0, 4)
  assert sweep.result(tmp_path, "eval/accuracy", "max") == (0.3, 8)
  assert sweep.result(tmp_path, "eval/perplexity") is None
  assert sweep.result(tmp_path / "missing", "eval/loss") is None
  assert sweep.is_complete(tmp_path, 8) and not sweep.is_complete(tmp_path, 10)
  assert not sweep.is_complete(tmp_path / "missing", 1)


def test_best_mode_and_best_row():
  assert sweep.best_mode("eval/loss") == "min" and sweep.best_mode("eval/perplexity") == "min"
  assert sweep.best_mode("eval/accuracy") == "max" and sweep.best_mode("eval/loss", "max") == "max"
  rows = [{"eval/loss": 3.0, "status": "ok"}, {"eval/loss": 1.0, "status": "failed"},
          {"eval/loss": float("nan"), "status": "ok"}, {"eval/loss": 2.0, "status": "skipped"},
          {"eval/loss": 0.5, "status": "interrupted"}]
  assert sweep.best(rows, "eval/loss") is rows[3]
  assert sweep.best(rows, "eval/loss", "max") is rows[0]


def test_csv_and_plot_from_fixed_rows(tmp_path):
  rows = [{"point": f"{i:03d}", "workdir": f"w/{i}", "optimizer.lr": lr, "train.batch_size": bs,
           "eval/loss": loss, "step": 4 if loss is not None else None,
           "status": "ok" if loss is not None else "failed", "seconds": 1.5}
          for i, (lr, bs, loss) in enumerate([(1e-3, 8, 3.0), (1e-2, 8, 2.5), (1e-1, 8, 2.9),
                                              (1e-3, 16, 2.8), (1e-2, 16, None)])]
  sweep.write_csv(tmp_path / "sweep.csv", rows)
  with (tmp_path / "sweep.csv").open() as f:
    read = list(csv.DictReader(f))
  assert list(read[0]) == ["point", "workdir", "optimizer.lr", "train.batch_size", "eval/loss",
                           "step", "status", "seconds"]
  assert [r["optimizer.lr"] for r in read] == ["0.001", "0.01", "0.1", "0.001", "0.01"]
  assert read[1]["eval/loss"] == "2.5"
  assert read[4]["eval/loss"] == "" and read[4]["status"] == "failed"

  sweep.plot(tmp_path / "sweep.png", rows, ["optimizer.lr", "train.batch_size"], "eval/loss")
  assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  text_rows = [{"data.packing": p, "eval/loss": v}
               for p, v in [("first_fit", 2.0), ("best_fit", 1.9)]]
  sweep.plot(tmp_path / "categorical.png", text_rows, ["data.packing"], "eval/loss")
  sweep.plot(tmp_path / "empty.png", rows[4:], ["optimizer.lr"], "eval/loss")
  assert (tmp_path / "categorical.png").stat().st_size and (tmp_path / "empty.png").stat().st_size
  table = sweep.table(rows, ["point", "optimizer.lr", "eval/loss"], rows[1])
  assert table.splitlines()[2].startswith("* 001")


_FAKE_STAGE = """\
import json, pathlib, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
workdir = pathlib.Path(args["workdir"])
lr = float(args["config.optimizer.lr"])
print("fake stage, lr", lr)
if lr > 0.005:
  print("boom: lr too high")
  sys.exit(3)
workdir.mkdir(parents=True, exist_ok=True)
with (workdir / "metrics.jsonl").open("a") as f:
  f.write(json.dumps({"step": 4, "eval/loss": 1.0 + lr}) + "\\n")
"""


@pytest.mark.slow  # points run as subprocesses
def test_failed_points_are_recorded_and_complete_ones_skipped(tmp_path, monkeypatch):
  config = _config_file(tmp_path, """

      def get_sweep(arg=None):
        return sweep.grid(**{"optimizer.lr": [1e-3, 1e-2, 2e-3]})
      """)
  stage = tmp_path / "modules" / "fake_stage.py"  # run as python -m fake_stage
  stage.parent.mkdir()
  stage.write_text(_FAKE_STAGE)
  monkeypatch.syspath_prepend(str(stage.parent))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(stage.parent), str(ROOT)]))
  out = tmp_path / "sweep"
  _write_metrics(out / "002-optimizer.lr=0.002", [{"step": 4, "eval/loss": 0.5}])  # finished
  lines = []
  with pytest.raises(UserError, match=r"1 of 3 sweep points did not finish: .*001-optimizer"):
    sweep.run(str(config), out, module="fake_stage", echo=lines.append)
  with (out / "sweep.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert [r["status"] for r in rows] == ["ok", "failed", "skipped"]
  assert [r["eval/loss"] for r in rows] == ["1.001", "", "0.5"]
  assert "boom: lr too high" in (out / "001-optimizer.lr=0.01" / "log.txt").read_text()
  assert any("failed (exit 3)" in ln and "boom" in ln for ln in lines)
  assert any("best (min eval/loss): 002-optimizer.lr=0.002" in ln for ln in lines)
  assert (out / "sweep.png").is_file()

  # Fixed: the rerun runs only the failed point (the interpreter must not start for the others).
  stage.write_text(_FAKE_STAGE.replace("lr > 0.005", "False"))
  rows = sweep.run(str(config), out, module="fake_stage", echo=lines.append)
  assert [r["status"] for r in rows] == ["skipped", "ok", "skipped"]
  assert rows[1]["eval/loss"] == 1.01

  with pytest.raises(UserError, match="--metric=eval/bleu was not logged.*eval/loss"):
    sweep.run(str(config), out, module="fake_stage", metric="eval/bleu", echo=lines.append)


def test_extra_overrides_are_checked_and_apply_to_every_point(tmp_path):
  _, points = sweep.plan(TINY, tmp_path, extra=["train.num_steps=5", "data.seq_len=32"],
                         python="python3")
  assert [p.num_steps for p in points] == [5] * 4
  assert all("--config.train.num_steps=5" in p.argv for p in points)
  with pytest.raises(ConfigError, match="--set=optimizer.lr=1.*swept"):
    sweep.plan(TINY, tmp_path, extra=["optimizer.lr=1"])
  with pytest.raises(ConfigError, match="did you mean 'train.num_steps'"):
    sweep.plan(TINY, tmp_path, extra=["train.num_step=5"])
  no_stage = _config_file(tmp_path, """
      def get_sweep(arg=None):
        return sweep.grid(**{"optimizer.lr": [1e-3]})
      """, name="no_stage.py")
  no_stage.write_text(no_stage.read_text().replace('base_config("tiny")',
                                                   'base_config("tiny")\n  del c["stage"]'))
  with pytest.raises(ConfigError, match="has no `stage` field.*--module"):
    sweep.plan(str(no_stage), tmp_path)
  with pytest.raises(ConfigError, match="--module=no_such.module: no such module"):
    sweep.plan(TINY, tmp_path, module="no_such.module")


@pytest.mark.slow  # the sweep script as a subprocess
def test_dry_run_prints_one_command_per_point_and_runs_nothing(tmp_path):
  done = _sweep_script(f"--config={TINY}", f"--workdir={tmp_path / 'sweep'}", "--dry_run",
                       "--set=train.num_steps=50")
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  assert len(lines) == 4
  for line, lr in zip(lines, ["0.001", "0.003", "0.01", "0.03"]):
    argv = shlex.split(line)
    assert argv[1:5] == ["-m", "jaxllm.recipes.pretrain", f"--config={TINY}",
                         f"--workdir={tmp_path / 'sweep'}/{argv[4].rsplit('/', 1)[1]}"]
    assert argv[-2:] == ["--config.train.num_steps=50", f"--config.optimizer.lr={lr}"]
  assert not (tmp_path / "sweep").exists()

  bad = _sweep_script("--config=configs/pretrain/adapt_tiny.py", f"--workdir={tmp_path}",
                      "--dry_run")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert "configs/pretrain/adapt_tiny.py defines no get_sweep()" in bad.stderr


@pytest.mark.slow  # two real runs as subprocesses
def test_end_to_end_sweep_of_tiny_pretraining_then_rerun_skips(tmp_path):
  config = _config_file(tmp_path, """

      def get_sweep(arg=None):
        return sweep.grid(**{"optimizer.lr": [1e-3, 1e-2]})
      """)
  out = tmp_path / "sweep"
  args = [f"--config={config}", f"--workdir={out}", "--set=train.log_every=4"]
  done = _sweep_script(*args)
  assert done.returncode == 0, done.stdout + done.stderr
  with (out / "sweep.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert [r["optimizer.lr"] for r in rows] == ["0.001", "0.01"]
  assert all(r["status"] == "ok" and r["step"] == "4" for r in rows)
  for r in rows:  # each row holds its run's last logged eval/loss
    evals = [m for m in read_metrics(out / r["point"]) if "eval/loss" in m]
    assert evals[-1]["step"] == 4 and float(r["eval/loss"]) == evals[-1]["eval/loss"], r
  assert (out / "sweep.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
  assert "step 4/4" in (out / rows[0]["point"] / "log.txt").read_text()
  best = min(rows, key=lambda r: float(r["eval/loss"]))
  assert f"best (min eval/loss): {best['point']} eval/loss=" in done.stdout

  again = _sweep_script(*args)
  assert again.returncode == 0, again.stdout + again.stderr
  assert again.stdout.count("skipped") >= 2 and "running" not in again.stdout
  with (out / "sweep.csv").open() as f:
    rerun = list(csv.DictReader(f))
  assert [r["status"] for r in rerun] == ["skipped", "skipped"]
  assert [r["eval/loss"] for r in rerun] == [r["eval/loss"] for r in rows]
