"""experiments/rl.py from a pretrained run: GRPO (full and LoRA), PPO with a value head, RLHF
against a reward model; exact resume including the sampler's keys; the reference is never run
when the KL weight is 0; clear errors."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from jaxllm import config as config_lib
from jaxllm import runs
from jaxllm.errors import ConfigError
from jaxllm.models import Transformer
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.recipes import rl as experiment
from jaxllm.rl import rewards
from tests.experiments.conftest import run_script
from tests.helpers import read_metrics

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses

SMALL = ["--config.train.batch_size=8", "--config.rl.group_size=4", "--config.rl.max_new_tokens=12",
         "--config.data.seq_len=96", "--config.train.eval_every=2",
         "--config.train.checkpoint_every=2", "--config.eval.qa_questions=4",
         "--config.eval.pass_k=2", "--config.eval.pass_samples=2",
         "--config.eval.batch_size=8"]


def _variety(records, replies):
  """A reward that differs between samples of an untrained model: distinct characters."""
  return np.array([len(set(r)) / 10.0 for r in replies], np.float32)


def _config(pretrained_run, steps=4, **rl):
  c = experiment.default_config("tiny")
  c.init.checkpoint = str(pretrained_run)
  c.train.num_steps = steps
  c.train.batch_size = 16
  c.train.checkpoint_every = 2
  c.train.eval_every = 100
  c.train.async_checkpointing = False
  c.data.seq_len = 96
  c.eval.qa_source = ""
  c.rl.group_size = 4
  c.rl.max_new_tokens = 12
  c.rl.drop_uniform_groups = False
  c.optimizer.lr = 1e-4
  for k, v in rl.items():
    c.rl[k] = v
  return c


def test_rl_resumes_exactly_with_the_same_samples(pretrained_run, tmp_path):
  own = rewards.Rewards({"variety": _variety}, {"variety": 1.0})
  config = _config(pretrained_run, kl_coef=0.1, epochs=2, minibatches=2, clip_high=0.28)
  full = experiment.run(config, tmp_path / "full", rewards=own)

  def sigterm_at_2(step):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  part = experiment.run(_config(pretrained_run, kl_coef=0.1, epochs=2, minibatches=2,
                                clip_high=0.28), tmp_path / "resumed", hooks=(sigterm_at_2,),
                        rewards=own)
  assert int(part["step"]) == 2
  resumed = experiment.run(_config(pretrained_run, kl_coef=0.1, epochs=2, minibatches=2,
                                   clip_high=0.28), tmp_path / "resumed", rewards=own)
  assert int(resumed["step"]) == 4
  want, got = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
  assert got == want  # timings are in perf.jsonl
  for a, b in zip(jax.tree.leaves(resumed["params"]), jax.tree.leaves(full["params"])):
    np.testing.assert_array_equal(a, b)
  rollouts = [m for m in want if "rollout/reward_mean" in m]
  assert [m["step"] for m in rollouts] == [1, 2, 3, 4]
  assert len({m["rollout/reward_mean"] for m in rollouts}) > 1  # new samples every iteration
  train = [m for m in want if "train/loss" in m]
  # The first rollout comes from the reference itself; then the policy moves away from it.
  assert rollouts[0]["rollout/kl_ref"] == pytest.approx(0.0, abs=1e-6)
  assert rollouts[-1]["rollout/kl_ref"] > 1e-4 and train[-1]["train/kl"] > 1e-4
  assert train[-1]["train/weight"] > 0 and "train/loss_first" in train[-1]
  assert rollouts[0]["rollout/logprob_diff"] < 1e-4  # sampler and trainer agree
  assert {"time/sample_seconds", "time/reward_seconds", "time/logp_seconds"} <= set(
      read_metrics(tmp_path / "full", "perf.jsonl")[0])


def test_the_reference_is_not_run_when_the_kl_weight_is_0(pretrained_run):
  config = _config(pretrained_run, kl_coef=0.0)
  init = runs.start_from(config, pretrained_run.parent / "unused_rl_workdir")
  model_cfg = config_lib.validate(config)
  policy_ = experiment.make_policy(config, model_cfg, init.params, jax.random.key(0))
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  records = experiment.prompt_records("world", 0, "train")[:8]
  own = rewards.Rewards({"variety": _variety}, {"variety": 1.0})
  with jax.set_mesh(mesh):
    source = experiment.rollout_source(config, init.tokenizer, policy_, init.params, own, mesh,
                                       rules, records)
    batch = source.next_for(init.params)
  assert source.ref_logps_fn is None  # no reference function, no reference params placed
  assert "ref_logps" not in batch and set(batch) == {"tokens", "valid", "loss_mask",
                                                     "old_logps", "advantages"}
  assert "rollout/kl_ref" not in source.last_metrics
  config.rl.kl_coef = 0.1
  calls = []
  with jax.set_mesh(mesh):
    source = experiment.rollout_source(config, init.tokenizer, policy_, init.params, own, mesh,
                                       rules, records)
    reference = source.ref_logps_fn
    source.ref_logps_fn = lambda frozen, b: calls.append(1) or reference(frozen, b)
    batch = source.next_for(init.params)
  assert "ref_logps" in batch and len(calls) == 1  # one chunk of 16 rows
  np.testing.assert_allclose(batch["ref_logps"], batch["old_logps"], atol=1e-5)


def test_ppo_trains_a_value_head(pretrained_run, tmp_path):
  own = rewards.Rewards({"variety": _variety}, {"variety": 1.0})
  config = _config(pretrained_run, steps=2, advantage="gae", value_coef=0.5, kl_coef=0.05,
                   kl_in_reward=True, epochs=2, minibatches=2)
  state = experiment.run(config, tmp_path / "ppo", rewards=own)
  assert set(state["params"]) == {"backbone", "score"}
  train = [m for m in read_metrics(tmp_path / "ppo") if "train/loss" in m]
  assert len(train) == 2
  for m in train:  # the value loss is in the objective, weighted by value_coef (token means)
    assert m["train/loss"] == pytest.approx(
        m["train/policy_loss"] + 0.5 * m["train/value_loss"], rel=1e-5, abs=1e-7), m
  assert "train/kl" not in train[0]  # the KL is in the reward, not the loss
  run = runs.load_run(tmp_path / "ppo")  # a PPO run loads as its policy LM
  assert isinstance(run.model, Transformer) and "score" not in run.params


def test_grpo_lora_cli_logs_rollout_and_eval_metrics(pretrained_run, tmp_path):
  workdir = tmp_path / "grpo"
  done = run_script("rl.py", "--config=configs/rl/grpo_tiny.py:steps=2", f"--workdir={workdir}",
                    f"--config.init.checkpoint={pretrained_run}", "--config.lora.rank=4",
                    "--config.rl.kl_coef=0.05", "--config.rl.rewards.format=0.5", *SMALL)
  assert done.returncode == 0, done.stderr
  assert "sample acc" in done.stdout
  metrics = read_metrics(workdir)
  rollout = next(m for m in metrics if "rollout/reward_mean" in m)
  assert {"rollout/accuracy", "rollout/pass@4", "rollout/reward_format",
          "rollout/response_length", "rollout/truncated_fraction", "rollout/dropped_groups",
          "rollout/logprob_diff", "rollout/kl_ref"} <= set(rollout)
  assert "time/sample_seconds" in read_metrics(workdir, "perf.jsonl")[0]
  train = next(m for m in metrics if "train/loss" in m)
  assert {"train/kl", "train/entropy", "train/clip_fraction", "train/ratio"} <= set(train)
  evals = next(m for m in metrics if "eval/qa_accuracy" in m)
  assert {"eval/pass@2", "eval/format", "eval/sample_accuracy"} <= set(evals)
  assert runs.load_run(workdir).params.keys() == runs.load_run(pretrained_run).params.keys()


def test_rlhf_cli_logs_reward_model_score_and_accuracy(pretrained_run, reward_run, tmp_path):
  rm = reward_run
  workdir = tmp_path / "rlhf"
  done = run_script("rl.py", "--config=configs/rl/rlhf_tiny.py:steps=2", f"--workdir={workdir}",
                    f"--config.init.checkpoint={pretrained_run}",
                    f"--config.rl.reward_model={rm}", *SMALL)
  assert done.returncode == 0, done.stderr
  metrics = read_metrics(workdir)
  rollout = next(m for m in metrics if "rollout/reward_mean" in m)
  assert rollout["rollout/reward_mean"] == pytest.approx(rollout["rollout/reward_reward_model"])
  assert "rollout/accuracy" in rollout  # verifiable accuracy, logged beside the learned reward
  evals = [m for m in metrics if "eval/reward_model_score" in m]
  assert [m["step"] for m in evals] == [0, 2] and "eval/qa_accuracy" in evals[0]
  assert "RL report" in done.stdout
  summary = json.loads((workdir / "rl_report.json").read_text())
  assert set(summary["eval"]) >= {"eval/reward_model_score", "eval/qa_accuracy"}
  refused = run_script("rl.py", "--config=configs/rl/rlhf_tiny.py:steps=1",
                       f"--workdir={tmp_path / 'x'}", f"--config.init.checkpoint={pretrained_run}",
                       f"--config.rl.reward_model={pretrained_run}", *SMALL)
  assert refused.returncode == 2 and "is not a reward-model run" in refused.stderr


@pytest.mark.parametrize("overrides,message", [
    ({"train.batch_size": 10}, "multiple of config.rl.group_size"),
    ({"rl.advantage": "gae"}, "value_coef"),
    ({"rl.kl_in_reward": True}, "kl_in_reward"),
    ({"rl.aggregation": "sum"}, "config.rl.aggregation"),
    ({"rl.temperature": 0.0}, "config.rl.temperature"),
    ({"rl.dual_clip": 0.5}, "dual_clip"),
    ({"rl.rewards.reward_model": 1.0}, "config.rl.reward_model"),
    ({"rl.max_new_tokens": 500}, "config.rl.max_new_tokens"),
])
def test_config_errors_name_the_field(overrides, message):
  c = experiment.default_config("tiny")
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    node = c
    for part in section.split("."):
      node = node[part]
    node[name] = value
  with pytest.raises(ConfigError, match=message):
    experiment.validate_fields(c)
