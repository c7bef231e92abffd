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

from jaxllm.data import answers, world
from jaxllm.errors import ConfigError

SMALL = world.WorldSizes(people=20, absent_people=6, bios_per_person=3, docs_per_town=2,
                         market_docs=5, drill_docs=10, worked_problems=30, sft=100,
                         preferences=60, rl=50, kb_questions=40)
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
  people = {p["name"]: p for p in w["people"]}
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


def _prompts(split: dict) -> list[str]:
  return ([m["messages"][-2]["content"] for m in split["sft"]]
          + [p["prompt"] for p in split["preferences"]] + [r["prompt"] for r in split["rl"]]
          + [q["question"] for q in split["kb_questions"]])


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
              + s.drill_docs + s.worked_problems)
  assert len(d["train"]["pretrain"]) == pretrain
  for kind, n in [("sft", s.sft), ("preferences", s.preferences), ("rl", s.rl),
                  ("kb_questions", s.kb_questions)]:
    assert len(d["train"][kind]) == n and len(d["eval"][kind]) == round(n * s.eval_fraction)
  assert len(d["kb"]) == s.people + s.towns + 1
  small = world.generate(3, sizes=SMALL)
  assert len(small["train"]["sft"]) == 100 and len(small["eval"]["sft"]) == 20


def test_names_are_unique_and_absent_names_look_like_world_names(data):
  w = data["world"]
  names = [p["name"] for p in w["people"]]
  absent = [p["name"] for p in w["absent"]["people"]]
  assert len(set(names)) == len(names) and not set(names) & set(absent)
  firsts, lasts = {n.split()[0] for n in names}, {n.split()[1] for n in names}
  assert all(n.split()[0] in firsts and n.split()[1] in lasts for n in absent)
  text = "\n".join(data["train"]["pretrain"] + data["eval"]["pretrain"])
  assert not [n for n in absent if n in text]
  assert not [t["name"] for t in w["absent"]["towns"] if t["name"] in text]


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


def test_fact_questions_ask_only_about_their_splits_entities(data):
  w = data["world"]
  split_of = {e["name"]: e["split"] for group in ("people", "towns", "goods")
              for e in w[group] + w["absent"][group]}
  for split in ("train", "eval"):
    records = data[split]["sft"] + data[split]["preferences"] + data[split]["kb_questions"]
    metas = [r["meta"] for r in records if r["meta"]["kind"] != "arithmetic"]
    assert metas
    for m in metas:
      for key in ("person", "other", "town", "good"):
        if key in m["args"]:
          assert split_of[m["args"][key]] == split, (split, m)


def test_every_sft_reply_is_right_and_refuses_exactly_what_the_world_does_not_say(data):
  w = data["world"]
  kinds = Counter()
  for split in ("train", "eval"):
    for record in data[split]["sft"]:
      roles = [m["role"] for m in record["messages"]]
      assert roles in (["user", "assistant"], ["system", "user", "assistant"])
      text, meta = record["messages"][-1]["content"], record["meta"]
      answer = expected(w, meta)
      assert answers.score(text, answer) == 1.0, (text, answer)
      assert answers.is_refusal(text) == (answer == IDK) == (meta["kind"] == "unknown"), text
      assert IDK in text or answer != IDK
      assert _steps_are_right(text), text
      kinds[meta["kind"]] += 1
      if meta["kind"] == "arithmetic":  # steps shown before the answer
        assert len(STEP_RE.findall(text)) >= 2, text
  share = kinds["unknown"] / (kinds["unknown"] + kinds["fact"])
  assert 0.1 < share < 0.2, kinds
  assert 0.2 < sum(len(r["messages"]) == 3 for r in data["train"]["sft"]) / 2000 < 0.4


def test_rl_prompts_are_verifiable_and_harder_than_sft(data):
  w = data["world"]
  sft_tasks = {r["meta"]["task"] for r in data["train"]["sft"]}
  rl_tasks = Counter(r["meta"]["task"] for r in data["train"]["rl"])
  for split in ("train", "eval"):
    for r in data[split]["rl"]:
      assert r["answer"] == expected(w, r["meta"])
  hard = [t for t in rl_tasks if t not in sft_tasks]
  assert sorted(hard) == sorted(world.HARD)
  assert 0.5 < sum(rl_tasks[t] for t in hard) / len(data["train"]["rl"]) < 0.7
  hard_steps = {len(world.TEMPLATES[t][0](random.Random(0), True)[2]) for t in hard}
  assert min(hard_steps) >= 3 and max(hard_steps) == 5


def test_preference_pairs_reject_a_plausible_wrong_reply(data):
  flaws = Counter()
  for split in ("train", "eval"):
    for p in data[split]["preferences"]:
      meta, answer = p["meta"], expected(data["world"], p["meta"])
      flaws[meta["flaw"]] += 1
      assert p["chosen"] != p["rejected"]
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
      assert (meta["flaw"] == "hallucination") == (answer == IDK)
      if meta["flaw"] == "false_refusal":
        assert answers.is_refusal(p["rejected"]) and answer != IDK
  assert set(flaws) == {"wrong_final", "step_slip", "no_steps", "wrong_fact", "false_refusal",
                        "hallucination"}, flaws


def test_kb_questions_point_at_documents_that_hold_the_answer(data):
  docs = {d["id"]: d for d in data["kb"]}
  assert len(docs) == len(data["kb"])
  answerable = Counter()
  for split in ("train", "eval"):
    for q in data[split]["kb_questions"]:
      answer = expected(data["world"], q["meta"])
      assert q["answer"] == answer and q["answerable"] == (answer != IDK)
      answerable[q["answerable"]] += 1
      if not q["answerable"]:
        assert q["doc_ids"] == []
        continue
      text = " ".join(docs[i]["text"] for i in q["doc_ids"])
      assert re.search(rf"\b{re.escape(answer)}\b", text), (q, text)
  assert 0.08 < answerable[False] / sum(answerable.values()) < 0.25


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
