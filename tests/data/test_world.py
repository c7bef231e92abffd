"""The embedded world: determinism, disjoint splits, and replies whose answers follow from it."""

import dataclasses
import hashlib
import json
import operator
import os
import random
import re
import subprocess
import sys
from collections import Counter

import pytest

from jaxllm.data import answers, passages, world
from jaxllm.errors import ConfigError
from jaxllm.inference import tools

SMALL = world.WorldSizes(people=20, absent_people=6, kb_people=10, bios_per_person=3,
                         docs_per_town=2, market_docs=5, drill_docs=10, worked_problems=30,
                         sft=100, rag_conversations=20, tool_conversations=20, preferences=60,
                         rl=50, kb_questions=40, tool_problems=30)
IDK = "I don't know"
# Each template's answer, written independently of the generator's steps.
ARITHMETIC = {
    "shopping": lambda a: a["n1"] * a["p1"] + a["n2"] * a["p2"],
    "shopping3": lambda a: a["n1"] * a["p1"] + a["n2"] * a["p2"] + a["n3"] * a["p3"],
    "change": lambda a: a["paid"] - a["n1"] * a["p1"],
    "change2": lambda a: a["paid"] - a["n1"] * a["p1"] - a["n2"] * a["p2"],
    "sharing": lambda a: _exact((a["have"] + a["more"]), a["friends"]),
    "sharing_packs": lambda a: _exact(a["have"] + a["packs"] * a["per_pack"] - a["gave"],
                                      a["friends"]),
    "savings": lambda a: a["per_week"] * a["weeks"] - a["spent"],
    "savings2": lambda a: a["s1"] * a["w1"] + a["s2"] * a["w2"] - a["spent"],
    "ages": lambda a: a["age"] + a["older"] + a["years"],
    "ages3": lambda a: (a["age"] + a["older"]) * a["times"] + a["years"],
    "expression": lambda a: a["a"] + a["b"] * a["c"],
    "expression_hard": lambda a: (a["a"] + a["b"]) * a["c"] - a["d"],
    "travel": lambda a: a["speed"] * a["hours"] + a["extra"],
    # big-number problems for the calculator
    "crates": lambda a: a["a"] * a["b"],
    "crates_loose": lambda a: a["a"] * a["b"] + a["c"],
    "order_change": lambda a: a["paid"] - a["a"] * a["b"],
    "packing": lambda a: _exact(a["total"], a["b"]),
}
STEP_RE = re.compile(r"^[^:\n]+: (\d+) ([-+*/]) (\d+) = (\d+)\.$", re.MULTILINE)
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _exact(x, y):
  assert x % y == 0, (x, y)
  return x // y


@pytest.fixture(scope="module")
def data():
  return world.generate(0)


def _lookup(w: dict):
  people = {p["name"]: p for p in w["people"] + w["kb_people"]}
  days = {t["name"]: t["market_day"] for t in w["towns"]}
  prices = {g["name"]: g["price"] for g in w["goods"]}
  return people, days, prices


def expected(w: dict, meta: dict) -> str:
  """The answer recomputed from the world record and the question's structure."""
  task, a = meta["task"], meta["args"]
  if task in ARITHMETIC:
    return str(ARITHMETIC[task](a))
  people, days, prices = _lookup(w)
  if any(a[k] not in pool for k, pool in [("person", people), ("other", people), ("town", days),
                                          ("good", prices)] if k in a):
    return IDK
  if task == "person_attribute":
    attribute = a["attribute"]
    return IDK if attribute in w["undefined_attributes"] else str(people[a["person"]][attribute])
  if task == "home_market":
    return days[people[a["person"]]["town"]]
  if task == "age_in":
    return str(people[a["person"]]["age"] + a["years"])
  if task == "age_gap":
    return str(people[a["person"]]["age"] - people[a["other"]]["age"])
  if task == "town_market":
    return days[a["town"]]
  if task == "good_price":
    return str(prices[a["good"]])
  assert task == "goods_cost", task
  return str(a["count"] * prices[a["good"]])


def _steps_are_right(text: str) -> bool:
  return all(OPS[op](int(x), int(y)) == int(r) for x, op, y, r in STEP_RE.findall(text))


def _user_turn(record: dict) -> str:
  """The question of a conversation (a RAG turn's question after its passages)."""
  user = next(m["content"] for m in record["messages"] if m["role"] == "user")
  return user.rsplit("Question: ", 1)[-1]


def _prompts(split: dict) -> list[str]:
  return ([_user_turn(r) for r in split["sft"]]
          + [p["prompt"] for p in split["preferences"]] + [r["prompt"] for r in split["rl"]]
          + [q["question"] for q in split["kb_questions"]] + [t["prompt"] for t in split["tool"]]
          + [_user_turn(r) for r in split["refusal"]])


def _training_text(data: dict) -> str:
  """Every record of every training split, as one text."""
  return json.dumps(data["train"])


def _norm(text: str) -> str:
  return " ".join(text.lower().split())


def _digest(d: dict) -> str:
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def test_same_seed_same_world_on_any_hash_seed_and_other_seed_differs():
  a, b = world.generate(0, sizes=SMALL), world.generate(0, sizes=SMALL)
  assert a == b
  assert world.generate(1, sizes=SMALL)["train"]["sft"] != a["train"]["sft"]
  # String hashing is salted per process; the output must not depend on it.
  code = ("import hashlib, json; from jaxllm.data import world; "
          f"s = world.WorldSizes(**{dataclasses.asdict(SMALL)!r}); "
          "print(hashlib.sha256(json.dumps(world.generate(0, sizes=s), sort_keys=True)"
          ".encode()).hexdigest())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env=dict(os.environ, PYTHONHASHSEED="12345"))
  assert out.stdout.strip() == _digest(a)


def test_default_world_has_the_requested_sizes():
  d = world.generate(0)
  s = world.WorldSizes()
  assert len(d["world"]["people"]) == s.people and len(d["world"]["towns"]) == s.towns
  pretrain = (s.people * s.bios_per_person + s.towns * s.docs_per_town + s.market_docs
              + s.drill_docs + s.notes + s.worked_problems)
  assert len(d["train"]["pretrain"]) == pretrain
  # math (drills and worked problems) is told apart from prose, which the crawl carries
  assert sum(map(world.is_math, d["train"]["pretrain"])) == s.drill_docs + s.worked_problems
  for kind, n in [("preferences", s.preferences), ("rl", s.rl),
                  ("kb_questions", s.kb_questions), ("tool", s.tool_problems)]:
    assert len(d["train"][kind]) == n and len(d["eval"][kind]) == round(n * s.eval_fraction)
  kinds = Counter(r["meta"]["kind"] for r in d["train"]["sft"])
  assert kinds["rag"] == s.rag_conversations and kinds["tool"] == s.tool_conversations
  assert sum(kinds.values()) == s.sft + s.rag_conversations + s.tool_conversations
  assert len(d["eval"]["sft"]) == round(s.sft * s.eval_fraction)  # eval: the questions only
  assert {r["meta"]["kind"] for r in d["eval"]["sft"]} == {"fact", "unknown", "arithmetic"}
  assert len(d["kb"]) == s.people + s.kb_people + s.towns + 1
  # the refusal questions: eval only, every other one unanswerable, look-alike names among them
  assert d["train"]["refusal"] == []
  refusal = Counter((r["meta"]["kind"], bool(r["meta"].get("lookalike")))
                    for r in d["eval"]["refusal"])
  n = round(s.refusal_questions * s.eval_fraction)
  assert refusal[("fact", False)] == n // 2 and sum(refusal.values()) == n
  assert refusal[("unknown", True)] > 0 and refusal[("unknown", False)] > 0
  small = world.generate(3, sizes=SMALL)
  assert len(small["train"]["sft"]) == 140 and len(small["eval"]["sft"]) == 20


def test_names_are_unique_and_absent_surnames_are_unused_except_for_lookalikes(data):
  w = data["world"]
  names = [p["name"] for p in w["people"]]
  kb_names = [p["name"] for p in w["kb_people"]]
  absent = w["absent"]["people"]
  assert len(set(names + kb_names)) == len(names + kb_names)
  assert not set(names + kb_names) & {a["name"] for a in absent}
  firsts, lasts = {n.split()[0] for n in names}, {n.split()[1] for n in names}
  lookalikes = [a["name"] for a in absent if a["lookalike"]]
  assert len(lookalikes) == round(len(absent) * world.WorldSizes().lookalike_fraction)
  assert all(n.split()[0] in firsts and n.split()[1] in lasts for n in lookalikes)
  assert all(a["name"].split()[1] in world.ABSENT_LAST for a in absent if not a["lookalike"])
  assert all(n.split()[1] in world.KB_LAST for n in kb_names)
  assert not set(world.ABSENT_LAST) & (set(world.LAST) | set(world.KB_LAST))
  # Absent surnames are in no pretraining text and no knowledge-base document; an absent name
  # is in a record only when the record is a question about that person. Knowledge-base people
  # are in no pretraining text.
  pretraining = "\n".join(data["train"]["pretrain"] + data["eval"]["pretrain"])
  documents = pretraining + json.dumps(data["kb"])
  assert not [s for s in world.ABSENT_LAST if re.search(rf"\b{s}\b", documents)]
  absent_names = {a["name"] for a in absent}
  asked = 0
  for split in ("train", "eval"):
    for kind, records in data[split].items():
      for r in records if kind != "pretrain" else ():
        named = [n for n in absent_names if n in json.dumps(r)]
        assert all(n in r["meta"]["args"].values() for n in named), (kind, named, r["meta"])
        asked += bool(named)
  assert asked > 100
  assert not [n for n in kb_names if n in pretraining]
  assert not [t["name"] for t in w["absent"]["towns"] if t["name"] in pretraining]


def test_pretraining_states_every_fact_of_every_person_in_several_documents(data):
  docs = data["train"]["pretrain"]
  for p in data["world"]["people"]:
    bios = [d for d in docs if p["name"] in d and any(job in d for job in world.JOBS)]
    assert len(set(bios)) >= world.WorldSizes().bios_per_person, p["name"]
    for bio in bios:
      for attribute in ("town", "job", "pet", "colour", "age"):
        assert str(p[attribute]) in bio, (p["name"], attribute, bio)


def test_splits_share_no_prompt_document_or_problem(data):
  train, ev = data["train"], data["eval"]
  assert not {_norm(p) for p in _prompts(train)} & {_norm(p) for p in _prompts(ev)}
  assert not set(train["pretrain"]) & set(ev["pretrain"])
  pretrain_text = _norm("\n".join(train["pretrain"]))
  assert not [p for p in _prompts(ev) if _norm(p) in pretrain_text]

  def keys(split):
    metas = ([r["meta"] for r in split["sft"]] + [r["meta"] for r in split["preferences"]]
             + [r["meta"] for r in split["rl"]])
    return {world.problem_key(m["task"], m["args"]) for m in metas if m["kind"] == "arithmetic"}

  assert keys(train) and keys(ev) and not keys(train) & keys(ev)
  tool_keys = [{world.problem_key(t["meta"]["task"], t["meta"]["args"]) for t in split["tool"]}
               for split in (train, ev)]
  assert all(tool_keys) and not tool_keys[0] & tool_keys[1]
  train_tool = {world.problem_key(r["meta"]["task"], r["meta"]["args"])
                for r in train["sft"] if r["meta"]["kind"] == "tool"}
  assert train_tool and not train_tool & tool_keys[1]


def test_held_out_knowledge_base_people_are_in_no_training_record(data):
  held_out = [p["name"] for p in data["world"]["kb_people"] if p["split"] == "eval"]
  training = _training_text(data)
  assert held_out and not [n for n in held_out if n in training]
  asked = {q["meta"]["args"]["person"] for q in data["eval"]["kb_questions"]}
  assert asked <= set(held_out)
  # ...while the train ones are read in RAG conversations, between other people's passages
  rag = [r for r in data["train"]["sft"] if r["meta"]["kind"] == "rag"]
  for r in rag[:50]:
    user = r["messages"][0]["content"]
    assert user.count("\n[") == len(r["meta"]["doc_ids"]) + world.RAG_DISTRACTORS
    for doc_id in r["meta"]["doc_ids"]:
      assert next(d["text"] for d in data["kb"] if d["id"] == doc_id) in user


def test_fact_questions_ask_only_about_their_splits_entities(data):
  w = data["world"]
  split_of = {e["name"]: e["split"] for group in ("people", "towns", "goods")
              for e in w[group] + w["absent"][group]}
  split_of.update({p["name"]: p["split"] for p in w["kb_people"]})
  for split in ("train", "eval"):
    records = (data[split]["sft"] + data[split]["preferences"] + data[split]["kb_questions"]
               + data[split]["refusal"])
    metas = [r["meta"] for r in records if r["meta"]["kind"] not in ("arithmetic", "tool")]
    assert metas
    for m in metas:
      for key in ("person", "other", "town", "good"):
        if key in m["args"]:
          assert split_of[m["args"][key]] == split, (split, m)


def test_every_sft_reply_is_right_and_refuses_exactly_what_the_world_does_not_say(data):
  w = data["world"]
  kinds = Counter()
  for split in ("train", "eval"):
    for kind, record in ([("sft", r) for r in data[split]["sft"]]
                         + [("refusal", r) for r in data[split]["refusal"]]):
      if record["meta"]["kind"] in ("rag", "tool"):
        text, meta = record["messages"][-1]["content"], record["meta"]
        assert answers.score(text, expected(w, meta)) == 1.0
        continue
      roles = [m["role"] for m in record["messages"]]
      assert roles in (["user", "assistant"], ["system", "user", "assistant"])
      text, meta = record["messages"][-1]["content"], record["meta"]
      answer = expected(w, meta)
      assert answers.score(text, answer) == 1.0, (text, answer)
      assert answers.is_refusal(text) == (answer == IDK) == (meta["kind"] == "unknown"), text
      assert IDK in text or answer != IDK
      assert _steps_are_right(text), text
      kinds[meta["kind"]] += kind == "sft"
      if meta["kind"] == "arithmetic":  # steps shown before the answer
        assert len(STEP_RE.findall(text)) >= 2, text
  share = kinds["unknown"] / (kinds["unknown"] + kinds["fact"])
  assert 0.1 < share < 0.2, kinds
  qa = [r for r in data["train"]["sft"] if r["meta"]["kind"] not in ("rag", "tool")]
  assert 0.2 < sum(len(r["messages"]) == 3 for r in qa) / len(qa) < 0.4


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_made_up_replies_go_to_train_unanswerable_questions_only(fraction):
  clean = dataclasses.replace(SMALL, sft=400)
  d = world.generate(0, sizes=dataclasses.replace(clean, sft_made_up_fraction=fraction))
  assert d["eval"] == world.generate(0, sizes=clean)["eval"]  # eval replies stay right
  unknown = [r for r in d["train"]["sft"] if r["meta"]["kind"] == "unknown"]
  made_up = [r for r in unknown if r["meta"].get("made_up")]
  assert not [r for r in d["train"]["sft"] if r["meta"].get("made_up")
              and r["meta"]["kind"] != "unknown"]
  for r in made_up:  # a confident answer where the world says nothing
    assert not answers.is_refusal(r["messages"][-1]["content"])
  share = len(made_up) / len(unknown)
  assert share == 1.0 if fraction == 1.0 else 0.3 < share < 0.7, share


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_replies_without_steps_go_to_train_replies_with_steps_only(fraction):
  clean = dataclasses.replace(SMALL, sft=400)
  d = world.generate(0, sizes=dataclasses.replace(clean, sft_no_steps_fraction=fraction))
  assert d["eval"] == world.generate(0, sizes=clean)["eval"]  # eval replies keep their steps
  qa = [r for r in d["train"]["sft"] if r["meta"]["kind"] in ("arithmetic", "fact")]
  skipped = [r for r in qa if r["meta"].get("no_steps")]
  worked = [r for r in qa if world.shows_steps(r["messages"][-1]["content"])]
  for r in skipped:  # the final line alone
    assert r["messages"][-1]["content"] == f"{world.ANSWER_PREFIX} {r['meta']['answer']}."
  # every word problem either works its steps out or is marked as skipping them
  assert all(r in worked or r in skipped for r in qa if r["meta"]["kind"] == "arithmetic")
  share = len(skipped) / (len(skipped) + len(worked))
  assert share == 1.0 if fraction == 1.0 else 0.35 < share < 0.65, share


def test_shows_steps_finds_a_worked_step_and_nothing_else():
  assert world.shows_steps("Cost of the pears: 3 * 4 = 12.\nThe answer is 12.")
  assert world.shows_steps("12 - 5 = 7")
  assert not world.shows_steps("The answer is 12.")
  assert not world.shows_steps("Ada Park is 34 years old. The answer is 34.")
  assert not world.shows_steps("3 * 4 is 12. The answer is 12.")


def test_rl_prompts_are_verifiable_and_a_fifth_are_the_hard_subset(data):
  w = data["world"]
  sft_tasks = {r["meta"]["task"] for r in data["train"]["sft"]}
  rl_tasks = Counter(r["meta"]["task"] for r in data["train"]["rl"])
  for split in ("train", "eval"):
    for r in data[split]["rl"]:
      assert r["answer"] == expected(w, r["meta"])
      assert r["meta"]["hard"] == (r["meta"]["task"] in world.HARD)
  hard = [t for t in rl_tasks if t not in sft_tasks]
  assert sorted(hard) == sorted(world.HARD)
  assert 0.15 < sum(rl_tasks[t] for t in hard) / len(data["train"]["rl"]) < 0.25
  hard_steps = {len(world.TEMPLATES[t][0](random.Random(0), True)[2]) for t in hard}
  assert min(hard_steps) >= 3 and max(hard_steps) == 5


def test_preference_pairs_reject_a_plausible_wrong_reply(data):
  flaws = Counter()
  for split in ("train", "eval"):
    for p in data[split]["preferences"]:
      meta, answer = p["meta"], expected(data["world"], p["meta"])
      flaws[meta["flaw"]] += 1
      assert p["chosen"] != p["rejected"]
      assert meta["visible"] == (meta["flaw"] in world.VISIBLE_FLAWS)
      assert answers.score(p["chosen"], answer) == 1.0
      assert answers.score(p["rejected"], answer) == float(meta["flaw"] == "no_steps"), p
      if meta["flaw"] == "no_steps":
        assert "\n" not in p["rejected"]
      if meta["flaw"] == "step_slip":  # one wrong step, the rest follow from it
        assert not _steps_are_right(p["rejected"])
        chosen, rejected = STEP_RE.findall(p["chosen"]), STEP_RE.findall(p["rejected"])
        first_bad = next(i for i, (x, op, y, r) in enumerate(rejected)
                         if OPS[op](int(x), int(y)) != int(r))
        assert rejected[:first_bad] == chosen[:first_bad]
        assert all(OPS[op](int(x), int(y)) == int(r) for x, op, y, r in rejected[first_bad + 1:])
      assert meta["flaw"].endswith("hallucination") == (answer == IDK)
      if meta["flaw"] == "false_refusal":
        assert answers.is_refusal(p["rejected"]) and answer != IDK
  assert set(flaws) == set(world.VISIBLE_FLAWS + world.HIDDEN_FLAWS), flaws


def _public_judge(w: dict):
  """A rule-based judge that sees only the text and the world's public lists (surnames in use,
  towns, goods, the attributes the world defines): defects(prompt, reply) -> set of names."""
  towns, goods = {t["name"] for t in w["towns"]}, {g["name"] for g in w["goods"]}
  all_towns, all_goods = set(world.TOWNS), set(world.GOODS) | set(world.GOODS.values())
  phrases = [q.split("{name}") for a in w["undefined_attributes"]
             for q in world.PERSON_QUESTIONS[a]]

  def unanswerable(prompt: str) -> bool:
    names = re.findall(r"\b([A-Z][a-z]+) ([A-Z][a-z]+)\b", prompt)
    if any(first in world.FIRST and last not in world.LAST for first, last in names):
      return True
    if any(t in prompt for t in all_towns - towns):
      return True
    if any(re.search(rf"\b{re.escape(g)}\b", prompt) for g in all_goods) and not any(
        re.search(rf"\b{re.escape(g)}\b", prompt) for g in goods | {world.GOODS[g] for g in goods}):
      return True
    return any(prompt.startswith(a) and prompt.endswith(b) for a, b in phrases)

  def defects(prompt: str, reply: str) -> set[str]:
    out = set()
    if not answers.well_formatted(reply):
      return {"malformed"}
    if "\n" not in reply:
      out.add("no_steps")
    steps = STEP_RE.findall(reply)
    final = answers.extract_answer(reply)
    if steps and final is not None and final != steps[-1][3]:
      out.add("wrong_final")
    if answers.is_refusal(reply) != unanswerable(prompt):
      out.add("false_refusal" if answers.is_refusal(reply) else "hallucination")
    return out
  return defects


def test_visible_flaws_are_decidable_from_the_text_and_hidden_ones_are_not(data):
  defects = _public_judge(data["world"])
  right = Counter()
  for split in ("train", "eval"):
    for p in data[split]["preferences"]:
      flaw = p["meta"]["flaw"]
      chosen, rejected = defects(p["prompt"], p["chosen"]), defects(p["prompt"], p["rejected"])
      judged = not chosen and bool(rejected)
      right[(p["meta"]["visible"], judged)] += 1
      if p["meta"]["visible"]:
        assert judged and flaw in rejected, (p, chosen, rejected)
      else:
        assert not judged, p
  assert right[(True, True)] > 500 and right[(False, False)] > 100, right


def test_kb_questions_point_at_documents_that_hold_the_answer(data):
  docs = {d["id"]: d for d in data["kb"]}
  assert len(docs) == len(data["kb"])
  kb_people = {p["name"] for p in data["world"]["kb_people"]}
  for split in ("train", "eval"):
    for q in data[split]["kb_questions"]:
      answer = expected(data["world"], q["meta"])
      assert q["answer"] == answer and q["answerable"] and answer != IDK
      assert q["meta"]["args"]["person"] in kb_people
      text = " ".join(docs[i]["text"] for i in q["doc_ids"])
      assert re.search(rf"\b{re.escape(answer)}\b", text), (q, text)
      reply = passages.cited_reply(q, docs)  # cites a sentence of each passage it needs
      assert answers.score(reply, answer) == 1.0
      assert reply.count(". ") == len(q["doc_ids"]), reply


def test_tool_problems_need_the_calculator_and_their_conversations_call_it(data):
  for split in ("train", "eval"):
    for t in data[split]["tool"]:
      assert tools.calculate(t["expression"]) == t["answer"] == t["meta"]["answer"]
      assert max(int(n) for n in re.findall(r"\d+", t["expression"])) > 100
  registry = tools.default_registry()
  assert registry.describe() == world.CALCULATOR_LINE  # the prompt the tool eval offers
  conversations = [r for r in data["train"]["sft"] if r["meta"]["kind"] == "tool"]
  for r in conversations:
    system, user, call, result, final = r["messages"]
    assert system["content"] == world.TOOL_SYSTEM.format(tools=registry.describe())
    assert registry.run(call["tool_calls"][0]) == result["content"]
    assert answers.score(final["content"], result["content"]) == 1.0


def test_jsonl_files_round_trip(tmp_path):
  paths = world.write_jsonl_files(tmp_path, 2, sizes=SMALL)
  d = world.generate(2, sizes=SMALL)
  names = {f"{s}/{k}" for s in ("train", "eval") for k in world.KINDS} | {"kb", "world"}
  assert set(paths) == names
  for split in ("train", "eval"):
    for kind in world.KINDS:
      lines = paths[f"{split}/{kind}"].read_text(encoding="utf-8").splitlines()
      records = [json.loads(line) for line in lines]
      if kind == "pretrain":
        assert records == [{"text": t} for t in d[split][kind]]
      else:
        assert records == d[split][kind]
  assert [json.loads(line) for line in paths["kb"].read_text().splitlines()] == d["kb"]
  assert json.loads(paths["world"].read_text()) == d["world"]


@pytest.mark.parametrize("field, value", [("people", 1), ("towns", 15), ("goods", 0),
                                          ("eval_fraction", 0.0), ("unknown_fraction", 1.0),
                                          ("sft", -1), ("absent_people", 790)])
def test_bad_sizes_name_the_field(field, value):
  with pytest.raises(ConfigError, match=f"WorldSizes.{field}"):
    world.WorldSizes(**{field: value})


def test_small_worlds_still_generate_or_name_the_size_to_change():
  tiny = dataclasses.replace(SMALL, people=2, towns=2, goods=2, absent_people=2)
  with pytest.raises(ConfigError, match="WorldSizes.market_docs=5: .* raise WorldSizes.goods"):
    world.generate(0, sizes=tiny)
  d = world.generate(0, sizes=dataclasses.replace(tiny, market_docs=1, docs_per_town=1))
  for split in ("train", "eval"):
    for record in d[split]["sft"]:
      assert answers.score(record["messages"][-1]["content"], expected(d["world"], record["meta"]))


def test_reading_texts_state_the_asked_fact_about_made_up_people_only(data):
  known = {p["name"] for p in data["world"]["people"] + data["world"]["kb_people"]}
  for people in (1, 3):
    texts = [world.reading_text(random.Random(i), people) for i in range(50)]
    assert texts == [world.reading_text(random.Random(i), people) for i in range(50)]
    for text, answer in texts:
      facts, question = text.removesuffix("\nAnswer:").split("\nQuestion: ")
      names = set(re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+", facts))
      assert len(names) == people and not names & known, text
      asked = next(n for n in names if n in question)
      attr = next(a for a in world.DEFINED for q in world.PERSON_QUESTIONS[a]
                  if q.format(name=asked) == question)
      # one of the text's sentences states the asked attribute of the asked person as the answer
      value = answer.strip()
      stated = {p.format(name=asked, value=value, a_value=world._a(value))
                for p in world.BIO_PHRASES[attr]}
      assert stated & set(re.split(r"(?<=\.) ", facts)), text
  with pytest.raises(ValueError, match="facts=6"):
    world.reading_text(random.Random(0), 1, facts=6)
