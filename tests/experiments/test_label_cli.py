"""experiments/label.py as a user runs it: sample 2 x 2 responses once (a rerun reuses them),
serve and judge, a second labeling process refused, SIGKILL and restart without losing the
judgement, export a judgements file to pairs, and a bad prompts file's one-line error."""

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from jaxllm.labeling import store as labels
from tests.experiments.conftest import child_env, run_script
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses


def test_label_samples_once_serves_exports_and_names_bad_lines(pretrained_run, tmp_path):
  run = tmp_path / "run"  # a copy: labels/ stays out of the shared run
  shutil.copytree(pretrained_run, run)
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "Greta Park works as", "id": "g"}\n'
                     '{"prompt": "<b>The river</b>"}\n')
  args = [f"--workdir={run}", f"--prompts={prompts}", "--samples=2", "--max_new_tokens=6"]
  done = run_script("label.py", *args, "--sample_only")
  assert done.returncode == 0, done.stderr
  items = labels.read_items(run / "labels" / "responses.jsonl")
  assert items[0].id == "g" and [len(i.responses) for i in items] == [2, 2]
  again = run_script("label.py", *args, "--sample_only")  # stored: nothing is sampled again
  assert "2 with stored responses, 0 sampled now" in again.stdout
  assert labels.read_items(run / "labels" / "responses.jsonl") == items

  # Serve, judge the first prompt, SIGKILL the server: the restarted one has the judgement and
  # serves the labeler the second prompt.
  server, url = _serve(args)
  try:
    served = _call(url + "api/next?labeler=ann")
    assert served["item"]["id"] == "g" and served["item"]["responses"] == list(items[0].responses)
    answer = _call(url + "api/judgements", {"prompt_id": "g", "labeler": "ann",
                                            "ranking": [1, 0], "note": "second is better"})
    assert answer["progress"]["done"] == 1
    second = run_script("label.py", *args, "--sample_only")  # while the server runs
    assert second.returncode == 2 and "labels is in use by 'label.py" in second.stderr
  finally:
    server.kill()  # its lock stays behind: the restart below clears it (no such process)
    server.wait(timeout=10)
  judgements = run / "labels" / "judgements.jsonl"
  stored, torn = labels.read_jsonl(judgements)
  assert [(r["ranking"], r["note"]) for r in stored] == [([[1], [0]], "second is better")]
  assert not torn
  server, url = _serve(args)
  try:
    served = _call(url + "api/next?labeler=ann")
    assert served["item"]["id"] == items[1].id and served["progress"]["done"] == 1
    with pytest.raises(urllib.error.HTTPError, match="404"):  # werkzeug colours these lines
      _call(url + "api/nothing")
  finally:
    server.terminate()
    server.wait(timeout=10)
  assert not (run / "labels" / "run.lock").exists()  # SIGTERM stops the server cleanly
  log = server.stderr.read()
  assert "GET /api/nothing" in log and "\x1b[" not in log  # request lines, no colour codes

  labels.append_jsonl(judgements, [
      labels.make_judgement(items[1], {"labeler": "ann", "ranking": [[0, 1]]}),
      labels.make_judgement(items[0], {"labeler": "bob", "ranking": [1, 0]})])
  out = tmp_path / "pairs.jsonl"
  exported = run_script("label.py", f"--workdir={run}", "--export", f"--out={out}",
                        "--ties=keep")
  assert exported.returncode == 0, exported.stderr
  pairs = [json.loads(ln) for ln in out.read_text().splitlines()]
  strict = [p for p in pairs if not p.get("tie")]
  assert len(strict) == 2 and {p["labeler"] for p in strict} == {"ann", "bob"}
  assert all(p["chosen"] == items[0].responses[1] for p in strict)
  agreement = run_script("label.py", f"--workdir={run}", "--agreement")
  assert "ann vs bob: 1 prompts" in agreement.stdout, agreement.stderr

  prompts.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
  bad = run_script("label.py", *args, "--sample_only")
  assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
  assert f"{prompts}:2: field 'prompt'" in bad.stderr


def _serve(args):
  """label.py serving on a free port; (process, page URL) once it listens."""
  server = subprocess.Popen([sys.executable, "experiments/label.py", *args, "--port=0"], cwd=ROOT,
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
  line = ""
  while "labeling page: " not in line:
    line = server.stdout.readline()
    assert line or server.poll() is None, server.stderr.read()
  return server, line.split("labeling page: ")[1].split()[0]


def _call(url, body=None):
  data = None if body is None else json.dumps(body).encode()
  request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=10) as answer:
    return json.load(answer)
