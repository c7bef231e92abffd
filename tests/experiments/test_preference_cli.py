"""experiments/reward_model.py and experiments/dpo.py from a pretrained run: metrics, reference
log-probs computed once and reused on resume, LoRA with the base as in-step reference, a
simulated annotator, loading and scoring the reward model, and clear errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm import runs
from jaxllm.data import preferences
from jaxllm.inference.scoring import RewardScorer
from jaxllm.models.reward import RewardModel
from tests.experiments.conftest import run_script
from tests.helpers import read_metrics

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses

SHORT = ["--config.train.log_every=2", "--config.train.eval_every=4",
         "--config.train.checkpoint_every=4", "--config.train.eval_batches=2",
         "--config.train.batch_size=8"]


def test_reward_model_trains_loads_and_scores(pretrained_run, reward_run, tmp_path):
  workdir = reward_run
  evals = {m["step"]: m for m in read_metrics(workdir) if "eval/accuracy" in m}
  assert sorted(evals) == [0, 4]  # the fresh score head, then after 4 steps
  for m in evals.values():
    assert m["eval/margin"] == pytest.approx(
        m["eval/rewards/chosen"] - m["eval/rewards/rejected"], abs=1e-6)
  # Four steps lower the Bradley-Terry loss on held-out pairs (too few to move the accuracy
  # reliably: tests/objectives/test_pair_objectives.py shows a reward model learning a pattern).
  assert evals[4]["eval/loss"] < evals[0]["eval/loss"] - 0.01, evals
  run = runs.load_run(workdir)
  assert isinstance(run.model, RewardModel) and "lm_head" not in run.params["backbone"]
  conversation = [{"role": "user", "content": "What is 2 + 2?"},
                  {"role": "assistant", "content": "The answer is 4."}]
  wrong = conversation[:1] + [{"role": "assistant", "content": "The answer is 5."}]
  scores = RewardScorer(run.model, run.tokenizer, 96)(run.params, [conversation] * 3 + [wrong])
  # The scorer's reward is the model's on the rendered conversation, read at its last token,
  # whatever the batch's padding; another reply gets another reward.
  ids, _ = preferences.render_reply(run.tokenizer, conversation[:1], conversation[1]["content"])
  alone = float(run.model.apply({"params": run.params}, jnp.asarray([ids]))[0])
  np.testing.assert_allclose(scores[:3], alone, rtol=1e-5, atol=1e-6)
  assert abs(scores[3] - alone) > 1e-4
  # A reward model is not a policy to align; LoRA reward models are refused.
  refused = run_script("dpo.py", "--config=configs/dpo/tiny.py:steps=1",
                       f"--workdir={tmp_path / 'x'}", f"--config.init.checkpoint={workdir}")
  assert refused.returncode == 2 and "is a reward-model run" in refused.stderr
  refused = run_script("reward_model.py", "--config=configs/reward/tiny.py:steps=1",
                       f"--workdir={tmp_path / 'y'}", f"--config.init.checkpoint={pretrained_run}",
                       "--config.lora.rank=4")
  assert refused.returncode == 2 and "config.lora.rank=4" in refused.stderr


def test_dpo_precomputes_the_reference_once_and_resumes(pretrained_run, tmp_path):
  workdir = tmp_path / "dpo"
  args = [f"--workdir={workdir}", f"--config.init.checkpoint={pretrained_run}",
          "--config.eval.qa_questions=4", "--config.eval.max_new_tokens=8",
          "--config.optimizer.lr=1e-4", *SHORT]
  done = run_script("dpo.py", "--config=configs/dpo/tiny.py:steps=4", *args)
  assert done.returncode == 0, done.stderr
  assert "reference log-probs of" in done.stdout
  table = json.loads((workdir / "reference_logps.json").read_text())
  assert table["settings"]["init"] == str(pretrained_run) and len(table["logps"]) > 2000
  metrics = read_metrics(workdir)
  first = next(m for m in metrics if "train/loss" in m)
  assert abs(first["train/loss"] - np.log(2)) < 0.05  # the policy starts at the reference
  evals = [m for m in metrics if "eval/loss" in m]
  assert {"eval/rewards/accuracies", "eval/rewards/margins", "eval/logps/chosen",
          "eval/logps/rejected", "eval/qa_accuracy"} <= set(evals[0])
  again = run_script("dpo.py", "--config=configs/dpo/tiny.py:steps=6", *args)
  assert again.returncode == 0, again.stderr
  assert "resumed from" in again.stdout and "reference log-probs of" not in again.stdout
  assert [m["step"] for m in read_metrics(workdir) if "train/loss" in m] == [2, 4, 6]


def test_lora_dpo_on_policy_pairs_in_step_reference_noisy_annotator(pretrained_run, tmp_path):
  workdir = tmp_path / "lora_dpo"
  done = run_script("dpo.py", "--config=configs/dpo/tiny.py:steps=2", f"--workdir={workdir}",
                    f"--config.init.checkpoint={pretrained_run}", "--config.lora.rank=4",
                    "--config.preference.reference=in_step", "--config.preference.loss=ipo",
                    "--config.data.annotator.noise=0.3", "--config.eval.qa_questions=0",
                    "--config.data.on_policy.samples=2", "--config.data.on_policy.questions=6",
                    "--config.data.on_policy.max_new_tokens=8", *SHORT)
  assert done.returncode == 0, done.stderr
  assert "simulated annotator (noise 0.3" in done.stdout and "trainable parameters" in done.stdout
  assert not (workdir / "reference_logps.json").exists()
  lines = (workdir / "on_policy" / "train.jsonl").read_text().splitlines()
  pairs = [json.loads(ln) for ln in lines]
  summary = json.loads((workdir / "on_policy" / "summary.json").read_text())
  assert summary["questions"] == 6 and summary["samples"] == 12 and len(pairs) == summary["pairs"]
  assert all(p["prompt"][-1]["role"] == "user" and p["chosen"] != p["rejected"] for p in pairs)
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["source"] == str(workdir / "on_policy" / "train.jsonl")
  assert runs.load_run(workdir).params.keys() == runs.load_run(pretrained_run).params.keys()
