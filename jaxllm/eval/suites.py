"""Evaluation suites over the embedded world, and the harness that runs them on one run.

  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py

Each suite is a function (Context) -> {name: number}; `evaluate` runs the ones in
config.suites that apply to the run (a reward model has only `reward`; a base model is asked in
plain text) and returns {"suites": {suite: results}, "metrics": {"suite/name": number}}. The
config's fields, defaults and checks: jaxllm/recipes/evaluate.py.

- lm: held-out perplexity and bits per byte (jaxllm/eval/perplexity.py) on the world's eval
  pretraining text, or config.lm.texts.
- qa: greedy answers to the world's held-out SFT questions: exact match as the world scores it
  (jaxllm/data/answers.py), plus SQuAD exact match and token F1 of the extracted answer
  (jaxllm/eval/metrics.py), per kind. Chat template for chat models; for base models
  (config.qa.prompt "auto" or "plain") the plain-text worked-problem prompt, few-shot.
- format: instruction compliance, the fraction of those replies whose last line is their one
  final answer ("The answer is X." or "I don't know."), as the system prompt asks.
- refusal: the world's refusal questions (held out, every other one unanswerable): on those the
  world has no answer to, the fraction of replies that say "I don't know." (look-alike names
  apart); on answerable ones, the fraction that refuse anyway (over-refusal) and exact match.
- math: held-out word problems (the RL eval prompts): greedy accuracy (hard templates apart),
  the share of greedy replies that show their working (world.shows_steps), and pass@k with the
  unbiased estimator over config.math.samples samples at config.math.temperature.
- tool: word problems with the calculator tool offered in the system prompt, answered through
  jaxllm/inference/assistant.py (calls run, results fed back): answer accuracy, fraction of
  questions where the model called a tool, fraction of calls that ran.
- rag: knowledge-base questions without and with BM25 retrieval over the world's documents
  (or config.rag.index).
- reward: a reward-model run's pairwise accuracy on held-out preference pairs (true labels); for
  a policy, with config.reward.model set, that reward model's mean score of its qa replies.
- memorization, bias: probes (jaxllm/eval/probes.py).
- skills: plain-text continuations (probes.continuations) of what later stages rely on:
  repeating a name never seen in training ("Ada Varga keeps a goat. Ada" -> " Varga"; absent
  and knowledge-base people), reading a fact about a made-up person off a short text (one
  person; three, where the name has to be matched; world.reading_text), the times table, and
  sums of two-digit and of three-digit numbers.
Replies are shared: qa, format and the reward score read one set of greedy answers.
"""

import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxllm import runs
from jaxllm.data import answers as answers_lib
from jaxllm.data import chat, inputs, readers, world
from jaxllm.errors import ConfigError
from jaxllm.eval import metrics as metrics_lib
from jaxllm.eval import perplexity, probes, qa
from jaxllm.inference import assistant, retrieval, scoring, tools
from jaxllm.inference.sampler import Sampler

SUITES = ("lm", "qa", "format", "refusal", "math", "tool", "rag", "reward", "memorization",
          "bias", "skills")
BASE_SUITES = ("lm", "qa", "memorization", "bias", "skills")  # the others need a chat model


def selected(config) -> list[str]:
  """config.suites as names; "qa,format" (one string, as --config.suites=qa,format gives) too."""
  names = [config.suites] if isinstance(config.suites, str) else list(config.suites)
  chosen = [n.strip() for name in names for n in name.split(",") if n.strip()]
  unknown = [s for s in chosen if s not in SUITES]
  if unknown:
    raise ConfigError(f"config.suites has {unknown}; choose from {SUITES}.")
  return chosen


@dataclasses.dataclass
class Context:
  """One run under evaluation, with the replies the suites share."""
  run: runs.Run
  config: ml_collections.ConfigDict
  kind: str  # runs.model_kind: base, chat or reward_model
  data: dict  # world.generate(seed)
  shared: dict  # across runs: Sampler per model config (one compile per shape), reward models
  cache: dict = dataclasses.field(default_factory=dict)

  @property
  def tokenizer(self):
    return self.run.tokenizer

  @property
  def chat(self) -> bool:
    prompt = self.config.qa.prompt
    return prompt == "chat" or (prompt == "auto" and self.kind == "chat")

  def sampler(self) -> Sampler:
    key = repr(self.run.model.cfg)
    if key not in self.shared:
      self.shared[key] = Sampler(self.run.model, None, self.tokenizer.pad_id,
                                   mesh=self.run.mesh, rules=self.run.rules,
                                   vocab_limit=self.tokenizer.vocab_size)
    smp = self.shared[key]
    smp.params = self.run.params
    return smp

  def qa_records(self) -> list[dict]:
    return self.data["eval"]["sft"][:self.config.qa.questions or None]

  def qa_replies(self) -> list[str]:
    """Greedy replies to qa_records (computed once)."""
    return self.replies("qa", self.qa_records())

  def replies(self, name: str, records: list[dict]) -> list[str]:
    """Greedy replies to question records in the sft format, cached under `name`: through the
    chat template, or plain-text few-shot for a base model."""
    if name not in self.cache:
      c = self.config
      if self.chat:
        replies = qa.reply_to(self.sampler(), self.tokenizer,
                              [qa.question_and_answer(r)[0] for r in records],
                              max_new_tokens=c.max_new_tokens, batch_size=c.batch_size)
      else:
        replies = qa.prompted_replies(self.sampler(), self.tokenizer, records,
                                      _shots(self.data, c.qa.shots),
                                      max_new_tokens=c.max_new_tokens, batch_size=c.batch_size)
      self.cache[name] = replies
    return self.cache[name]


def _shots(data: dict, n: int) -> list[dict]:
  """Solved training examples alternating facts and arithmetic, the same for every question."""
  train = data["train"]["sft"]
  by_kind = ([r for r in train if r["meta"]["kind"] == "fact"],
             [r for r in train if r["meta"]["kind"] != "fact"])
  return [by_kind[i % 2][i // 2] for i in range(n)]


def _mean(values) -> float | None:
  values = list(values)
  return float(np.mean(values)) if values else None


def lm_suite(ctx: Context) -> dict:
  c = ctx.config.lm
  texts = readers.read_texts(c.texts) if c.texts else ctx.data["eval"]["pretrain"]
  seq_len = c.seq_len or ctx.run.config.data.seq_len
  out = perplexity.evaluate_perplexity(ctx.run.model, ctx.run.params, ctx.tokenizer, texts,
                                       seq_len=seq_len, batch_size=ctx.config.batch_size)
  return {k: out[k] for k in ("perplexity", "bits_per_byte", "tokens", "texts",
                              "bits_per_byte_by_text")}


def qa_suite(ctx: Context) -> dict:
  records, replies = ctx.qa_records(), ctx.qa_replies()
  parsed = [qa.question_and_answer(r) for r in records]
  answers = [a for _, a, _ in parsed]
  scored = qa.score_replies(replies, answers, [k for _, _, k in parsed],
                            [m[-1]["content"] for m, _, _ in parsed])
  extracted = [answers_lib.extract_answer(reply) or "" for reply in replies]
  right = scored["correct"]
  out = {"accuracy": scored["accuracy"], "questions": scored["questions"],
         "exact_match": _mean(metrics_lib.exact_match(e, a) for e, a in zip(extracted, answers)),
         "f1": _mean(metrics_lib.token_f1(e, a) for e, a in zip(extracted, answers)),
         "prompt": "chat" if ctx.chat else f"plain, {ctx.config.qa.shots}-shot"}
  out.update({f"accuracy_{k}": v for k, v in scored.get("by_kind", {}).items()})
  answerable = [a != answers_lib.REFUSAL for a in answers]
  out["accuracy_answerable"] = _mean(r for r, ok in zip(right, answerable) if ok)
  out["outcomes"] = right  # per question, for paired tests between runs
  return out


def format_suite(ctx: Context) -> dict:
  ok = [answers_lib.well_formatted(r) for r in ctx.qa_replies()]
  return {"compliance": float(np.mean(ok)), "questions": len(ok)}


def refusal_suite(ctx: Context) -> dict:
  """The world's refusal questions (held out, every other one unanswerable): how often the
  model refuses the unanswerable ones (look-alike names apart) and the answerable ones, and its
  exact match on the answerable ones."""
  records = ctx.data["eval"]["refusal"][:ctx.config.refusal.questions or None]
  replies = ctx.replies("refusal", records)
  expected = [qa.question_and_answer(r)[1] for r in records]
  unknown = np.array([answers_lib.normalize(e) == answers_lib.normalize(answers_lib.REFUSAL)
                      for e in expected])
  refused = np.array([answers_lib.is_refusal(reply) for reply in replies])
  right = np.array([answers_lib.score(reply, e) for reply, e in zip(replies, expected)])
  lookalike = np.array([bool(r.get("meta", {}).get("lookalike")) for r in records])
  return {"refusal_rate": _mean(refused[unknown & ~lookalike]),
          "refusal_rate_lookalike": _mean(refused[unknown & lookalike]),
          "over_refusal_rate": _mean(refused[~unknown]),
          "accuracy_answerable": _mean(right[~unknown]),
          "unanswerable": int((unknown & ~lookalike).sum()),
          "unanswerable_lookalike": int((unknown & lookalike).sum()),
          "answerable": int((~unknown).sum()),
          # per question, for paired tests between runs: refused (the visible unanswerable
          # ones), answered right (the answerable ones)
          "outcomes": [int(x) for x in refused[unknown & ~lookalike]],
          "outcomes_answerable": [int(x) for x in right[~unknown]]}


def _rl_records(ctx: Context, n: int) -> list[dict]:
  return ctx.data["eval"]["rl"][:n or None]


def math_suite(ctx: Context) -> dict:
  c = ctx.config.math
  records = _rl_records(ctx, c.questions)
  conversations = [chat.prompt_messages(r) for r in records]
  smp = ctx.sampler()
  common = dict(max_new_tokens=ctx.config.max_new_tokens, batch_size=ctx.config.batch_size)
  greedy = qa.reply_to(smp, ctx.tokenizer, conversations, **common)
  right = np.array([answers_lib.score(g, str(r["answer"])) for g, r in zip(greedy, records)])
  hard = np.array([bool(r.get("meta", {}).get("hard")) for r in records])
  steps = np.array([world.shows_steps(g) for g in greedy])
  out = {"accuracy": _mean(right[~hard]), "accuracy_hard": _mean(right[hard]),
         "questions": int((~hard).sum()), "questions_hard": int(hard.sum()),
         "outcomes": [int(x) for x in right[~hard]],
         "steps_shown": _mean(steps), "outcomes_steps": [int(x) for x in steps],
         "outcomes_all": [int(x) for x in right]}
  if c.pass_k > 0:
    out[f"pass@{c.pass_k}"], out["sample_accuracy"] = qa.sampled_pass_at_k(
        smp, ctx.tokenizer, conversations, [r["answer"] for r in records], n=c.samples,
        k=c.pass_k, temperature=c.temperature, seed=ctx.run.config.seed, **common)
  return out


def tool_suite(ctx: Context) -> dict:
  """Held-out big-number problems (the world's tool kind): greedy replies without tools, then
  with the calculator offered in the system prompt (calls run, results fed back)."""
  c = ctx.config.tool
  records = ctx.data["eval"]["tool"][:c.questions or None]
  registry = tools.default_registry()
  system = world.TOOL_SYSTEM.format(tools=registry.describe())
  settings = assistant.SamplingSettings(max_new_tokens=ctx.config.max_new_tokens)
  smp = ctx.sampler()
  plain = qa.reply_to(smp, ctx.tokenizer, [[{"role": "user", "content": r["prompt"]}]
                                           for r in records],
                      max_new_tokens=ctx.config.max_new_tokens, batch_size=ctx.config.batch_size)
  without = [answers_lib.score(reply, str(r["answer"])) for reply, r in zip(plain, records)]
  right, called, calls, ran = [], [], 0, 0
  for r in records:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": r["prompt"]}]
    added = assistant.respond(smp, ctx.tokenizer, messages, registry, settings,
                              max_tool_rounds=c.max_rounds)
    results = [m["content"] for m in added if m["role"] == "tool"]
    calls += len(results)
    ran += sum(not res.startswith("error:") for res in results)
    called.append(bool(results))
    right.append(answers_lib.score(added[-1]["content"], str(r["answer"])))
  return {"accuracy": _mean(right), "accuracy_without_tool": _mean(without),
          "tool_call_rate": _mean(called), "valid_call_rate": ran / calls if calls else None,
          "questions": len(records),
          "outcomes": [int(x) for x in right], "outcomes_without_tool": [int(x) for x in without]}


def rag_suite(ctx: Context) -> dict:
  c = ctx.config.rag
  questions = ctx.data["eval"]["kb_questions"][:c.questions or None]
  common = dict(max_new_tokens=ctx.config.max_new_tokens, batch_size=ctx.config.batch_size)
  smp = ctx.sampler()
  closed = qa.kb_accuracy(smp, ctx.tokenizer, questions, **common)
  index = (retrieval.Bm25Index.load(c.index) if c.index
           else retrieval.Bm25Index.build(ctx.data["kb"]))
  opened = qa.kb_accuracy(smp, ctx.tokenizer, questions, index=index, k=c.k,
                          budget_tokens=c.budget_tokens, **common)
  return {"accuracy_without_retrieval": closed["accuracy"],
          "accuracy_with_retrieval": opened["accuracy"],
          "gold_passage_given": opened.get("gold_passage_given"), "questions": len(questions),
          "outcomes": opened["correct"], "outcomes_without_retrieval": closed["correct"]}


def reward_suite(ctx: Context) -> dict:
  c = ctx.config.reward
  if ctx.kind == "reward_model":
    pairs = ctx.data["eval"]["preferences"][:c.pairs or None]
    scorer = scoring.RewardScorer(ctx.run.model, ctx.tokenizer, ctx.run.config.data.seq_len,
                                  batch_size=ctx.config.batch_size)

    def conversations(side):
      return [chat.prompt_messages(p["prompt"])
              + [{"role": "assistant", "content": p[side]}] for p in pairs]
    margin = scorer(ctx.run.params, conversations("chosen")) - \
        scorer(ctx.run.params, conversations("rejected"))
    visible = np.array([p.get("meta", {}).get("visible", True) for p in pairs])
    out = {"pairwise_accuracy": float(np.mean(margin > 0)), "mean_margin": float(margin.mean()),
           "pairs": len(pairs),
           # flaws the text shows, and those that need knowledge (reported apart)
           "pairwise_accuracy_visible": _mean(margin[visible] > 0),
           "pairwise_accuracy_hidden": _mean(margin[~visible] > 0),
           "pairs_visible": int(visible.sum()), "pairs_hidden": int((~visible).sum()),
           "outcomes": [int(x) for x in margin[visible] > 0]}
    flaws = [p.get("meta", {}).get("flaw") for p in pairs]
    for flaw in sorted({f for f in flaws if f}):
      out[f"pairwise_accuracy_{flaw}"] = _mean(m > 0 for m, f in zip(margin, flaws) if f == flaw)
    return out
  if not c.model:
    return {}
  rm = ctx.shared.get(("reward", c.model))
  if rm is None:
    rm_run = runs.load_run(c.model)
    rm = ctx.shared[("reward", c.model)] = (
        rm_run, scoring.RewardScorer(rm_run.model, rm_run.tokenizer, rm_run.config.data.seq_len,
                                     batch_size=ctx.config.batch_size))
  rm_run, scorer = rm
  conversations = [qa.question_and_answer(r)[0] + [{"role": "assistant", "content": reply}]
                   for r, reply in zip(ctx.qa_records(), ctx.qa_replies())]
  return {"reward_model_score": float(np.mean(scorer(rm_run.params, conversations)))}


def memorization_suite(ctx: Context) -> dict:
  c = ctx.config.memorization
  seen = readers.read_texts(c.texts) if c.texts else ctx.data["train"]["pretrain"]
  common = dict(prefix_tokens=c.prefix_tokens, continuation_tokens=c.continuation_tokens,
                documents=c.documents, batch_size=ctx.config.batch_size)
  train = probes.memorization(ctx.sampler(), ctx.tokenizer, seen, **common)
  held_out = probes.memorization(ctx.sampler(), ctx.tokenizer, ctx.data["eval"]["pretrain"],
                                 **common)
  return {"train_rate": train["rate"], "held_out_rate": held_out["rate"],
          "documents": train["documents"], "too_short": train["too_short"]}


def bias_suite(ctx: Context) -> dict:
  templates = (probes.read_templates(ctx.config.bias.templates) if ctx.config.bias.templates
               else probes.DEFAULT_TEMPLATES)
  return probes.bias(ctx.run.model, ctx.run.params, ctx.tokenizer, templates)


def skill_prompts(data: dict, n: int, seed: int) -> dict[str, tuple[list[str], list[str]]]:
  """{skill: (prompts, expected continuations)}, n of each, drawn with `seed`."""
  rng = np.random.default_rng(seed)
  w = data["world"]
  novel = [p["name"] for p in w["absent"]["people"] if not p.get("lookalike")] + [
      p["name"] for p in w.get("kb_people", [])]
  names = [novel[i] for i in rng.permutation(len(novel))[:n]]
  solved = "3 + 4 = 7\n12 * 2 = 24\n"  # the form of the drills

  def equations(op, lo_a, hi_a, lo_b, hi_b):
    a, b = rng.integers(lo_a, hi_a + 1, n), rng.integers(lo_b, hi_b + 1, n)
    value = a * b if op == "*" else a + b
    return ([f"{solved}{x} {op} {y} =" for x, y in zip(a, b)], [f" {v}\n" for v in value])
  reader = random.Random(seed)

  def reading(people):
    texts = [world.reading_text(reader, people) for _ in range(n)]
    return [t for t, _ in texts], [a for _, a in texts]
  return {
      "copy_novel_names": ([f"{x} keeps a goat. {x.split()[0]}" for x in names],
                           [" " + x.split()[1] for x in names]),
      "read_one_person": reading(1),
      "read_three_people": reading(3),
      "times_table": equations("*", 2, 12, 2, 12),
      "two_digit_sums": equations("+", 10, 99, 10, 99),
      "three_digit_sums": equations("+", 100, 999, 10, 99)}


def skills_suite(ctx: Context) -> dict:
  out = {}
  for skill, (prompts, expected) in skill_prompts(ctx.data, ctx.config.skills.prompts,
                                                 ctx.run.config.seed).items():
    result = probes.continuations(ctx.sampler(), ctx.tokenizer, prompts, expected,
                                  batch_size=ctx.config.batch_size)
    out[skill] = result["accuracy"]
  out["prompts"] = ctx.config.skills.prompts
  return out


SUITE_FNS: dict[str, Callable[[Context], dict]] = {
    "lm": lm_suite, "qa": qa_suite, "format": format_suite, "refusal": refusal_suite,
    "math": math_suite, "tool": tool_suite, "rag": rag_suite, "reward": reward_suite,
    "memorization": memorization_suite, "bias": bias_suite, "skills": skills_suite}


def applies(suite: str, kind: str, config) -> str | None:
  """Why `suite` does not apply to a run of `kind` (runs.model_kind; None when it does)."""
  if kind == "reward_model":
    return None if suite == "reward" else "a reward model does not generate text"
  if suite == "reward" and not config.reward.model:
    return "config.reward.model is empty (a reward-model run scores the replies)"
  if kind == "base" and suite not in BASE_SUITES and config.qa.prompt != "chat":
    return "a base model is not trained to follow the chat template"
  return None


def evaluate(run: runs.Run, config, shared: dict | None = None) -> dict[str, Any]:
  """Runs config.suites on `run`: {"stage", "kind", "step", "suites", "metrics", "skipped",
  "seconds"}.

  `shared` (a dict kept across calls) reuses compiled samplers and loaded reward models when
  several runs are evaluated in one process. The world is generated with the run's seed and
  sizes, so its held-out sets are the ones the run held out.
  """
  seed = config.world_seed if config.world_seed >= 0 else run.config.data.get("world_seed", 0)
  stage, kind = runs.stage_of(run.config), runs.model_kind(run.config)
  data = world.generate(seed, sizes=inputs.world_sizes(run.config.data))
  ctx = Context(run, config, kind, data, {} if shared is None else shared)
  out = {"stage": stage, "kind": kind, "step": run.step, "world_seed": seed, "suites": {},
         "metrics": {}, "skipped": {}, "seconds": {}}
  chosen = selected(config)
  for k, suite in enumerate(chosen, 1):
    reason = applies(suite, kind, config)
    if reason:
      out["skipped"][suite] = reason
      continue
    start = time.perf_counter()
    result = SUITE_FNS[suite](ctx)
    out["seconds"][suite] = round(time.perf_counter() - start, 2)
    if jax.process_index() == 0:
      print(f"eval {stage} step {run.step}: {suite} ({k}/{len(chosen)}) in "
            f"{out['seconds'][suite]:.1f} s", flush=True)
    out["suites"][suite] = result
    out["metrics"].update({f"{suite}/{k}": v for k, v in result.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)})
  return out


def table(result: dict) -> str:
  """The metrics of one `evaluate` result as aligned text lines, then the skipped suites."""
  lines = [f"{result['stage']} run, step {result['step']}"]
  width = max((len(k) for k in result["metrics"]), default=0)
  for key, value in result["metrics"].items():
    lines.append(f"  {key:<{width}}  {value:.4g}" if isinstance(value, float)
                 else f"  {key:<{width}}  {value}")
  lines += [f"  skipped {suite}: {why}" for suite, why in result["skipped"].items()]
  return "\n".join(lines)
