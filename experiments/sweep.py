"""Run a config's hyperparameter sweep: one run per get_sweep() point, then a CSV and a plot.

  python experiments/sweep.py --config=configs/pretrain/tiny.py --workdir=/tmp/jaxllm/lr_sweep
  python experiments/sweep.py --config=configs/pretrain/tiny.py:steps=200 \\
      --workdir=/tmp/jaxllm/lr_sweep --set=train.eval_every=100 --metric=eval/accuracy

The config file's get_sweep() returns a list of {field path: value} dicts (see
jaxllm/workflow/sweep.py, grid()). Each point runs the recipe the config's stage names
(`python -m jaxllm.recipes.<config.stage>`; or --module, a module of yours with a main()) one
after another in WORKDIR/NNN-<field>=<value>, its output in log.txt there.
--set=FIELD=VALUE (repeatable) overrides a field for every point. Running the same command
again skips the points whose metrics.jsonl has the final step and resumes the others.
Then WORKDIR/sweep.csv has one row per point (its values, the last logged --metric and its
step, status, seconds) and WORKDIR/sweep.png plots the metric against the first swept field;
the best point (lowest loss or perplexity, else highest; --mode=min|max) is printed.
A failed point is recorded as failed, the others still run, and the sweep exits 2 at the end.

--dry_run prints one shell command per point and runs nothing, to run them elsewhere:

  python experiments/sweep.py --config=configs/pretrain/tiny.py --workdir=runs/lr \\
      --dry_run --python=python3 > commands.sh
  # a cluster: one job per line, e.g.  while read -r c; do sbatch --wrap="$c"; done < commands.sh
  # TPU VMs (every worker runs the same command; pass --set=distributed.initialize=true):
  while read -r c; do
    gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd jaxllm && $c"
  done < commands.sh

Then the same command without --dry_run, on a machine that sees the run directories, skips the
finished points and writes sweep.csv and sweep.png.
"""

import shlex
import sys

from absl import flags

from jaxllm import cli
from jaxllm.errors import UserError
from jaxllm.workflow import sweep

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file with get_config() and get_sweep(), as PATH or "
                    "PATH:ARG (ARG goes to both).")
flags.DEFINE_string("workdir", None, "Sweep directory: one run directory per point, sweep.csv, "
                    "sweep.png.")
flags.DEFINE_bool("dry_run", False, "Print one shell command per point and run nothing.")
flags.DEFINE_string("metric", "eval/loss", "metrics.jsonl key to tabulate and plot (its last "
                    "logged value).")
flags.DEFINE_enum("mode", "auto", list(sweep.MODES), "Whether the best point has the lowest or "
                  "highest metric; auto: min for losses and perplexities, else max.")
flags.DEFINE_string("module", None, "Module each point runs with python -m (default: "
                    "jaxllm.recipes.<the config's stage>).")
flags.DEFINE_multi_string("set", [], "FIELD=VALUE override for every point, e.g. "
                          "--set=train.num_steps=50; repeatable.")
flags.DEFINE_string("python", sys.executable, "Python interpreter the commands run with.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; flags are written --name=value.")
  if FLAGS.dry_run:
    _, points = sweep.plan(FLAGS.config, FLAGS.workdir, FLAGS.module, FLAGS.set, FLAGS.python)
    for point in points:
      print(shlex.join(point.argv))
    return
  sweep.run(FLAGS.config, FLAGS.workdir, metric=FLAGS.metric, mode=FLAGS.mode,
            module=FLAGS.module, extra=FLAGS.set, python=FLAGS.python)


if __name__ == "__main__":
  cli.run(main)
