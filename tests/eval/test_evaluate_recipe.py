"""experiments/evaluate.py never wipes earlier results: a second evaluation of the same
checkpoint merges into eval.json, another checkpoint's results are kept beside it."""

import json

from jaxllm.recipes import evaluate


def _fake_evaluate(step):
  def fake(run, config, shared=None):
    del run, shared
    asked = evaluate.suites.selected(config)
    return {"stage": "sft", "kind": "chat", "step": step, "world_seed": 0,
            "suites": {s: {"score": float(len(s)), "questions": 10} for s in asked},
            "metrics": {f"{s}/score": float(len(s)) for s in asked}, "skipped": {},
            "seconds": {s: 1.0 for s in asked}}
  return fake


def test_a_second_evaluation_merges_and_another_checkpoint_is_kept_beside(tmp_path,
                                                                         monkeypatch):
  monkeypatch.setattr(evaluate.runs, "load_run", lambda workdir, step: None)
  config = evaluate.default_config()
  monkeypatch.setattr(evaluate.suites, "evaluate", _fake_evaluate(step=40))
  config.suites = ("lm", "qa")
  evaluate.run(config, tmp_path)
  config.suites, config.qa.questions = ("qa", "skills"), 7
  evaluate.run(config, tmp_path)
  result = json.loads((tmp_path / "eval.json").read_text())
  assert sorted(result["suites"]) == ["lm", "qa", "skills"]  # lm kept, qa replaced, skills added
  assert sorted(result["metrics"]) == ["lm/score", "qa/score", "skills/score"]
  assert result["settings"]["qa"]["questions"] == 7 and "lm" in result["settings"]
  # A newer checkpoint: its results are eval.json, the earlier ones stay under their step.
  monkeypatch.setattr(evaluate.suites, "evaluate", _fake_evaluate(step=80))
  config.suites = ("lm",)
  evaluate.run(config, tmp_path)
  assert list(json.loads((tmp_path / "eval.json").read_text())["suites"]) == ["lm"]
  kept = json.loads((tmp_path / "eval_step40.json").read_text())
  assert sorted(kept["suites"]) == ["lm", "qa", "skills"]
