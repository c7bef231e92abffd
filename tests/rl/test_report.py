"""The RL report: first/last held-out numbers, rollout windows, the reward-hacking warning."""

from jaxllm.rl import report


def _lines(rm_scores, accuracies, rollout_rm, rollout_acc):
  lines = [{"step": 10 * i, "eval/reward_model_score": s, "eval/qa_accuracy": a,
            "eval/questions": 200.0} for i, (s, a) in enumerate(zip(rm_scores, accuracies))]
  lines += [{"step": i + 1, "rollout/reward_mean": r, "rollout/reward_reward_model": r,
             "rollout/accuracy": a, "rollout/samples": 64.0}
            for i, (r, a) in enumerate(zip(rollout_rm, rollout_acc))]
  return lines


def test_reward_up_accuracy_down_is_called_out():
  out = report.summarize(_lines([0.1, 0.5, 0.9], [0.3, 0.2, 0.1], [0.0] * 4 + [1.0] * 4,
                                [0.5] * 4 + [0.2] * 4), window=2)
  assert out["eval"]["eval/reward_model_score"] == [0.1, 0.9]
  assert out["eval_steps"] == [0, 20]
  assert out["rollout"]["rollout/accuracy"] == [0.5, 0.2]
  assert len(out["warnings"]) == 2 and all("reward hacking" in w for w in out["warnings"])
  assert "WARNING: reward hacking" in report.describe(out)


def test_no_warning_when_accuracy_rises_with_the_reward():
  out = report.summarize(_lines([0.1, 0.9], [0.1, 0.3], [0.0, 1.0], [0.1, 0.4]))
  assert out["warnings"] == []
  assert out["eval"]["eval/qa_accuracy"] == [0.1, 0.3]


def test_a_drop_within_the_noise_is_not_called_out():
  # 0.045 -> 0.040 on 200 questions is one question; one standard error is about 0.02.
  out = report.summarize(_lines([1.3, 1.6], [0.045, 0.040], [1.0, 2.0], [0.03, 0.03]))
  assert out["warnings"] == []
  out = report.summarize(_lines([1.3, 1.6], [0.045, 0.010], [1.0, 2.0], [0.03, 0.03]))
  assert len(out["warnings"]) == 1
