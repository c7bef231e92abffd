"""Collect human preferences: a local web page to rank a run's sampled responses.

  python experiments/label.py --workdir=RUN --prompts=prompts.jsonl --port=8080
  python experiments/label.py --workdir=RUN --agreement
  python experiments/label.py --workdir=RUN --export --out=pairs.jsonl [--ties=keep]

The first command samples --samples responses to each prompt of --prompts (JSONL lines
{"prompt": str or chat messages, "id"?: str}) with the run's model, stores them in
RUN/labels/responses.jsonl (a restart reuses them; only new prompts are sampled) and serves the
labeling page on http://127.0.0.1:PORT (--host to change). Chat and SFT runs get the chat
template, base (pretraining) runs plain text after BOS; --chat / --nochat decides instead.
Judgements go to RUN/labels/judgements.jsonl (jaxllm/labeling/). --sample_only stops after
sampling; --agreement prints Cohen's and Fleiss' kappa; --export writes preference pairs that
the reward-model and DPO stages read (--config.data.source=FILE).
"""

import contextlib
import json
import pathlib
import signal
import sys

from absl import flags

from jaxllm import cli, rundir, storage
from jaxllm.errors import UserError
from jaxllm.labeling import agreement
from jaxllm.labeling import store as labels

FLAGS = flags.FLAGS
LOCAL = ("127.0.0.1", "localhost", "::1")
cli.define_run_flags()
cli.define_sampling_flags(temperature=1.0, max_new_tokens=128, top_k=False)
flags.DEFINE_string("prompts", None, "JSONL of prompts to sample and label (not needed once "
                    "RUN/labels/responses.jsonl holds them).")
flags.DEFINE_integer("samples", 4, "Responses sampled per prompt (2 to 9).")
flags.DEFINE_integer("batch_size", 32, "Sequences sampled together.")
flags.DEFINE_bool("chat", None, "Render prompts with the chat template (default: yes unless the "
                  "run is a base pretraining run).")
flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (127.0.0.1: this machine only).")
flags.DEFINE_integer("port", 8080, "Port to serve on (0: any free port).")
flags.DEFINE_bool("sample_only", False, "Sample the responses and exit without serving.")
flags.DEFINE_bool("agreement", False, "Print inter-annotator agreement and exit.")
flags.DEFINE_string("labelers", "", "With --agreement: comma-separated labelers (default all).")
flags.DEFINE_bool("export", False, "Write preference pairs from the judgements and exit.")
flags.DEFINE_string("out", None, "With --export: output file (default RUN/labels/pairs.jsonl).")
flags.DEFINE_enum("ties", "drop", labels.TIES, "With --export: drop tied pairs, or keep them "
                  "as both orders with margin 0.")


def label_dir(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / "labels"


def export(workdir) -> None:
  path = label_dir(workdir) / "judgements.jsonl"
  if not path.is_file():
    raise UserError(f"{path} does not exist: label some prompts first.")
  records, torn = labels.read_jsonl(path)
  pairs, counts = labels.export_pairs(records, FLAGS.ties)
  out = pathlib.Path(FLAGS.out) if FLAGS.out else label_dir(workdir) / "pairs.jsonl"
  out.parent.mkdir(parents=True, exist_ok=True)
  rundir.write_text(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
  torn_note = " (a partial last line was left out)" if torn else ""
  print(f"{counts['judgements']} rankings -> {len(pairs)} pairs in {out}: {counts['pairs']} "
        f"strict, {counts['tied_pairs']} ties kept (both orders), {counts['ties_dropped']} ties "
        f"dropped, {counts['identical']} pairs of identical responses left out{torn_note}",
        flush=True)


def main(argv):
  del argv
  storage.require_local(FLAGS.workdir, "--workdir", "the labels are kept in a local file "
                        "store beside the run")
  if FLAGS.export and FLAGS.agreement:
    raise UserError("--export and --agreement: give one of them.")
  if FLAGS.export:
    return export(FLAGS.workdir)
  if FLAGS.agreement:
    records, _ = labels.read_jsonl(label_dir(FLAGS.workdir) / "judgements.jsonl")
    chosen = [n.strip() for n in FLAGS.labelers.split(",") if n.strip()] or None
    print(agreement.format_agreement(agreement.agreement(records, chosen)))
    return None
  # Imported here: --export and --agreement need no model (and no JAX start-up).
  from jaxllm import runs  # pylint: disable=import-outside-toplevel
  from jaxllm.labeling import responses  # pylint: disable=import-outside-toplevel
  sampling = responses.Sampling(
      samples=FLAGS.samples, temperature=FLAGS.temperature, top_p=FLAGS.top_p,
      max_new_tokens=FLAGS.max_new_tokens, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
      chat=FLAGS.chat)
  runs.read_config(FLAGS.workdir)  # a run directory, before anything is written into it
  # One labeling process per run: a second server would hand out items judged on the first.
  with rundir.lock(label_dir(FLAGS.workdir), what="--workdir (or stop the other labeling "
                   "server)"):
    return sample_and_serve(sampling)


def _stop(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def sample_and_serve(sampling) -> None:
  from jaxllm.labeling import responses  # pylint: disable=import-outside-toplevel
  items = responses.prepare_items(FLAGS.workdir, FLAGS.prompts, sampling, FLAGS.step)
  if FLAGS.sample_only:
    return None
  from werkzeug import serving  # pylint: disable=import-outside-toplevel

  from jaxllm.labeling import app as labeling  # pylint: disable=import-outside-toplevel
  store = labels.JudgementStore(label_dir(FLAGS.workdir) / "judgements.jsonl")
  if store.torn:
    print(f"{store.path}: a partial last line (a write cut short) was moved to "
          f"{store.path}.torn", flush=True)
  print(f"{len(store.records)} judgements so far in {store.path}", flush=True)
  # The Host headers answered: the served name (and this machine's other names for it).
  hosts = [*LOCAL, "[::1]"] if FLAGS.host in LOCAL else [FLAGS.host]
  app = labeling.make_app(store, items, title=f"Labeling {pathlib.Path(FLAGS.workdir).name}",
                          hosts=hosts)
  try:
    server = serving.make_server(FLAGS.host, FLAGS.port, app, threaded=True)
  except OSError as e:
    raise UserError(f"cannot serve on {FLAGS.host}:{FLAGS.port} ({e}); pick another --port.") from e
  if FLAGS.host not in LOCAL:
    print(f"warning: --host={FLAGS.host}: the page has no login; anyone who can reach this "
          "address can read the responses and add judgements.", flush=True)
  print(f"labeling page: http://{FLAGS.host}:{server.server_port}/ (Ctrl-C to stop)", flush=True)
  # werkzeug colours its request lines on POSIX whatever the output is: plain lines into files.
  serving._log_add_style = sys.stderr.isatty()  # noqa: SLF001
  signal.signal(signal.SIGTERM, _stop)  # stop as on Ctrl-C: the run's lock is released
  with contextlib.suppress(KeyboardInterrupt):
    server.serve_forever()
  return None


if __name__ == "__main__":
  cli.run(main)
