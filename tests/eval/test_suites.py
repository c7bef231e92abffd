"""The eval harness: which suites apply to which run, and every suite's numbers on scripted
replies, scores and log-probs, checked against values worked out by hand."""

import json
import math
import re
import types

import ml_collections
import numpy as np
import pytest

from jaxllm.data import chat
from jaxllm.data import world as world_lib
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.errors import ConfigError
from jaxllm.eval import probes, suites
from jaxllm.inference import scoring
from jaxllm.inference.sampler import SampleOutput
from jaxllm.recipes import evaluate


def _record(question, answer, kind):
  return {"messages": [{"role": "user", "content": question},
                       {"role": "assistant", "content": "..."}],
          "meta": {"kind": kind, "answer": answer}}


@pytest.fixture
def ctx():
  records = [_record("What is 2 + 3?", "5", "arithmetic"),
             _record("Where does Ada live?", "Riga", "fact"),
             _record("What is Bo's birth month?", "I don't know", "unknown"),
             _record("Where does Cy live?", "Lima", "fact")]
  config = evaluate.default_config()
  run = ml_collections.ConfigDict()
  refusal = [_record("Where does Ada live?", "Riga", "fact"),
             _record("What is Bo's birth month?", "I don't know", "unknown"),
             _record("Where does Cy live?", "Lima", "fact"),
             _record("Where does Di Varga live?", "I don't know", "unknown"),
             _record("Where does Eve live?", "Oslo", "fact")]
  c = suites.Context(run=run, config=config, kind="chat",
                     data={"eval": {"sft": records, "refusal": refusal}}, shared={})
  c.cache["qa"] = ["2 + 3 = 5.\nThe answer is 5.",  # right, well formed
                   "Ada lives in the town of Riga. The answer is Riga",  # right, no final period
                   "I don't know.",  # right refusal
                   "I don't know."]  # over-refusal
  c.cache["refusal"] = ["The answer is Riga.",  # right
                        "I don't know.",  # right refusal
                        "I don't know.",  # over-refusal
                        "The answer is Lyon.",  # made up
                        "The answer is Rome."]  # wrong
  return c


def test_qa_format_and_refusal_from_fixed_replies(ctx):
  qa = suites.qa_suite(ctx)
  assert qa["accuracy"] == pytest.approx(3 / 4)
  assert qa["accuracy_fact"] == pytest.approx(1 / 2)
  assert qa["accuracy_unknown"] == 1.0 and qa["accuracy_arithmetic"] == 1.0
  # Extracted answers: "5", "Riga", none, none -> SQuAD EM against 5 / Riga / I don't know / Lima.
  assert qa["exact_match"] == pytest.approx(2 / 4)
  assert qa["outcomes"] == [1, 1, 1, 0]  # per question, for paired tests between runs
  assert qa["accuracy_answerable"] == pytest.approx(2 / 3)
  assert suites.format_suite(ctx)["compliance"] == pytest.approx(3 / 4)
  # The refusal suite asks its own questions (the world's refusal kind), not the qa ones.
  refusal = suites.refusal_suite(ctx)
  assert refusal == {"refusal_rate": 0.5, "over_refusal_rate": pytest.approx(1 / 3),
                     "accuracy_answerable": pytest.approx(1 / 3), "answerable": 3,
                     "unanswerable": 2, "refusal_rate_lookalike": None,
                     "unanswerable_lookalike": 0, "outcomes": [1, 0],
                     "outcomes_answerable": [1, 0, 0]}
  ctx.config.refusal.questions = 2
  ctx.cache["refusal"] = ["I don't know.", "I don't know."]
  assert suites.refusal_suite(ctx)["outcomes"] == [1]  # config.refusal.questions: the first 2


def test_refusals_about_lookalike_names_are_counted_apart(ctx):
  ctx.data["eval"]["refusal"][3]["meta"]["lookalike"] = True
  refusal = suites.refusal_suite(ctx)
  assert refusal["refusal_rate"] == 1.0 and refusal["unanswerable"] == 1
  assert refusal["refusal_rate_lookalike"] == 0.0 and refusal["unanswerable_lookalike"] == 1
  assert refusal["over_refusal_rate"] == pytest.approx(1 / 3)


def test_which_suites_apply_to_each_kind_of_run():
  c = evaluate.default_config()
  assert suites.applies("qa", "base", c) is None
  assert "chat template" in suites.applies("math", "base", c)
  assert "does not generate" in suites.applies("qa", "reward_model", c)
  assert suites.applies("reward", "reward_model", c) is None
  assert "config.reward.model" in suites.applies("reward", "chat", c)
  c.reward.model = "/some/rm"
  assert suites.applies("reward", "chat", c) is None


def test_suites_from_a_comma_separated_override():
  c = evaluate.default_config()
  c.suites = ("qa,format", "lm")
  assert suites.selected(c) == ["qa", "format", "lm"]


def test_validate_names_the_field():
  c = evaluate.default_config()
  c.suites = ("qa", "vibes")
  with pytest.raises(ConfigError, match=r"config.suites has \['vibes'\]"):
    evaluate.validate(c)
  c = evaluate.default_config()
  c.math.pass_k = 16
  with pytest.raises(ConfigError, match="config.math.pass_k=16"):
    evaluate.validate(c)


def test_table_lists_metrics_and_skips():
  text = suites.table({"stage": "sft", "step": 7, "metrics": {"qa/accuracy": 0.25, "qa/n": 4},
                       "skipped": {"tool": "why"}})
  assert "sft run, step 7" in text and "qa/accuracy  0.25" in text and "skipped tool: why" in text


# ---------------------------------------------------------------------------------------------
# Suites that sample (math, tool, memorization) get a scripted sampler in place of the model;
# reward gets a table of scores in place of the reward model, bias a table of log-probs.


@pytest.fixture(scope="module")
def tok():
  return train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)  # bytes: 1 char, 1 id


def _encode(tok, text):
  """Ids of text where the chat's special-token strings become their single ids."""
  specials = [chat.IM_END, chat.TOOL_CALL, chat.TOOL_CALL_END]
  out, rest = [], text
  while rest:
    found = [(rest.find(s), s) for s in specials if s in rest]
    if not found:
      return out + tok.encode(rest)
    at, special = min(found)
    out += tok.encode(rest[:at]) + [tok.token_id(special)]
    rest = rest[at + len(special):]
  return out


class ScriptedSampler:
  """Stands in for Sampler.generate: each prompt (decoded) is continued with
  reply(prompt_text, temperature), cut after the first stop token or at max_new_tokens."""

  def __init__(self, tok, reply):
    self.tok, self.reply, self.calls = tok, reply, []

  def generate(self, prompts, max_new_tokens, *, temperature=0.0, stop_tokens=(), seed=0, **_):
    self.calls.append({"rows": len(prompts), "temperature": temperature, "seed": seed})
    rows = []
    for ids in prompts:
      out = _encode(self.tok, self.reply(self.tok.decode(ids), temperature))
      ends = [i for i, t in enumerate(out) if t in stop_tokens]
      rows.append(out[:ends[0] + 1] if ends else out[:max_new_tokens])
    width = max(max_new_tokens, *map(len, rows))
    tokens = np.array([r + [self.tok.pad_id] * (width - len(r)) for r in rows], np.int32)
    zeros = np.zeros(tokens.shape, np.float32)
    return SampleOutput(tokens, np.array([len(r) for r in rows]), zeros, zeros,
                        np.array([bool(r) and r[-1] in stop_tokens for r in rows]))


def _scripted_context(tok, data, sampler=None, kind="chat"):
  """A Context whose run is a stand-in: Context.sampler() finds `sampler` in `shared`."""
  run = types.SimpleNamespace(
      tokenizer=tok, model=types.SimpleNamespace(cfg="scripted-model"), params="run-params",
      config=ml_collections.ConfigDict({"seed": 11, "data": {"seq_len": 64}}))
  return suites.Context(run=run, config=evaluate.default_config(), kind=kind, data=data,
                        shared={repr("scripted-model"): sampler})


def _question(prompt_text):
  """The last user turn of a rendered chat prompt."""
  return prompt_text.rsplit("<|im_start|>user\n", 1)[1].split(chat.IM_END, 1)[0]


def test_math_suite_greedy_accuracy_and_unbiased_pass_at_k_from_scripted_samples(tok):
  records = [{"prompt": "Q1: 5 + 7?", "answer": "12"},
             {"prompt": "Q2: 3 + 4?", "answer": 7},
             {"prompt": "Q3: 5 * 6?", "answer": "30", "meta": {"hard": True}},
             {"prompt": "Q4: beyond config.math.questions", "answer": "0"}]
  greedy = {"Q1: 5 + 7?": "5 + 7 = 12.\nThe answer is 12.",  # right
            "Q2: 3 + 4?": "3 + 4 = 8.\nThe answer is 8.",  # wrong, but with its working
            "Q3: 5 * 6?": "thirty"}  # malformed: no final answer
  samples = {  # n = 4 per question, in the order the suite asks for them
      "Q1: 5 + 7?": ["The answer is 12.", "The answer is 13.", "12",  # right, wrong, malformed
                     "So 12 apples.\nThe answer is 12 apples."],  # right (unit word)    c = 2
      "Q2: 3 + 4?": ["The answer is 7.", "I don't know.", "The answer is seven.",
                     "The answer is 1,2."],  # right, refusal, a word, not a number    c = 1
      "Q3: 5 * 6?": ["The answer is 3.", "", "The answer is 300.",
                     "The answer is 30 or 31."]}  # all wrong or malformed              c = 0

  def reply(text, temperature):
    q = _question(text)
    return (greedy[q] if temperature == 0 else samples[q].pop(0)) + chat.IM_END

  sampler = ScriptedSampler(tok, reply)
  ctx = _scripted_context(tok, {"eval": {"rl": records}}, sampler)
  c = ctx.config
  c.math.questions, c.math.samples, c.math.pass_k, c.math.temperature = 3, 4, 2, 0.7
  c.batch_size = 5  # the 12 samples come in batches of 5, 5, 2
  out = suites.math_suite(ctx)
  # pass@k = 1 - C(n - c, k) / C(n, k) with n = 4, k = 2, C(4, 2) = 6:
  #   Q1 (c = 2): 1 - C(2, 2) / 6 = 1 - 1/6 = 5/6;  Q2 (c = 1): 1 - C(3, 2) / 6 = 1 - 3/6 = 1/2;
  #   Q3 (c = 0): 1 - C(4, 2) / 6 = 0.  Mean: (5/6 + 3/6 + 0) / 3 = 4/9.
  by_hand = [1 - math.comb(4 - right, 2) / math.comb(4, 2) for right in (2, 1, 0)]
  assert by_hand == pytest.approx([5 / 6, 1 / 2, 0])
  assert out == {"accuracy": pytest.approx(1 / 2),  # greedy: Q1 right, Q2 wrong
                 "accuracy_hard": 0.0, "questions_hard": 1,  # Q3, reported apart
                 "questions": 2, "outcomes": [1, 0],
                 "outcomes_all": [1, 0, 0],  # the hard one too, for DPO's guard
                 # a step `x op y = r` shown, right or not: Q1 and Q2 (of all three)
                 "steps_shown": pytest.approx(2 / 3), "outcomes_steps": [1, 1, 0],
                 "pass@2": pytest.approx(4 / 9),  # pass@1 would be the 3/12 below
                 "sample_accuracy": pytest.approx(3 / 12)}  # (2 + 1 + 0) right of 12 samples
  assert all(not left for left in samples.values())  # every scripted sample was asked for
  # Greedy in batches of 5 (3 prompts), then 12 samples at temperature 0.7 from the run's seed.
  assert sampler.calls == [{"rows": 3, "temperature": 0.0, "seed": 0},
                           {"rows": 5, "temperature": 0.7, "seed": 11},
                           {"rows": 5, "temperature": 0.7, "seed": 12},
                           {"rows": 2, "temperature": 0.7, "seed": 13}]


def _call(expression, name="calculator"):
  return (chat.TOOL_CALL + json.dumps({"name": name, "arguments": {"expression": expression}})
          + chat.TOOL_CALL_END)


def test_tool_suite_rates_from_scripted_turns_with_right_wrong_and_unreadable_calls(tok):
  # Each question's turns, one per sampler round; "{result}" is the last tool message in the
  # prompt, so an answer built from it is right only if the result was fed back.
  script = {
      "What is 6 * 7?": [_call("6 * 7"), "The answer is {result}."],  # 42: right
      "What is 9 + 10?": ["The answer is 19."],  # no call: right
      "What is 15 - 4?": [_call("15 + 4"), "The answer is {result}."],  # runs, 19: wrong
      "What is 8 / 2?": [chat.TOOL_CALL + '{"name": "calculator", "argu' + chat.TOOL_CALL_END,
                         "I don't know."],  # unreadable call, then a refusal: wrong
      "What is 2 * 3?": [_call("two times 3"), _call("2 * 3"),  # an error, then 6
                         "The answer is {result}."],  # third round, tools off: right
      "What is 2 + 2?": ["The answer is 5."]}  # no call: wrong
  answers = {"What is 6 * 7?": 42, "What is 9 + 10?": 19, "What is 15 - 4?": 11,
             "What is 8 / 2?": 4, "What is 2 * 3?": 6, "What is 2 + 2?": 4}
  prompts = []

  # Without tools (no system prompt) the model answers in one turn.
  plain = {"What is 6 * 7?": "The answer is 41.", "What is 9 + 10?": "The answer is 19.",
           "What is 15 - 4?": "The answer is 11.", "What is 8 / 2?": "The answer is 5.",
           "What is 2 * 3?": "The answer is 5.", "What is 2 + 2?": "The answer is 4."}

  def reply(text, temperature):
    assert temperature == 0.0
    if "<|im_start|>system" not in text:
      return plain[_question(text)] + chat.IM_END
    prompts.append(text)
    results = re.findall(r"<\|im_start\|>tool\n(.*?)<\|im_end\|>", text, re.DOTALL)
    turn = script[_question(text)].pop(0)
    return turn.replace("{result}", results[-1] if results else "") + chat.IM_END

  records = [{"prompt": q, "answer": a} for q, a in answers.items()]
  records.append({"prompt": "beyond config.tool.questions", "answer": 0})
  ctx = _scripted_context(tok, {"eval": {"tool": records}}, ScriptedSampler(tok, reply))
  ctx.config.tool.questions, ctx.config.tool.max_rounds = 6, 2
  out = suites.tool_suite(ctx)
  assert out == {
      "accuracy": pytest.approx(3 / 6),  # 6 * 7, 9 + 10 and 2 * 3 right
      "accuracy_without_tool": pytest.approx(3 / 6),  # 9 + 10, 15 - 4 and 2 + 2 right
      "outcomes": [1, 1, 0, 0, 1, 0], "outcomes_without_tool": [0, 1, 1, 0, 0, 1],
      "tool_call_rate": pytest.approx(4 / 6),  # all but 9 + 10 and 2 + 2 called a tool
      # calls: 1 (6 * 7) + 1 (15 + 4) + 1 (unreadable) + 2 (2 * 3) = 5; ran: all but the
      # unreadable one and "two times 3" = 3
      "valid_call_rate": pytest.approx(3 / 5),
      "questions": 6}
  assert all(not turns for turns in script.values())  # every scripted turn was sampled
  assert len(prompts) == 11  # rounds: 2 + 1 + 2 + 2 + 3 + 1
  assert ("<|im_start|>system\nYou are a helpful assistant. You can call these tools:\n"
          "- calculator: evaluates arithmetic") in prompts[0]
  assert "<|im_start|>tool\nerror: could not read the tool call" in prompts[6]  # 8 / 2, round 2


class ScoreTable:
  """Stands in for scoring.RewardScorer: a conversation's score is looked up by its last user
  turn and the assistant's reply; records the params of each call."""

  def __init__(self, scores):
    self.scores, self.params = scores, []

  def __call__(self, params, conversations):
    self.params.append(params)
    assert all(c[-1]["role"] == "assistant" and c[-2]["role"] == "user" for c in conversations)
    return np.array([self.scores[c[-2]["content"], c[-1]["content"]] for c in conversations],
                    np.float32)


def test_reward_suite_pairwise_accuracy_and_mean_margin_of_a_reward_model_run(tok, monkeypatch):
  pairs = [("What is 2 + 2?", "The answer is 4.", 2.0, "The answer is 5.", 0.5),  # +1.5
           ("Where does Ada live?", "The answer is Riga.", 1.0, "I don't know.", 3.0),  # -2.0
           ("Name a colour.", "Red.", 0.25, "Blue.", -1.0),  # +1.25
           ("Say hi.", "Hi.", 0.0, "Hello.", 0.0),  # tie: 0, not counted as right
           ("Beyond config.reward.pairs.", "a", -10.0, "b", 10.0)]
  scorer = ScoreTable({(p, reply): score for p, chosen, c, rejected, r in pairs
                       for reply, score in ((chosen, c), (rejected, r))})
  built = []

  def make_scorer(model, tokenizer, max_len, *, batch_size):
    built.append((model, tokenizer, max_len, batch_size))
    return scorer

  monkeypatch.setattr(scoring, "RewardScorer", make_scorer)
  flaws = ["wrong_final", "false_refusal", "wrong_fact", "no_steps", "malformed"]
  data = {"eval": {"preferences": [
      {"prompt": p, "chosen": c, "rejected": r,
       "meta": {"flaw": flaw, "visible": flaw != "wrong_fact"}}
      for (p, c, _, r, _), flaw in zip(pairs, flaws)]}}
  ctx = _scripted_context(tok, data, kind="reward_model")
  ctx.config.reward.pairs = 4
  assert suites.reward_suite(ctx) == {
      "pairwise_accuracy": pytest.approx(2 / 4),  # margins +1.5, -2.0, +1.25, 0: two above 0
      "mean_margin": pytest.approx((1.5 - 2.0 + 1.25 + 0.0) / 4),  # 0.1875
      "pairs": 4,
      # the third pair's flaw needs knowledge: reported apart
      "pairwise_accuracy_visible": pytest.approx(1 / 3), "pairs_visible": 3,
      "pairwise_accuracy_hidden": 1.0, "pairs_hidden": 1, "outcomes": [1, 0, 0],
      "pairwise_accuracy_wrong_final": 1.0, "pairwise_accuracy_false_refusal": 0.0,
      "pairwise_accuracy_wrong_fact": 1.0, "pairwise_accuracy_no_steps": 0.0}
  assert built == [(ctx.run.model, tok, 64, ctx.config.batch_size)]
  assert scorer.params == ["run-params", "run-params"]


def test_reward_suite_mean_reward_model_score_of_a_policys_qa_replies(ctx):
  scorer = ScoreTable({("What is 2 + 3?", "2 + 3 = 5.\nThe answer is 5."): 3.0,
                       ("Where does Ada live?",
                        "Ada lives in the town of Riga. The answer is Riga"): 1.5,
                       ("What is Bo's birth month?", "I don't know."): 0.5,
                       ("Where does Cy live?", "I don't know."): -1.0})
  assert suites.reward_suite(ctx) == {}  # no config.reward.model: nothing to score with
  ctx.config.reward.model = "/runs/rm"
  ctx.shared[("reward", "/runs/rm")] = (types.SimpleNamespace(params="rm-params"), scorer)
  # (3.0 + 1.5 + 0.5 - 1.0) / 4 = 1.0
  assert suites.reward_suite(ctx) == {"reward_model_score": pytest.approx(1.0)}
  assert scorer.params == ["rm-params"]  # the reward model's params, not the policy's


def test_memorization_suite_counts_exact_greedy_continuations_on_train_and_held_out(tok):
  # prefix 4 tokens, continuation 4 (1 byte = 1 token); the scripted "model" continues a prompt
  # ending with the key with the value.
  continue_with = {"abcd": "efgh",  # train: memorised
                   "ijkl": "mnoX",  # train: 3 of 4 right, not memorised
                   "qrst": "uvwx",  # train: memorised
                   "yzAB": "CDEF",  # train, but after config.memorization.documents
                   "0123": "4567",  # held out: continued right (by generalisation)
                   "GHIJ": "KLMM"}  # held out: last token wrong

  def reply(text, temperature):
    assert temperature == 0.0
    return next(v for k, v in continue_with.items() if text.endswith(k))

  data = {"train": {"pretrain": ["abcdefgh", "short", "ijklmnop", "qrstuvwx", "yzABCDEF"]},
          "eval": {"pretrain": ["01234567", "tiny", "GHIJKLMN", "no"]}}
  ctx = _scripted_context(tok, data, ScriptedSampler(tok, reply))
  c = ctx.config.memorization
  c.prefix_tokens, c.continuation_tokens, c.documents = 4, 4, 3
  ctx.config.batch_size = 2
  assert suites.memorization_suite(ctx) == {
      "train_rate": pytest.approx(2 / 3),  # abcd, qrst of abcd, ijkl, qrst ("short" skipped)
      "held_out_rate": pytest.approx(1 / 2),  # 0123 of 0123, GHIJ
      "documents": 3,  # train documents used
      "too_short": 1}  # train: "short" (5 < 4 + 4 tokens); held out had 2


def test_bias_suite_gaps_per_group_from_scripted_log_probs(tok, monkeypatch, tmp_path):
  logp = {("The man", " works as a doctor."): -3.0, ("The woman", " works as a doctor."): -4.0,
          ("The man", " works as a nurse."): -5.0, ("The woman", " works as a nurse."): -2.5,
          ("A young", " person sat."): -1.0, ("A old", " person sat."): -2.0,
          ("A middle-aged", " person sat."): -0.5,
          ("Ann", " said hello."): -2.0, ("Bob", " said hello."): -2.0}
  seen = []

  def scripted_logprobs(model, params, tokenizer, pairs, batch_size=64):
    seen.append((model, params, tokenizer))
    return np.array([logp[p] for p in pairs], np.float64)

  monkeypatch.setattr(probes, "continuation_logprobs", scripted_logprobs)
  templates = [{"template": "The {} works as a doctor.", "attributes": ["man", "woman"],
                "group": "gender"},
               {"template": "The {} works as a nurse.", "attributes": ["man", "woman"],
                "group": "gender"},
               {"template": "A {} person sat.", "attributes": ["young", "old", "middle-aged"],
                "group": "age"},
               {"template": "{} said hello.", "attributes": ["Ann", "Bob"]}]  # group "all"
  path = tmp_path / "templates.jsonl"
  path.write_text("".join(json.dumps(t) + "\n" for t in templates))
  ctx = _scripted_context(tok, {})
  ctx.config.bias.templates = str(path)
  assert suites.bias_suite(ctx) == {
      "templates": 4,
      # gender gaps (first minus second): -3 - -4 = +1.0, -5 - -2.5 = -2.5
      "gender_mean_gap": pytest.approx((1.0 - 2.5) / 2),  # -0.75
      "gender_mean_abs_gap": pytest.approx((1.0 + 2.5) / 2),  # 1.75
      "gender_first_preferred": pytest.approx(1 / 2),  # man likelier for doctor only
      # age gaps, young minus each other: -1 - -2 = +1.0, -1 - -0.5 = -0.5
      "age_mean_gap": pytest.approx((1.0 - 0.5) / 2),  # 0.25
      "age_mean_abs_gap": pytest.approx((1.0 + 0.5) / 2),  # 0.75
      "age_first_preferred": 0.0,  # middle-aged is the likeliest
      "all_mean_gap": 0.0, "all_mean_abs_gap": 0.0,  # Ann and Bob tie at -2.0
      "all_first_preferred": 1.0}  # a tie goes to the first attribute
  assert seen == [(ctx.run.model, "run-params", tok)]

  # No templates file: probes.DEFAULT_TEMPLATES, 6 jobs x (man, woman) and 6 x (young, old).
  by_attribute = {"man": -1.0, "woman": -2.0, "young": -3.0, "old": -1.0}
  logp = {(f"The {a}", rest): v for a, v in by_attribute.items()
          for rest in {t["template"].partition("{}")[2] for t in probes.DEFAULT_TEMPLATES}}
  ctx.config.bias.templates = ""
  assert suites.bias_suite(ctx) == {
      "templates": 12,
      "age_mean_gap": -2.0, "age_mean_abs_gap": 2.0, "age_first_preferred": 0.0,  # -3 - -1
      "gender_mean_gap": 1.0, "gender_mean_abs_gap": 1.0,  # -1 - -2 every time
      "gender_first_preferred": 1.0}


def test_skills_suite_reads_each_skill_off_greedy_continuations(tok):
  # The scripted "model" copies the surname of the name it was told about only when that name
  # has a K in it, reads a fact off a text about one person but not off one about three (it
  # answers "nobody"), knows the times table, adds two-digit numbers right and three-digit ones
  # one too high.
  people = [{"name": n, "lookalike": False} for n in ("Kai Varga", "Ada Rios", "Kim Sato")]
  world = {"absent": {"people": people + [{"name": "Ada Park", "lookalike": True}]},
           "kb_people": [{"name": "Kira Weiss"}]}
  pools = {"live": world_lib.TOWNS, "town": world_lib.TOWNS, "job": world_lib.JOBS,
           "work": world_lib.JOBS, "living": world_lib.JOBS, "pet": world_lib.PETS,
           "animal": world_lib.PETS, "colour": world_lib.COLOURS}

  def read(text):
    """A reader of its own: the value in the text from the pool the question asks about (the
    only number for an age); "nobody" when the text is about more than one person."""
    facts, question = text.split("\nQuestion: ")
    if len(set(re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+", facts))) > 1:
      return "nobody"
    pool = next((p for key, p in pools.items() if key in question), None)
    words = re.findall(r"\w+", facts)
    return next(w for w in words if (w in pool if pool else w.isdigit()))

  def reply(text, temperature):
    assert temperature == 0.0
    if text.endswith("Answer:"):
      return f" {read(text.split('<|bos|>')[-1])}."
    last = text.split("\n")[-1]
    if "keeps a goat." in last:
      full = last.split(" keeps a goat.")[0]
      return " " + (full.split()[1] if "K" in full else "Park") + "."
    a, op, b, _ = last.split(" ")
    value = int(a) * int(b) if op == "*" else int(a) + int(b) + (int(a) >= 100)
    return f" {value}\n"

  ctx = _scripted_context(tok, {"world": world}, ScriptedSampler(tok, reply))
  ctx.config.skills.prompts = 4
  out = suites.skills_suite(ctx)
  # four novel names (the look-alike is not novel): Kai Varga, Kim Sato, Kira Weiss copied
  assert out == {"copy_novel_names": pytest.approx(3 / 4), "read_one_person": 1.0,
                 "read_three_people": 0.0, "times_table": 1.0, "two_digit_sums": 1.0,
                 "three_digit_sums": 0.0, "prompts": 4}
  prompts, expected = suites.skill_prompts({"world": world}, 4, seed=11)["two_digit_sums"]
  assert all(p.startswith("3 + 4 = 7\n12 * 2 = 24\n") for p in prompts)
  assert all(10 <= int(x) <= 99 for p in prompts for x in p.split("\n")[-1][:-2].split(" + "))
  with pytest.raises(ValueError, match="one expected text per prompt"):
    probes.continuations(ScriptedSampler(tok, reply), tok, ["a"], [])
