"""Rewards for RL: verifiable checks of a reply and the learned reward model, composable.

A reward function takes the rollout's prompt records and replies and returns one float per reply:
`fn(records, replies) -> float32 [N]`. A record is an RL prompt ({"prompt" or "messages",
"answer", "tool_result"?, ...}); a reply is the decoded completion (special tokens written out,
the final <|im_end|> removed).

- `correct`: the final answer equals the record's "answer" (jaxllm/data/answers.py: "The
  answer is X." or <answer>X</answer>, numbers by value, "I don't know" matched by a refusal).
- `format`: the reply ends with the required answer line (or tag) and has one final answer.
- `tool`: tool calls are readable, name registered tools and run without error; when the record
  gives "tool_result", some call must return it (and one must be made).
- `reward_model`: a trained reward model's score of (prompt, reply) (RLHF).

`make_reward(weights, ...)` sums the components with weights; `evaluate` also returns each
component, so a run can log a verifiable accuracy next to a learned reward it does not optimise
(a learned reward going up while accuracy goes down is reward hacking).
"""

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxllm.data import answers, chat
from jaxllm.errors import ConfigError
from jaxllm.inference import tools as tools_lib

RewardFn = Callable[[Sequence[dict], Sequence[str]], np.ndarray]
STYLES = answers.STYLES
COMPONENTS = ("correct", "format", "tool", "reward_model")

def tool_use(reply: str, record: Mapping, registry: tools_lib.ToolRegistry) -> float:
  """1.0 when every tool call in the reply is readable and runs without error, and (if the
  record names a "tool_result") one of them returns that result; 0.0 otherwise."""
  try:
    _, calls = chat.parse_assistant(reply)
  except chat.ToolCallError:
    return 0.0
  results = [registry.run(call) for call in calls]
  if any(r.startswith("error:") for r in results):
    return 0.0
  expected = record.get("tool_result")
  if expected is None:
    return 1.0
  return float(any(answers.answers_match(r, str(expected)) for r in results))


def _per_reply(fn: Callable[[str, Mapping], float]) -> RewardFn:
  def reward(records, replies):
    return np.array([fn(reply, record) for record, reply in zip(records, replies)], np.float32)
  return reward


def verifiable(name: str, style: str = "line",
               registry: tools_lib.ToolRegistry | None = None) -> RewardFn:
  """One verifiable component by name: correct, format or tool."""
  if name == "correct":
    return _per_reply(lambda reply, record: answers.score(reply, str(record["answer"]), style))
  if name == "format":
    return _per_reply(lambda reply, record: answers.well_formatted(reply, style))
  if name == "tool":
    registry = registry or tools_lib.default_registry()
    return _per_reply(lambda reply, record: tool_use(reply, record, registry))
  raise ValueError(f"reward {name!r} is not a verifiable one (correct, format, tool).")


def learned(scorer, params) -> RewardFn:
  """The reward model's score (jaxllm/inference/scoring.RewardScorer) of prompt + reply."""
  def reward(records, replies):
    conversations = [chat.prompt_messages(r) + [{"role": "assistant", "content": reply}]
                     for r, reply in zip(records, replies)]
    return np.asarray(scorer(params, conversations), np.float32)
  # A device program whose params may span processes: every process calls it with every reply.
  reward.on_device = True
  return reward


class Rewards:
  """Weighted sum of named components; `evaluate` returns (total [N], {name: values [N]}).

  Components with weight 0 are still computed when listed in `also` (e.g. "correct" in an
  RLHF run: logged, not optimised).
  """

  def __init__(self, components: Mapping[str, RewardFn], weights: Mapping[str, float],
               also: Sequence[str] = ()):
    self.weights = {k: float(w) for k, w in weights.items() if w}
    unknown = sorted(set(self.weights) - set(components))
    if unknown:
      raise ConfigError(f"rewards {unknown} have a weight but no reward function.")
    self.components = dict(components)
    if not self.weights:
      raise ConfigError("every reward weight is 0: set config.rl.rewards.<name> (e.g. "
                        "correct=1.0).")
    self.logged = [k for k in self.components if k in self.weights or k in also]

  @property
  def on_device(self) -> bool:
    """Whether a logged component runs a program on the devices (the reward model), which every
    process must call with the same replies; the others are scored by each process for its own
    share of the replies."""
    return any(getattr(self.components[k], "on_device", False) for k in self.logged)

  def evaluate(self, records: Sequence[dict], replies: Sequence[str]) -> tuple[np.ndarray, dict]:
    parts = {k: np.asarray(self.components[k](records, replies), np.float32)
             for k in self.logged}
    total = sum(w * parts[k] for k, w in self.weights.items())
    return np.asarray(total, np.float32), parts


def make_rewards(weights: Mapping[str, float], *, style: str = "line", scorer=None,
                 scorer_params=None, registry=None, log_accuracy: bool = True) -> Rewards:
  """Rewards from config.rl.rewards weights. The verifiable accuracy ("correct") is logged
  even at weight 0 when `log_accuracy` (the prompts have answers); the reward model is used
  only when weighted."""
  if style not in STYLES:
    raise ConfigError(f"config.rl.answer_style={style!r} is not one of {STYLES}.")
  unknown = sorted(set(weights) - set(COMPONENTS))
  if unknown:
    raise ConfigError(f"config.rl.rewards: {unknown} are not rewards; use {COMPONENTS}.")
  components = {name: verifiable(name, style, registry) for name in ("correct", "format", "tool")}
  if weights.get("reward_model"):
    if scorer is None:
      raise ConfigError("config.rl.rewards.reward_model > 0 needs config.rl.reward_model, a "
                        "reward-model run directory (experiments/reward_model.py).")
    components["reward_model"] = learned(scorer, scorer_params)
  return Rewards(components, weights, also=("correct",) if log_accuracy else ())
