"""On-policy pairs: right replies paired against wrong ones by the verifier, the reference reply
when no sample is right, nothing when every sample is right."""

import pytest

from jaxllm.eval import qa
from jaxllm.rl import policy_pairs

QUESTIONS = [
    {"messages": [{"role": "user", "content": "2 + 2?"},
                  {"role": "assistant", "content": "2 + 2 = 4.\nThe answer is 4."}],
     "answer": "4", "meta": {"kind": "arithmetic"}},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3 * 3?"},
                  {"role": "assistant", "content": "The answer is 9."}], "answer": "9"},
    {"prompt": "5 - 1?", "answer": "4"},
]
REPLIES = {  # the scripted policy's samples per question
    "2 + 2?": ["The answer is 4.", "The answer is 5.", "The answer is 4.", "no idea"],
    "3 * 3?": ["The answer is 6.", "The answer is 8.", "The answer is 6.", "6"],
    "5 - 1?": ["The answer is 4."] * 4,
}


@pytest.fixture
def scripted(monkeypatch):
  calls = {}

  def reply_to(sampler, tokenizer, conversations, **kw):
    calls.update(kw)
    seen = {}
    out = []
    for messages in conversations:
      q = messages[-1]["content"]
      out.append(REPLIES[q][seen.get(q, 0)])
      seen[q] = seen.get(q, 0) + 1
    return out
  monkeypatch.setattr(qa, "reply_to", reply_to)
  return calls


def test_pairs_right_against_wrong_with_the_reference_as_fallback(scripted):
  questions = [policy_pairs.as_question(q) for q in QUESTIONS]
  pairs, counts = policy_pairs.sample_pairs(None, None, questions, samples=4, temperature=0.7,
                                            seed=1)
  assert scripted["temperature"] == 0.7 and scripted["seed"] == 1
  assert counts == {"questions": 3, "samples": 12, "right_samples": 6, "all_right": 1,
                    "none_right": 1, "gold_chosen": 1, "pairs": 2, "sample_accuracy": 0.5}
  first, second = pairs
  assert first["prompt"] == QUESTIONS[0]["messages"][:1]
  assert first["chosen"] == "The answer is 4." and first["rejected"] in ("The answer is 5.",
                                                                           "no idea")
  assert first["meta"] == {"answer": "4", "kind": "arithmetic", "chosen_from": "sample"}
  assert second["prompt"] == QUESTIONS[1]["messages"][:2]  # the system prompt stays
  assert second["chosen"] == "The answer is 9." and second["meta"]["chosen_from"] == "reference"
  without, counts = policy_pairs.sample_pairs(None, None, questions, samples=4,
                                              gold_fallback=False)
  assert len(without) == 1 and counts["gold_chosen"] == 0
