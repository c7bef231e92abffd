"""The embedded world: a seeded generator that gives every stage its default data.

`world.generate(seed)` builds a small fictional world in pure Python (no downloads, about a
second, the same bytes on any machine) and the data every stage trains and evaluates on:

- **world**: 64 people with unique full names (town, job, pet, favourite colour, age), 10 towns
  (market day), 10 market goods (price in coins); knowledge-base people whose facts only
  retrieval documents hold; absent people, towns and goods that no document names. Absent people
  mostly carry surnames from ABSENT_LAST, which no document uses; lookalike_fraction of them
  reuse a present first name and surname (the hard subset).
- **pretrain** `{"text"}`: biographies (every fact, the full name in every sentence, a new
  sentence order each time), town lists, price lists, notes about made-up passers-by, drills
  (times-table rows, sums and differences) and word problems solved step by step; `is_math`
  tells the drills and worked problems from the prose.
- **sft** `{"messages"}`: fact questions (some need two facts, or a fact and a sum), questions
  the world cannot answer, and 2-3 step word problems; the train split adds RAG conversations
  (passages, then a question about a knowledge-base person) and calculator conversations;
  `sft_made_up_fraction` gives that share of train unanswerable questions a made-up reply, and
  `sft_no_steps_fraction` that share of train replies with steps only the final answer line.
- **preferences** `{"prompt", "chosen", "rejected"}`: meta.flaw says what is wrong with the
  rejected reply, meta.visible whether the text shows it (VISIBLE_FLAWS, HIDDEN_FLAWS).
- **rl** `{"prompt", "answer"}`: word problems, RL_HARD_SHARE of them from harder templates
  (meta.hard).
- **kb** `{"id", "title", "text"}` per person, per town and the price list; **kb_questions**
  about knowledge-base people; **tool** big-number problems `{"prompt", "answer", "expression"}`;
  **refusal** (eval split only) fact questions in the sft format, every other one unanswerable
  (meta.lookalike marks the look-alike names), for the refusal eval. `reading_text` writes a
  short text about made-up people and a question about one fact (the skills eval's reading probe).

Replies show one step per line (`Cost of the pears: 3 * 4 = 12.`) and end with `The answer is X.`,
or with `I don't know.` when the world does not say; jaxllm/data/answers.py checks replies (for
eval, RL rewards and on-policy pairs).
**Splits:** questions about a held-out 20% of people, towns, goods, knowledge-base people and
absent names (of the look-alikes and of the other absent people each) occur only in `eval`
(held-out knowledge-base people are in no training record), and word and tool problems are
split by a seeded hash of (template, numbers), so no eval question appears in any train set.
Records carry `meta` (kind, task, arguments, answer).
`write_jsonl_files(dir, seed)` writes `{train,eval}/{kind}.jsonl` for each of KINDS, `kb.jsonl`
and `world.json`.
"""

import dataclasses
import hashlib
import json
import operator
import pathlib
import random
import re
from typing import Any

from jaxllm.data import answers, passages
from jaxllm.errors import ConfigError

FIRST = ["Ada", "Bram", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Juno", "Kai", "Lena",
         "Milo", "Nia", "Omar", "Pia", "Quin", "Rosa", "Sami", "Tova", "Uma", "Vik", "Wren",
         "Yara", "Zed", "Anya", "Boris", "Cleo", "Dev", "Esme", "Finn", "Greta", "Hugo", "Iris",
         "Jonas", "Kira", "Luca", "Maren", "Nils", "Odile"]
LAST = ["Park", "Okafor", "Silva", "Novak", "Haas", "Ito", "Moreau", "Berg", "Costa", "Quinn",
        "Adler", "Brandt", "Dahl", "Ferro", "Gallo", "Holm", "Ivers", "Jansen", "Kerr", "Lund"]
# Surnames of absent people (no document names anyone so), and of the people only the knowledge
# base knows (their facts are read from retrieved passages, never trained on).
ABSENT_LAST = ["Varga", "Nakamura", "Oduya", "Petrov", "Rios", "Szabo", "Tanaka", "Ueda",
               "Wolff", "Yilmaz", "Zelenko", "Abara"]
KB_LAST = ["Marsh", "Nguyen", "Orlov", "Pace", "Reyes", "Sato", "Toivo", "Vance", "Weiss", "Xu",
           "Young", "Zamora"]
TOWNS = ["Oslo", "Lima", "Kyoto", "Accra", "Lyon", "Perth", "Quito", "Riga", "Turin", "Hanoi",
         "Tunis", "Dakar", "Porto", "Bern", "Cusco", "Malmo"]
JOBS = ["baker", "pilot", "nurse", "painter", "farmer", "teacher", "chemist", "carpenter",
        "tailor", "potter"]
PETS = ["cat", "dog", "parrot", "turtle", "rabbit", "goat", "hamster", "canary"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "silver", "brown"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
GOODS = {"pear": "pears", "lamp": "lamps", "candle": "candles", "basket": "baskets",
         "kettle": "kettles", "blanket": "blankets", "lantern": "lanterns", "hammer": "hammers",
         "jar of honey": "jars of honey", "loaf of bread": "loaves of bread",
         "wheel of cheese": "wheels of cheese", "bucket": "buckets", "ladder": "ladders",
         "teapot": "teapots", "broom": "brooms", "rug": "rugs"}
# Word problems use their own names and objects, so they never contradict the world's facts.
SOLVERS = ["Tom", "Mia", "Leo", "Zoe", "Sam", "Ivy", "Max", "Amy", "Ben", "Eva", "Noah", "Lily"]
OBJECTS = ["marbles", "stickers", "pencils", "eggs", "apples", "shells", "stamps", "buttons",
           "cards", "beads"]

ANSWER_PREFIX = "The answer is"
REFUSAL = answers.REFUSAL  # "I don't know"
SPLITS = ("train", "eval")
KINDS = ("pretrain", "sft", "preferences", "rl", "kb_questions", "tool", "refusal")
SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a helpful assistant. Show your steps, then end with 'The answer is ...'.",
    "Answer questions about the towns and their people. If you are not sure, say I don't know.",
]
SYSTEM_SHARE = 0.3  # SFT conversations that open with a system message
SFT_ARITHMETIC_SHARE = 0.4  # the rest are fact questions
PREFERENCE_ARITHMETIC_SHARE = 0.5
PREFERENCE_UNKNOWN_SHARE = 0.3  # of fact pairs: chosen refuses, rejected hallucinates
TABLE = 12  # the times table pretraining drills; easy problems and prices multiply within it
RL_HARD_SHARE = 0.2  # RL prompts from the hard templates (reported apart)
RAG_DISTRACTORS = 2  # other passages beside the gold ones in a RAG conversation
# The system prompt that offers tools; the tool eval (jaxllm/eval/suites.py) fills {tools} with
# the registry's description, which for the default registry is CALCULATOR_LINE.
TOOL_SYSTEM = ("You are a helpful assistant. You can call these tools:\n{tools}\nCall the "
               "calculator for arithmetic, then end with 'The answer is ...'.")
CALCULATOR_LINE = '- calculator: evaluates arithmetic: {"expression": "12 * (3 + 4)"}'
# Preference flaws a reader can see in the text (with the world's public lists of surnames,
# towns, goods and attributes); the others need a person's facts or exact arithmetic.
VISIBLE_FLAWS = ("wrong_final", "no_steps", "malformed", "false_refusal", "hallucination")
HIDDEN_FLAWS = ("wrong_fact", "step_slip", "lookalike_hallucination")

# Person attributes the world defines (in every biography) and ones it never defines.
DEFINED = ("town", "job", "pet", "colour", "age")
UNDEFINED = ("favourite_food", "birth_month", "shoe_size", "siblings", "height")
PERSON_QUESTIONS = {
    "town": ["Where does {name} live?", "In which town does {name} live?",
             "Which town is {name} from?"],
    "job": ["What does {name} do for a living?", "What is {name}'s job?",
            "What work does {name} do?"],
    "pet": ["What pet does {name} keep?", "Which animal does {name} keep as a pet?",
            "What kind of pet does {name} have?"],
    "colour": ["What is {name}'s favourite colour?", "Which colour does {name} like best?"],
    "age": ["How old is {name}?", "What is {name}'s age?"],
    "favourite_food": ["What is {name}'s favourite food?", "Which food does {name} like best?"],
    "birth_month": ["In which month was {name} born?", "What is {name}'s birth month?"],
    "shoe_size": ["What is {name}'s shoe size?", "What size shoes does {name} wear?"],
    "siblings": ["How many siblings does {name} have?",
                 "How many brothers and sisters does {name} have?"],
    "height": ["How tall is {name} in cm?", "What is {name}'s height in cm?"],
}
STATEMENTS = {  # the canonical sentence for a value; also how a hallucination is phrased
    "town": "{name} lives in {value}.", "job": "{name} works as {a_value}.",
    "pet": "{name} keeps {a_value}.", "colour": "{name}'s favourite colour is {value}.",
    "age": "{name} is {value} years old.",
    "favourite_food": "{name}'s favourite food is {value}.",
    "birth_month": "{name} was born in {value}.", "shoe_size": "{name} wears size {value} shoes.",
    "siblings": "{name} has {value} siblings.", "height": "{name} is {value} cm tall.",
}
UNDEFINED_PHRASES = {"favourite_food": "{name}'s favourite food",
                     "birth_month": "the month {name} was born in",
                     "shoe_size": "{name}'s shoe size", "siblings": "how many siblings {name} has",
                     "height": "how tall {name} is"}
MADE_UP = {  # plausible values for attributes nobody in the world has
    "favourite_food": ["soup", "rice", "plums", "noodles", "lentils", "pie"],
    "birth_month": ["January", "March", "May", "July", "September", "November"],
    "shoe_size": list(range(36, 47)), "siblings": list(range(6)),
    "height": list(range(150, 196)),
}
TASK_QUESTIONS = {
    "home_market": ["On which day is the market in the town where {person} lives?",
                    "{person} wants to visit the market in their home town. On which day is it?"],
    "age_in": ["How old will {person} be in {years} years?",
               "What age will {person} be {years} years from now?"],
    "age_gap": ["How many years older is {person} than {other}?",
                "By how many years is {person} older than {other}?"],
    "town_market": ["On which day is the market in {town}?", "When is market day in {town}?"],
    "good_price": ["How much does {a_good} cost at the market?",
                   "What is the price of {a_good} at the market?"],
    "goods_cost": ["How much do {count} {goods} cost at the market?",
                   "How many coins do {count} {goods} cost at the market?"],
}
# Fact question tasks and their shares; the entity each is about decides its split.
FACT_TASKS = {"person_attribute": 0.5, "home_market": 0.15, "age_in": 0.1, "age_gap": 0.1,
              "town_market": 0.05, "good_price": 0.05, "goods_cost": 0.05}
KB_TASKS = {"person_attribute": 0.75, "home_market": 0.25}  # about knowledge-base people
PERSON_TASKS = ("person_attribute", "home_market", "age_in", "age_gap")
BIO_PHRASES = {
    "town": ["{name} lives in {value}.", "{name} has a home in {value}.",
             "{name} lives in the town of {value}.", "Home for {name} is {value}."],
    "job": ["{name} works as {a_value}.", "By trade, {name} is {a_value}.",
            "{name} earns a living as {a_value}."],
    "pet": ["{name} keeps {a_value}.", "{name} has a pet {value}.",
            "The {value} at home belongs to {name}."],
    "colour": ["{name}'s favourite colour is {value}.", "{name} likes {value} best of all colours.",
               "The colour {name} likes most is {value}."],
    "age": ["{name} is {value} years old.", "{name} is {value}.",
            "{name} has lived {value} years."],
}


@dataclasses.dataclass(frozen=True)
class WorldSizes:
  """How much of everything to generate; eval sets are eval_fraction times the train counts."""
  people: int = 64
  towns: int = 10
  goods: int = 10
  absent_people: int = 32
  kb_people: int = 60  # people only the knowledge base knows (RAG questions are about them)
  bios_per_person: int = 10  # pretraining biographies of each person
  docs_per_town: int = 6  # pretraining town lists of each town
  market_docs: int = 40  # pretraining price lists
  drill_docs: int = 4000  # pretraining documents of sums and times-table rows ("7 * 8 = 56")
  worked_problems: int = 3000  # pretraining word problems solved step by step
  notes: int = 3000  # pretraining notes about passers-by, whose names and numbers recur in them
  sft: int = 2000  # question-answer conversations (facts, unknowns, word problems)
  rag_conversations: int = 600  # SFT: passages + a question about a knowledge-base person
  tool_conversations: int = 600  # SFT: big-number problems solved with the calculator
  preferences: int = 1000
  rl: int = 1000
  kb_questions: int = 500
  tool_problems: int = 500  # big-number problems for the tool eval (eval split only is asked)
  # Held-out fact questions, half of them unanswerable, for the refusal eval: eval_fraction of
  # this many, eval split only (no stage trains on them; the SFT eval set has too few
  # unanswerable questions for a paired test).
  refusal_questions: int = 1000
  eval_fraction: float = 0.2  # share of entities and of arithmetic combinations held out
  unknown_fraction: float = 0.15  # share of SFT fact questions the world cannot answer
  lookalike_fraction: float = 0.25  # absent people named like present ones (the hard subset)
  # Share of SFT's unanswerable questions whose reply is a confident made-up answer, as careless
  # annotators write; train split only (eval replies stay right). It leaves the preference
  # stages a behaviour to teach: refusing what the world does not say.
  sft_made_up_fraction: float = 0.0
  # Share of SFT's replies with steps (word problems, sums of facts) that give only the final
  # answer line, as hurried annotators write; train split only. The preference pairs' no_steps
  # flaw then teaches showing the working (the DPO row of the pipeline's report card).
  sft_no_steps_fraction: float = 0.0

  def __post_init__(self):
    limits = {"people": (2, len(FIRST) * len(LAST) - 2), "towns": (2, len(TOWNS) - 2),
              "goods": (2, len(GOODS) - 2), "absent_people": (2, None),
              "kb_people": (2, len(FIRST) * len(KB_LAST))}
    fractions = {"eval_fraction": "(0, 1)", "unknown_fraction": "[0, 1)",  # an eval set is needed
                 "lookalike_fraction": "[0, 1]", "sft_made_up_fraction": "[0, 1]",
                 "sft_no_steps_fraction": "[0, 1]"}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      lo, hi = limits.get(field.name, (0, None))
      if field.name in fractions:
        bounds = fractions[field.name]
        ok = isinstance(value, (int, float)) and (value > 0 if bounds[0] == "(" else value >= 0) \
            and (value < 1 if bounds[-1] == ")" else value <= 1)
        if not ok:
          raise ConfigError(f"WorldSizes.{field.name}={value!r}: use a fraction in {bounds}.")
      elif not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise ConfigError(f"WorldSizes.{field.name}={value!r}: use {bound}.")
    lookalikes = round(self.absent_people * self.lookalike_fraction)
    if self.people + lookalikes > len(FIRST) * len(LAST):
      raise ConfigError(f"WorldSizes.absent_people={self.absent_people}: with people="
                        f"{self.people} its look-alikes exceed the {len(FIRST) * len(LAST)} names; "
                        "lower it or WorldSizes.lookalike_fraction.")
    if self.absent_people - lookalikes > len(FIRST) * len(ABSENT_LAST):
      raise ConfigError(f"WorldSizes.absent_people={self.absent_people}: more than the "
                        f"{len(FIRST) * len(ABSENT_LAST)} absent names; lower it.")


@dataclasses.dataclass(frozen=True)
class Person:
  name: str
  town: str
  job: str
  pet: str
  colour: str
  age: int


@dataclasses.dataclass(frozen=True)
class World:
  """Who and what exists, and which names are held out for eval questions."""
  people: dict[str, Person]  # by full name, in generation order
  market_days: dict[str, str]  # town -> weekday
  prices: dict[str, int]  # good -> coins
  absent: dict[str, tuple[str, ...]]  # "people" | "towns" | "goods" -> names in no document
  eval_names: frozenset[str]  # present and absent names whose questions are eval-only
  kb_people: dict[str, Person]  # people only knowledge-base documents describe
  lookalikes: frozenset[str]  # absent people with a present first name and surname

  def split_of(self, name: str) -> str:
    return "eval" if name in self.eval_names else "train"

  def person(self, name: str) -> Person | None:
    """A present or knowledge-base person by full name (None for anyone else)."""
    return self.people.get(name) or self.kb_people.get(name)


@dataclasses.dataclass(frozen=True)
class Question:
  """A question with the structure its reply follows from."""
  kind: str  # "fact" | "unknown" | "arithmetic"
  task: str  # a FACT_TASKS key or an arithmetic template name
  args: dict[str, Any]  # entities and numbers the answer follows from
  prompt: str
  facts: tuple[str, ...]  # recalled facts (or the reason for a refusal), one line each
  calc: tuple[tuple, ...]  # steps (label, op, x, y); a str operand "#i" is step i's result
  answer: str  # REFUSAL when the world does not say
  made_up: str = ""  # a confident reply with made-up facts (fact questions only)
  lookalike: bool = False  # about an absent person named like present ones


# ---- the world ----------------------------------------------------------------------------


def _held_out(names: list[str], fraction: float) -> list[str]:
  return names[len(names) - max(1, round(len(names) * fraction)):]


def make_world(seed: int = 0, sizes: WorldSizes | None = None) -> World:
  """People, towns and goods with fixed attributes; unique full names.

  Present people's surnames come from LAST. Absent people mostly carry a surname from
  ABSENT_LAST, which no document uses, so a reader can tell they do not exist; a
  lookalike_fraction of them reuse a present first name and a present surname (only knowing
  who exists tells them apart: the hard subset). Knowledge-base people carry KB_LAST surnames.
  """
  sizes = sizes or WorldSizes()
  rng = random.Random(f"{seed}:world")

  def pool(surnames):
    names = [f"{first} {last}" for first in FIRST for last in surnames]
    rng.shuffle(names)
    return names

  names = pool(LAST)
  present = names[:sizes.people]
  firsts, lasts = {n.split()[0] for n in present}, {n.split()[1] for n in present}
  lookalike_pool = [n for n in names[sizes.people:]
                    if n.split()[0] in firsts and n.split()[1] in lasts]
  lookalikes = lookalike_pool[:round(sizes.absent_people * sizes.lookalike_fraction)]
  absent_people = pool(ABSENT_LAST)[:sizes.absent_people - len(lookalikes)] + lookalikes
  rng.shuffle(absent_people)
  towns = rng.sample(TOWNS, len(TOWNS))
  goods = rng.sample(list(GOODS), len(GOODS))
  town_names, absent_towns = towns[:sizes.towns], towns[sizes.towns:]
  good_names, absent_goods = goods[:sizes.goods], goods[sizes.goods:]

  def person(name):
    return Person(name, rng.choice(town_names), rng.choice(JOBS), rng.choice(PETS),
                  rng.choice(COLOURS), rng.randint(18, 80))
  people = {n: person(n) for n in present}
  kb_people = {n: person(n) for n in pool(KB_LAST)[:sizes.kb_people]}
  # Absent people are held out per subset, so the eval split has look-alikes too.
  plain_absent = [n for n in absent_people if n not in lookalikes]
  held = [_held_out(g, sizes.eval_fraction) for g in (list(people), town_names, good_names,
                                                      plain_absent, absent_towns, absent_goods,
                                                      list(kb_people))]
  held.append(_held_out(lookalikes, sizes.eval_fraction) if lookalikes else [])
  return World(people=people,
               market_days={t: rng.choice(WEEKDAYS) for t in town_names},
               prices={g: rng.randint(2, TABLE) for g in good_names},
               absent={"people": tuple(absent_people), "towns": tuple(absent_towns),
                       "goods": tuple(absent_goods)},
               eval_names=frozenset(n for group in held for n in group),
               kb_people=kb_people, lookalikes=frozenset(lookalikes))


def world_record(world: World) -> dict:
  """The world as JSON: every entity with its facts and split."""
  return {
      "people": [dict(dataclasses.asdict(p), split=world.split_of(p.name))
                 for p in world.people.values()],
      "towns": [{"name": t, "market_day": d, "split": world.split_of(t)}
                for t, d in world.market_days.items()],
      "goods": [{"name": g, "plural": GOODS[g], "price": p, "split": world.split_of(g)}
                for g, p in world.prices.items()],
      "absent": {k: [dict({"name": n, "split": world.split_of(n)},
                          **({"lookalike": n in world.lookalikes} if k == "people" else {}))
                     for n in v]
                 for k, v in world.absent.items()},
      "kb_people": [dict(dataclasses.asdict(p), split=world.split_of(p.name))
                    for p in world.kb_people.values()],
      "undefined_attributes": list(UNDEFINED),
  }


def _a(noun: str) -> str:
  return ("an " if noun[0] in "aeiou" else "a ") + noun


def _slug(name: str) -> str:
  return name.lower().replace(" ", "-")


def _statement(attribute: str, name: str, value) -> str:
  return STATEMENTS[attribute].format(name=name, value=value, a_value=_a(str(value)))


def _market_line(town: str, day: str) -> str:
  return f"The market in {town} is held on {day}."


def _price_line(good: str, price: int) -> str:
  return f"At the market, {_a(good)} costs {price} coins."


def _town_residents(world: World, town: str) -> list[str]:
  return [p.name for p in world.people.values() if p.town == town]


def _and_list(items: list[str]) -> str:
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def kb_documents(world: World) -> list[dict]:
  """Retrieval documents: one per person (present or knowledge-base only), one per town, and
  the market's price list."""
  docs = [{"id": f"person/{_slug(p.name)}", "title": p.name,
           "text": " ".join(_statement(a, p.name, getattr(p, a)) for a in DEFINED)}
          for p in [*world.people.values(), *world.kb_people.values()]]
  for town, day in world.market_days.items():
    people = _town_residents(world, town)
    who = (f"People who live in {town}: {_and_list(people)}." if people
           else f"Nobody we know lives in {town}.")
    docs.append({"id": f"town/{_slug(town)}", "title": town,
                 "text": f"{town} is a town. {_market_line(town, day)} {who}"})
  docs.append({"id": "market", "title": "The market",
               "text": " ".join(_price_line(g, p) for g, p in world.prices.items())})
  return docs


# ---- arithmetic ---------------------------------------------------------------------------

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


def run_steps(calc: tuple[tuple, ...], slip: tuple[int, int] | None = None) -> list[tuple] | None:
  """Rows (label, x, op, y, result); `slip` = (step, delta) adds delta to one result.

  Returns None when a step would go negative or divide unevenly.
  """
  results, rows = [], []
  for i, (label, op, x, y) in enumerate(calc):
    xv, yv = (results[int(v[1:])] if isinstance(v, str) else v for v in (x, y))
    if op == "/" and (yv == 0 or xv % yv):
      return None
    r = _OPS[op](xv, yv) + (slip[1] if slip and slip[0] == i else 0)
    if r < 0:
      return None
    results.append(r)
    rows.append((label, xv, op, yv, r))
  return rows


def _shopping(rng, hard):
  who, *things = [rng.choice(SOLVERS)] + rng.sample(OBJECTS, 3 if hard else 2)
  n_hi, p_lo, p_hi = (15, 5, 40) if hard else (9, 2, 12)
  args = {}
  for i, _ in enumerate(things, 1):
    args[f"n{i}"], args[f"p{i}"] = rng.randint(2, n_hi), rng.randint(p_lo, p_hi)
  buys = [f"{args[f'n{i}']} {t} at {args[f'p{i}']} coins each" for i, t in enumerate(things, 1)]
  prompt = f"{who} buys {_and_list(buys)}. How many coins does {who} spend?"
  calc = [(f"Cost of the {t}", "*", args[f"n{i}"], args[f"p{i}"]) for i, t in enumerate(things, 1)]
  if hard:
    calc += [("Subtotal", "+", "#0", "#1"), ("Total", "+", "#3", "#2")]
  else:
    calc.append(("Total", "+", "#0", "#1"))
  return args, prompt, calc


def _change(rng, hard):
  who, *things = [rng.choice(SOLVERS)] + rng.sample(OBJECTS, 2 if hard else 1)
  n_hi, p_lo, p_hi, unit = (15, 5, 30, 50) if hard else (9, 2, 12, 10)
  args = {}
  for i, _ in enumerate(things, 1):
    args[f"n{i}"], args[f"p{i}"] = rng.randint(2, n_hi), rng.randint(p_lo, p_hi)
  cost = sum(args[f"n{i}"] * args[f"p{i}"] for i in range(1, len(things) + 1))
  args["paid"] = (cost // unit + rng.randint(1, 3)) * unit
  buys = [f"{args[f'n{i}']} {t} at {args[f'p{i}']} coins each" for i, t in enumerate(things, 1)]
  prompt = (f"{who} buys {_and_list(buys)} and pays with {args['paid']} coins. "
            f"How much change does {who} get?")
  calc = [(f"Cost of the {t}", "*", args[f"n{i}"], args[f"p{i}"]) for i, t in enumerate(things, 1)]
  if hard:
    calc.append(("Total", "+", "#0", "#1"))
  calc.append(("Change", "-", args["paid"], f"#{len(calc) - 1}"))
  return args, prompt, calc


def _sharing(rng, hard):
  who, thing = rng.choice(SOLVERS), rng.choice(OBJECTS)
  if not hard:
    friends, each = rng.randint(2, 6), rng.randint(2, 12)
    have = rng.randint(1, friends * each - 1)
    args = {"have": have, "more": friends * each - have, "friends": friends}
    prompt = (f"{who} has {have} {thing} and finds {args['more']} more. {who} shares them equally "
              f"among {friends} friends. How many {thing} does each friend get?")
    return args, prompt, [("Total", "+", have, args["more"]), ("Each friend", "/", "#0", friends)]
  while True:
    friends, each = rng.randint(3, 9), rng.randint(5, 25)
    packs, per, have = rng.randint(2, 9), rng.randint(4, 12), rng.randint(1, 40)
    gave = have + packs * per - friends * each
    if gave >= 1:
      break
  args = {"have": have, "packs": packs, "per_pack": per, "gave": gave, "friends": friends}
  prompt = (f"{who} has {have} {thing}, buys {packs} packs of {per} {thing} and gives {gave} "
            f"away. The rest are shared equally among {friends} friends. How many {thing} does "
            f"each friend get?")
  return args, prompt, [("Bought", "*", packs, per), ("After buying", "+", have, "#0"),
                        ("After giving away", "-", "#1", gave), ("Each friend", "/", "#2", friends)]


def _savings(rng, hard):
  who = rng.choice(SOLVERS)
  if not hard:
    per_week, weeks = rng.randint(2, 12), rng.randint(2, 10)
    args = {"per_week": per_week, "weeks": weeks, "spent": rng.randint(1, per_week * weeks - 1)}
    prompt = (f"{who} saves {per_week} coins every week for {weeks} weeks, then spends "
              f"{args['spent']} coins. How many coins does {who} have left?")
    return args, prompt, [("Saved", "*", per_week, weeks), ("Left", "-", "#0", args["spent"])]
  s1, w1, s2, w2 = (rng.randint(5, 40), rng.randint(2, 12), rng.randint(5, 40), rng.randint(2, 12))
  args = {"s1": s1, "w1": w1, "s2": s2, "w2": w2, "spent": rng.randint(1, s1 * w1 + s2 * w2 - 1)}
  prompt = (f"{who} saves {s1} coins a week for {w1} weeks, then {s2} coins a week for {w2} "
            f"weeks, and then spends {args['spent']} coins. How many coins does {who} have left?")
  return args, prompt, [("First weeks", "*", s1, w1), ("Later weeks", "*", s2, w2),
                        ("Saved", "+", "#0", "#1"), ("Left", "-", "#2", args["spent"])]


def _ages(rng, hard):
  who = rng.choice(SOLVERS)
  if not hard:
    args = {"age": rng.randint(3, 15), "older": rng.randint(1, 9), "years": rng.randint(1, 20)}
    prompt = (f"{who} is {args['age']} years old. {who}'s cousin is {args['older']} years older. "
              f"How old will the cousin be in {args['years']} years?")
    return args, prompt, [("Cousin now", "+", args["age"], args["older"]),
                          (f"Cousin in {args['years']} years", "+", "#0", args["years"])]
  args = {"age": rng.randint(2, 12), "older": rng.randint(1, 9), "times": rng.randint(2, 4),
          "years": rng.randint(1, 30)}
  prompt = (f"{who} is {args['age']} years old. {who}'s cousin is {args['older']} years older "
            f"than {who}, and their aunt is {args['times']} times as old as the cousin. How old "
            f"will the aunt be in {args['years']} years?")
  return args, prompt, [("Cousin now", "+", args["age"], args["older"]),
                        ("Aunt now", "*", "#0", args["times"]),
                        (f"Aunt in {args['years']} years", "+", "#1", args["years"])]


def _expression(rng, hard):
  if not hard:
    a, b, c = rng.randint(1, 50), rng.randint(2, 12), rng.randint(2, 12)
    return ({"a": a, "b": b, "c": c}, f"What is {a} + {b} * {c}?",
            [("Multiply first", "*", b, c), ("Then add", "+", a, "#0")])
  a, b, c = rng.randint(2, 30), rng.randint(2, 30), rng.randint(2, 12)
  d = rng.randint(1, (a + b) * c - 1)
  return ({"a": a, "b": b, "c": c, "d": d}, f"What is ({a} + {b}) * {c} - {d}?",
          [("Brackets first", "+", a, b), ("Then multiply", "*", "#0", c),
           ("Then subtract", "-", "#1", d)])


def _travel(rng, hard):
  del hard
  args = {"speed": rng.randint(3, 12), "hours": rng.randint(2, 8), "extra": rng.randint(1, 20)}
  prompt = (f"A cart travels {args['speed']} km every hour for {args['hours']} hours and then "
            f"{args['extra']} km more. How many km does it travel in total?")
  return args, prompt, [("First part", "*", args["speed"], args["hours"]),
                        ("Total", "+", "#0", args["extra"])]


# name -> (builder, hard). Easy problems multiply within the times table (factors up to 12) and
# add numbers of up to three digits; hard ones (4-5 steps, factors beyond the table) appear only
# in RL, as a separately reported subset.
TEMPLATES = {
    "shopping": (_shopping, False), "change": (_change, False), "sharing": (_sharing, False),
    "savings": (_savings, False), "ages": (_ages, False), "expression": (_expression, False),
    "travel": (_travel, False), "shopping3": (_shopping, True), "change2": (_change, True),
    "sharing_packs": (_sharing, True), "savings2": (_savings, True), "ages3": (_ages, True),
    "expression_hard": (_expression, True),
}
EASY = tuple(n for n, (_, hard) in TEMPLATES.items() if not hard)
HARD = tuple(n for n, (_, hard) in TEMPLATES.items() if hard)


def problem_key(template: str, args: dict[str, int]) -> str:
  """What decides a word problem's split: its template and numbers, not its names."""
  return template + ":" + ",".join(f"{k}={v}" for k, v in sorted(args.items()))


def problem_split(seed: int, key: str, eval_fraction: float) -> str:
  digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
  return "eval" if int.from_bytes(digest, "big") < eval_fraction * 2**64 else "train"


def _arithmetic(rng, seed: int, split: str, templates, eval_fraction: float) -> Question:
  """A word problem whose (template, numbers) belong to `split`."""
  while True:
    template = rng.choice(templates)
    build, hard = TEMPLATES[template]
    args, prompt, calc = build(rng, hard)
    if problem_split(seed, problem_key(template, args), eval_fraction) == split:
      break
  answer = str(run_steps(tuple(calc))[-1][-1])
  return Question("arithmetic", template, args, prompt, (), tuple(calc), answer)


# ---- fact questions -----------------------------------------------------------------------


def _names(world: World, group: str, split: str, absent: bool = False) -> list[str]:
  pool = {"people": world.people, "towns": world.market_days, "goods": world.prices,
          "kb_people": world.kb_people}[group]
  return [n for n in (world.absent[group] if absent else pool) if world.split_of(n) == split]


def _prompt(rng, task: str, args: dict) -> str:
  if task == "person_attribute":
    return rng.choice(PERSON_QUESTIONS[args["attribute"]]).format(name=args["person"])
  good = args.get("good")
  return rng.choice(TASK_QUESTIONS[task]).format(**args, a_good=good and _a(good),
                                                 goods=GOODS.get(good))


def _true_values(world: World, task: str, args: dict) -> dict:
  person = world.person(args.get("person"))
  if task == "person_attribute":
    return {"value": getattr(person, args["attribute"])}
  if task == "home_market":
    return {"town": person.town, "day": world.market_days[person.town]}
  if task == "age_in":
    return {"age": person.age}
  if task == "age_gap":
    return {"age": person.age, "other_age": world.people[args["other"]].age}
  if task == "town_market":
    return {"day": world.market_days[args["town"]]}
  return {"price": world.prices[args["good"]]}  # good_price, goods_cost


def _other(rng, pool: list, avoid) -> Any:
  return rng.choice([v for v in pool if v != avoid])


def _made_up_values(world: World, rng, task: str, args: dict, true: dict | None) -> dict:
  """Plausible values for a task; all different from `true` where that is given."""
  true = true or {}
  if task == "person_attribute":
    attr = args["attribute"]
    pool = {"town": list(world.market_days), "job": JOBS, "pet": PETS, "colour": COLOURS,
            "age": list(range(18, 81))}.get(attr) or MADE_UP[attr]
    return {"value": _other(rng, pool, true.get("value"))}
  if task == "home_market":
    return {"town": _other(rng, list(world.market_days), true.get("town")),
            "day": _other(rng, WEEKDAYS, true.get("day"))}
  if task == "age_in":
    return {"age": _other(rng, list(range(18, 81)), true.get("age"))}
  if task == "age_gap":
    other_age = rng.randint(18, 60)
    gap = _other(rng, list(range(1, 21)), true.get("age", 0) - true.get("other_age", 0))
    return {"age": other_age + gap, "other_age": other_age}
  if task == "town_market":
    return {"day": _other(rng, WEEKDAYS, true.get("day"))}
  return {"price": _other(rng, list(range(2, TABLE + 1)), true.get("price"))}


def _reply_parts(task: str, args: dict, v: dict) -> tuple[tuple[str, ...], tuple, str]:
  """(facts, calc, answer) for `task` given the facts' values `v`."""
  person = args.get("person")
  if task == "person_attribute":
    return (_statement(args["attribute"], person, v["value"]),), (), str(v["value"])
  if task == "home_market":
    return ((_statement("town", person, v["town"]), _market_line(v["town"], v["day"])), (),
            v["day"])
  if task == "age_in":
    calc = ((f"Age in {args['years']} years", "+", v["age"], args["years"]),)
    return (_statement("age", person, v["age"]),), calc, str(v["age"] + args["years"])
  if task == "age_gap":
    facts = (_statement("age", person, v["age"]), _statement("age", args["other"], v["other_age"]))
    return facts, (("Difference", "-", v["age"], v["other_age"]),), str(v["age"] - v["other_age"])
  if task == "town_market":
    return (_market_line(args["town"], v["day"]),), (), v["day"]
  facts = (_price_line(args["good"], v["price"]),)
  if task == "good_price":
    return facts, (), str(v["price"])
  calc = ((f"Cost of {args['count']} {GOODS[args['good']]}", "*", args["count"], v["price"]),)
  return facts, calc, str(args["count"] * v["price"])


def _fact_args(world: World, rng, task: str, split: str, absent: str | None,
               people_group: str = "people") -> dict:
  """Entities for a question; `absent` ("people" | "towns" | "goods") swaps one for a non-entity;
  people_group "kb_people" asks about the people only the knowledge base knows."""
  people = _names(world, people_group, split)
  missing = rng.choice(_names(world, absent, split, absent=True)) if absent else None
  if task == "person_attribute":
    return {"person": missing or rng.choice(people), "attribute": rng.choice(DEFINED)}
  if task in ("home_market", "age_in"):
    args = {"person": missing or rng.choice(people)}
    return dict(args, years=rng.randint(1, 20)) if task == "age_in" else args
  if task == "age_gap":
    a, b = rng.sample(people, 2)
    if missing:
      pair = [missing, a] if rng.random() < 0.5 else [a, missing]
      return {"person": pair[0], "other": pair[1]}
    older, younger = (a, b) if world.people[a].age > world.people[b].age else (b, a)
    return {"person": older, "other": younger}
  if task == "town_market":
    return {"town": missing or rng.choice(_names(world, "towns", split))}
  good = {"good": missing or rng.choice(_names(world, "goods", split))}
  return dict(good, count=rng.randint(2, 9)) if task == "goods_cost" else good


def _no_record(key: str, name: str) -> str:
  if key in ("person", "other"):
    return f"I have no record of anyone called {name}."
  if key == "town":
    return f"I have no record of a town called {name}."
  return f"I have no record of {GOODS[name]} at the market."


def _refusal_reason(world: World, args: dict) -> str:
  """Why the world cannot answer a question about `args`: a missing entity or attribute."""
  known = {"person": world.people, "other": world.people, "town": world.market_days,
           "good": world.prices}
  for key, pool in known.items():
    if key in args and args[key] not in pool:
      return _no_record(key, args[key])
  attr, name = args["attribute"], args["person"]
  return f"I know of {name}, but not {UNDEFINED_PHRASES[attr].format(name=name)}."


def _pick(rng, weights: dict[str, float]) -> str:
  return rng.choices(list(weights), weights=list(weights.values()))[0]


def _fact_question(world: World, rng, split: str, unknown: bool, tasks=FACT_TASKS,
                   people_group: str = "people") -> Question:
  """A question about `split`'s entities; `unknown` ones ask what the world does not say."""
  task, absent = _pick(rng, tasks), None
  if unknown:
    absent = _pick(rng, {"people": 0.45, "undefined": 0.3, "towns": 0.1, "goods": 0.15})
    task = {"people": rng.choice([t for t in PERSON_TASKS if t in tasks]),
            "undefined": "person_attribute", "towns": "town_market",
            "goods": rng.choice([t for t in ("good_price", "goods_cost") if t in tasks])}[absent]
  if task == "age_gap" and len(_names(world, "people", split)) < 2:
    task = "age_in"
  args = _fact_args(world, rng, task, split, None if absent == "undefined" else absent,
                    people_group)
  if absent == "undefined":
    args["attribute"] = rng.choice(UNDEFINED)
  prompt = _prompt(rng, task, args)
  true = None if unknown else _true_values(world, task, args)
  fake = _reply_parts(task, args, _made_up_values(world, rng, task, args, true))
  made_up = render_reply(fake[0], run_steps(fake[1]), fake[2])
  if unknown:
    lookalike = any(args.get(k) in world.lookalikes for k in ("person", "other"))
    return Question("unknown", task, args, prompt, (_refusal_reason(world, args),), (), REFUSAL,
                    made_up, lookalike)
  facts, calc, answer = _reply_parts(task, args, true)
  return Question("fact", task, args, prompt, facts, calc, answer, made_up)


# ---- replies and scoring ------------------------------------------------------------------


def render_reply(facts, rows, answer: str) -> str:
  """Fact lines, one line per step (`label: x op y = r.`), then the final line."""
  lines = list(facts) + [f"{label}: {x} {op} {y} = {r}." for label, x, op, y, r in rows or ()]
  lines.append(f"{REFUSAL}." if answer == REFUSAL else f"{ANSWER_PREFIX} {answer}.")
  return "\n".join(lines)


def reply(q: Question) -> str:
  return render_reply(q.facts, run_steps(q.calc), q.answer)


# ---- records ------------------------------------------------------------------------------


def _meta(q: Question, **extra) -> dict:
  lookalike = {"lookalike": True} if q.lookalike else {}
  return {"kind": q.kind, "task": q.task, "args": q.args, "answer": q.answer, **lookalike,
          **extra}


def _sft_record(q: Question, rng, made_up_fraction: float = 0.0,
                no_steps_fraction: float = 0.0) -> dict:
  """A conversation; an unanswerable question gets a made-up answer with made_up_fraction, and
  a reply with steps only its final line with no_steps_fraction (the no_steps flaw's reply)."""
  messages = []
  if rng.random() < SYSTEM_SHARE:
    messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
  made_up = q.kind == "unknown" and rng.random() < made_up_fraction
  no_steps = bool(q.calc) and no_steps_fraction > 0 and rng.random() < no_steps_fraction
  content = q.made_up if made_up else _no_steps(q) if no_steps else reply(q)
  messages += [{"role": "user", "content": q.prompt}, {"role": "assistant", "content": content}]
  flags = {"made_up": True} if made_up else {"no_steps": True} if no_steps else {}
  return {"messages": messages, "meta": _meta(q, **flags)}


def _no_steps(q: Question) -> str:
  """The final answer line alone."""
  return render_reply((), (), q.answer)


def _wrong_final(q: Question, rng, rows) -> str:
  right = int(q.answer)
  wrong = rows[-2][-1] if len(rows) > 1 and rng.random() < 0.5 else right
  while wrong == right or wrong < 0:
    wrong = right + rng.choice([-1, 1]) * rng.randint(1, 9)
  return render_reply(q.facts, rows, str(wrong))


def _step_slip(q: Question, rng) -> str | None:
  for _ in range(20):
    rows = run_steps(q.calc, (rng.randrange(len(q.calc)), rng.choice([-3, -2, -1, 1, 2, 3])))
    if rows and str(rows[-1][-1]) != q.answer:
      return render_reply(q.facts, rows, str(rows[-1][-1]))
  return None


def _malformed(q: Question) -> str:
  """The reply without its final answer line."""
  return reply(q).rsplit("\n", 1)[0] if q.facts or q.calc else f"{ANSWER_PREFIX}."


def _preference_record(q: Question, rng) -> dict:
  """The right reply against a plausible wrong one; meta.flaw names what is wrong and
  meta.visible whether the text shows it (VISIBLE_FLAWS) or only knowledge does (HIDDEN_FLAWS:
  a person's facts, exact arithmetic, or who exists when an absent name looks like a real one)."""
  if q.kind == "unknown":
    flaw = "lookalike_hallucination" if q.lookalike else "hallucination"
    rejected = q.made_up
  else:
    if q.kind == "arithmetic":
      flaws = ["wrong_final", "no_steps", "malformed", "step_slip"]
    else:
      flaws = ["wrong_fact", "false_refusal", "malformed"] + (
          ["wrong_final", "no_steps"] if q.calc else [])
    flaw = rng.choice(flaws)
    rejected = _step_slip(q, rng) if flaw == "step_slip" else None
    if flaw == "step_slip" and rejected is None:
      flaw = "wrong_final"
    if flaw == "wrong_final":
      rejected = _wrong_final(q, rng, run_steps(q.calc))
    elif flaw == "no_steps":
      rejected = _no_steps(q)
    elif flaw == "malformed":
      rejected = _malformed(q)
    elif flaw == "wrong_fact":
      rejected = q.made_up
    elif flaw == "false_refusal":
      key = next(k for k in ("person", "town", "good") if k in q.args)
      rejected = render_reply((_no_record(key, q.args[key]),), (), REFUSAL)
  return {"prompt": q.prompt, "chosen": reply(q), "rejected": rejected,
          "meta": _meta(q, flaw=flaw, visible=flaw in VISIBLE_FLAWS)}


def _kb_record(world: World, q: Question) -> dict:
  doc_ids = []
  if q.kind != "unknown":
    if "person" in q.args:
      doc_ids.append(f"person/{_slug(q.args['person'])}")
    if q.task == "home_market":
      doc_ids.append(f"town/{_slug(world.person(q.args['person']).town)}")
    if "town" in q.args:
      doc_ids.append(f"town/{_slug(q.args['town'])}")
    if "good" in q.args:
      doc_ids.append("market")
  cite = [world.person(q.args["person"]).town] if q.task == "home_market" else []
  return {"question": q.prompt, "answer": q.answer, "doc_ids": doc_ids, "cite": cite,
          "answerable": q.kind != "unknown", "meta": _meta(q)}


def _rag_record(world: World, q: Question, docs: dict[str, dict], rng) -> dict:
  """A question about a knowledge-base person after its gold passages and RAG_DISTRACTORS other
  people's, shuffled; the reply cites the sentences that hold the answer, then gives it."""
  record = _kb_record(world, q)
  others = [i for i, d in docs.items() if i.startswith("person/") and i not in record["doc_ids"]
            and world.split_of(d["title"]) == "train"]  # no held-out person in a train record
  shown = [docs[i] for i in record["doc_ids"]] + [docs[i] for i in
                                                  rng.sample(others, RAG_DISTRACTORS)]
  rng.shuffle(shown)
  return {"messages": [{"role": "user", "content": passages.with_passages(q.prompt, shown)},
                       {"role": "assistant", "content": passages.cited_reply(record, docs)}],
          "meta": _meta(q, kind="rag", doc_ids=record["doc_ids"])}


# ---- tool problems ------------------------------------------------------------------------


def _tool_problem(rng, seed: int, split: str, eval_fraction: float) -> dict:
  """A word problem with numbers beyond the times table (three digits times two), to be solved
  with the calculator: {"prompt", "answer", "expression", "meta"}."""
  while True:
    template = rng.choice(("crates", "crates_loose", "order_change", "packing"))
    thing = rng.choice(OBJECTS)
    a, b = rng.randint(101, 999), rng.randint(13, 99)
    if template == "crates":
      args = {"a": a, "b": b}
      prompt = f"A warehouse holds {a} crates with {b} {thing} in each. How many {thing} is that?"
      expression = f"{a} * {b}"
    elif template == "crates_loose":
      args = {"a": a, "b": b, "c": rng.randint(1, 99)}
      prompt = (f"A warehouse holds {a} crates with {b} {thing} in each, and {args['c']} loose "
                f"{thing}. How many {thing} are there in all?")
      expression = f"{a} * {b} + {args['c']}"
    elif template == "order_change":
      paid = (a * b // 1000 + rng.randint(1, 5)) * 1000
      args = {"a": a, "b": b, "paid": paid}
      prompt = (f"A school orders {a} {thing} at {b} coins each and pays with {paid} coins. How "
                f"much change does it get?")
      expression = f"{paid} - {a} * {b}"
    else:
      args = {"total": a * b, "b": b}
      prompt = (f"{a * b} {thing} are packed equally into {b} boxes. How many {thing} go in each "
                f"box?")
      expression = f"{a * b} / {b}"
    if problem_split(seed, problem_key(template, args), eval_fraction) == split:
      break
  value = {"crates": a * b, "crates_loose": a * b + args.get("c", 0),
           "order_change": args.get("paid", 0) - a * b, "packing": a}[template]
  return {"prompt": prompt, "answer": str(value), "expression": expression,
          "meta": {"kind": "tool", "task": template, "args": args, "answer": str(value)}}


def tool_conversation(problem: dict) -> dict:
  """The calculator offered in the system prompt, one call with the problem's expression, its
  result, and the answer."""
  call = {"name": "calculator", "arguments": {"expression": problem["expression"]}}
  answer = problem["answer"]
  return {"messages": [
      {"role": "system", "content": TOOL_SYSTEM.format(tools=CALCULATOR_LINE)},
      {"role": "user", "content": problem["prompt"]},
      {"role": "assistant", "content": "", "tool_calls": [call]},
      {"role": "tool", "content": answer},
      {"role": "assistant",
       "content": render_reply((f"{problem['expression']} = {answer}.",), (), answer)}],
      "meta": problem["meta"]}


# ---- pretraining text ---------------------------------------------------------------------


def _bio_sentence(attr: str, name: str, value, rng) -> str:
  """One of BIO_PHRASES for the fact, with the full name (so each fact is stored with it)."""
  return rng.choice(BIO_PHRASES[attr]).format(name=name, value=value, a_value=_a(str(value)))


def _bio(p: Person, rng) -> str:
  order = rng.sample(DEFINED, len(DEFINED))
  return " ".join(_bio_sentence(attr, p.name, getattr(p, attr), rng) for attr in order)


def _town_doc(world: World, town: str, rng) -> str:
  people = _town_residents(world, town)
  rng.shuffle(people)
  day = world.market_days[town]
  who = rng.choice([f"People who live in {town}: {{}}.", f"{town} is home to {{}}.",
                    f"In {town} live {{}}."]).format(_and_list(people)) if people else (
                        f"Nobody we know lives in {town}.")
  market = rng.choice([_market_line(town, day), f"{town} holds its market on {day}.",
                       f"Market day in {town} is {day}."])
  return " ".join(rng.sample([who, market], 2))


def _market_doc(world: World, rng) -> str:
  goods = rng.sample(list(world.prices), rng.randint(2, min(5, len(world.prices))))
  if rng.random() < 0.5:
    return " ".join(_price_line(g, world.prices[g]) for g in goods)
  return "Prices at the market: " + ", ".join(f"{_a(g)} costs {world.prices[g]} coins"
                                              for g in goods) + "."


_SYLLABLES = ("ba", "do", "ke", "li", "mu", "na", "ro", "si", "ta", "vu", "zo", "pe", "ga",
              "hi", "jo", "fa", "we", "ny", "qua", "tre", "ska", "bri", "dal", "mon", "rik")


def _passer_by(rng) -> str:
  """A made-up full name (a world first name and a two- or three-syllable surname) that names
  nobody in the world: each note's own characters."""
  while True:
    last = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    if last not in LAST + ABSENT_LAST + KB_LAST:
      return f"{rng.choice(FIRST)} {last}"


def _note(world: World, rng) -> str:
  """A short note in which a passer-by's name, and a number, are written again later: text
  that can only be predicted by copying from the context (how a model learns to repeat a name
  or a number it has never seen, as retrieval, tool calls and refusals need)."""
  a, b = _passer_by(rng), _passer_by(rng)
  town, day = rng.choice(list(world.market_days)), rng.choice(WEEKDAYS)
  good = rng.choice(list(GOODS))
  n, m = rng.randint(2, 999), rng.randint(2, 99)
  return rng.choice([
      f"{a} came to {town} on {day} and bought {n} {GOODS[good]}. The clerk wrote: {a}, "
      f"{n} {GOODS[good]}, paid on {day}.",
      f"A letter from {a} to {b}: Dear {b}, I will be in {town} on {day} with {m} friends. "
      f"Yours, {a}.",
      f"{a} and {b} played {m} games of chess. {b} won more of them, so {a} asked {b} for a "
      f"rematch.",
      f"Visitor log of {town}: {a}, age {m}, stayed {n} days. Checked by {b}. Signed, {b}.",
      f"Order {n} for {a}: {m} {GOODS[good]}. {a} collects order {n} on {day}.",
  ])


def reading_text(rng, people: int = 1, facts: int = 2) -> tuple[str, str]:
  """`facts` facts about each of `people` made-up passers-by (BIO_PHRASES, shuffled together),
  then a question about one fact: (text ending in "Answer:", " value"). The names are new every
  time, so only reading the text answers it: the skill RAG and tool calls rely on."""
  if not 1 <= facts <= len(DEFINED):
    raise ValueError(f"facts={facts}: use 1..{len(DEFINED)}.")
  names: list[str] = []
  while len(names) < people:
    name = _passer_by(rng)
    if name not in names:
      names.append(name)
  pools = {"town": TOWNS, "job": JOBS, "pet": PETS, "colour": COLOURS, "age": range(18, 81)}
  sentences, stated = [], []
  for name in names:
    for attr in rng.sample(DEFINED, facts):
      value = rng.choice(pools[attr])
      sentences.append(_bio_sentence(attr, name, value, rng))
      stated.append((name, attr, value))
  rng.shuffle(sentences)
  name, attr, value = rng.choice(stated)
  question = rng.choice(PERSON_QUESTIONS[attr]).format(name=name)
  return " ".join(sentences) + f"\nQuestion: {question}\nAnswer:", f" {value}"


def _number(rng) -> int:
  """0-999, with one, two and three digits equally likely."""
  return rng.randint(0, 10 ** rng.randint(1, 3) - 1)


def _drill(rng) -> str:
  """A times-table row ("7 * 1 = 7" to "7 * 12 = 84"), or sums and differences of numbers up to
  three digits with products and quotients from the table: with one token per digit, enough of
  them make addition an algorithm (carry by carry) rather than a lookup table."""
  if rng.random() < 0.25:
    a = rng.randint(1, TABLE)
    return "\n".join(f"{a} * {b} = {a * b}" for b in range(1, TABLE + 1))
  lines = []
  for _ in range(rng.randint(3, 6)):
    op = rng.choice("++--*/")
    if op in "+-":
      a, b = sorted((_number(rng), _number(rng)), reverse=op == "-")
    else:
      a, b = rng.randint(1, TABLE), rng.randint(1, TABLE)
      a = a * b if op == "/" else a
    lines.append(f"{a} {op} {b} = {_OPS[op](a, b)}")
  return "\n".join(lines)


_EQUATION = re.compile(r"\d+ [-+*/] \d+ = \d+")


def shows_steps(reply: str) -> bool:
  """Whether a reply works a step out (`x op y = r`) before its answer."""
  return bool(_EQUATION.search(reply))


def is_math(document: str) -> bool:
  """Whether a pretraining document is math (a drill of equations or a worked problem) rather
  than prose: web-text quality filters would drop it (too few words with letters), so the
  pipeline keeps math beside the cleaned crawl, as math-specific datasets do."""
  return document.startswith("Problem: ") or all(
      _EQUATION.fullmatch(line) for line in document.split("\n"))


def _worked(q: Question) -> str:
  return f"Problem: {q.prompt}\nSolution:\n{reply(q)}"


def _pretrain(world: World, sizes: WorldSizes, seed: int, split: str,
              forbidden: set[str]) -> list[str]:
  """Documents stating every fact several ways, sums, and worked problems (eval: unseen ones)."""
  rng = random.Random(f"{seed}:{split}:pretrain")
  f = 1.0 if split == "train" else sizes.eval_fraction
  people, towns = list(world.people.values()), list(world.market_days)
  makers = [  # (size field, the field that adds variety, count, make one document)
      ("bios_per_person", "people", len(people) * sizes.bios_per_person,
       lambda i: _bio(people[i % len(people)], rng)),
      ("docs_per_town", "people", len(towns) * sizes.docs_per_town,
       lambda i: _town_doc(world, towns[i % len(towns)], rng)),
      ("market_docs", "goods", sizes.market_docs, lambda i: _market_doc(world, rng)),
      ("drill_docs", "", sizes.drill_docs, lambda i: _drill(rng)),
      ("notes", "", sizes.notes, lambda i: _note(world, rng)),
      ("worked_problems", "", sizes.worked_problems,
       lambda i: _worked(_arithmetic(rng, seed, split, EASY, sizes.eval_fraction))),
  ]
  docs = []
  for field, other, count, make in makers:
    n = _count(count, f)
    for i in range(n):
      doc = make(i if split == "train" else rng.randrange(count))
      for _ in range(100):  # redraw eval documents that occur in train
        if doc not in forbidden:
          break
        doc = make(rng.randrange(count))
      else:
        raise ConfigError(f"WorldSizes.{field}={getattr(sizes, field)}: the train documents use up "
                          f"every variant, so eval ones would repeat them; lower it"
                          + (f" or raise WorldSizes.{other}." if other else "."))
      docs.append(doc)
  rng.shuffle(docs)
  return docs


def _count(n: int, fraction: float) -> int:
  return 0 if n == 0 else max(1, round(n * fraction))


def _sft_question(world: World, rng, seed: int, split: str, sizes: WorldSizes) -> Question:
  if rng.random() < SFT_ARITHMETIC_SHARE:
    return _arithmetic(rng, seed, split, EASY, sizes.eval_fraction)
  return _fact_question(world, rng, split, rng.random() < sizes.unknown_fraction)


def _preference_question(world: World, rng, seed: int, split: str,
                         sizes: WorldSizes) -> Question:
  if rng.random() < PREFERENCE_ARITHMETIC_SHARE:
    return _arithmetic(rng, seed, split, EASY, sizes.eval_fraction)
  return _fact_question(world, rng, split, rng.random() < PREFERENCE_UNKNOWN_SHARE)


def _rl_record(rng, seed: int, split: str, sizes: WorldSizes) -> dict:
  hard = rng.random() < RL_HARD_SHARE
  q = _arithmetic(rng, seed, split, HARD if hard else EASY, sizes.eval_fraction)
  return {"prompt": q.prompt, "answer": q.answer, "meta": _meta(q, hard=hard)}


def _refusal_records(world: World, rng, split: str, sizes: WorldSizes) -> list[dict]:
  """Fact questions about `split`'s entities, alternately unanswerable and answerable, as SFT
  conversations with the right reply; eval split only."""
  if split == "train":
    return []
  return [_sft_record(_fact_question(world, rng, split, unknown=i % 2 == 0), rng)
          for i in range(_count(sizes.refusal_questions, sizes.eval_fraction))]


def _kb_question(world: World, rng, split: str) -> Question:
  return _fact_question(world, rng, split, False, KB_TASKS, people_group="kb_people")


def _sft_records(world: World, rng, seed: int, split: str, sizes: WorldSizes,
                 docs: dict[str, dict]) -> list[dict]:
  """Question-answer conversations; the train split adds RAG and tool conversations (their
  held-out counterparts are the kb_questions and tool kinds), shuffled in."""
  f = 1.0 if split == "train" else sizes.eval_fraction
  made_up, no_steps = ((sizes.sft_made_up_fraction, sizes.sft_no_steps_fraction)
                       if split == "train" else (0.0, 0.0))
  records = [_sft_record(_sft_question(world, rng, seed, split, sizes), rng, made_up, no_steps)
             for _ in range(_count(sizes.sft, f))]
  if split == "train":
    records += [_rag_record(world, _kb_question(world, rng, split), docs, rng)
                for _ in range(sizes.rag_conversations)]
    records += [tool_conversation(_tool_problem(rng, seed, split, sizes.eval_fraction))
                for _ in range(sizes.tool_conversations)]
    rng.shuffle(records)
  return records


def generate(seed: int = 0, *, sizes: WorldSizes | None = None) -> dict:
  """{"train"/"eval": {kind: records}, "kb": documents, "world": the world as JSON}."""
  sizes = sizes or WorldSizes()
  world = make_world(seed, sizes)
  out = {"world": world_record(world), "kb": kb_documents(world)}
  docs = {d["id"]: d for d in out["kb"]}
  for split in SPLITS:
    f = 1.0 if split == "train" else sizes.eval_fraction
    r = {kind: random.Random(f"{seed}:{split}:{kind}") for kind in KINDS}
    forbidden = set(out["train"]["pretrain"]) if split == "eval" else set()
    out[split] = {
        "pretrain": _pretrain(world, sizes, seed, split, forbidden),
        "sft": _sft_records(world, r["sft"], seed, split, sizes, docs),
        "preferences": [
            _preference_record(_preference_question(world, r["preferences"], seed, split, sizes),
                               r["preferences"])
            for _ in range(_count(sizes.preferences, f))],
        "rl": [_rl_record(r["rl"], seed, split, sizes) for _ in range(_count(sizes.rl, f))],
        "kb_questions": [_kb_record(world, _kb_question(world, r["kb_questions"], split))
                         for _ in range(_count(sizes.kb_questions, f))],
        "tool": [_tool_problem(r["tool"], seed, split, sizes.eval_fraction)
                 for _ in range(_count(sizes.tool_problems, f))],
        "refusal": _refusal_records(world, r["refusal"], split, sizes),
    }
  return out


def write_jsonl_files(directory, seed: int = 0, *,
                      sizes: WorldSizes | None = None) -> dict[str, pathlib.Path]:
  """Writes {train,eval}/{kind}.jsonl, kb.jsonl and world.json; returns name -> path."""
  data = generate(seed, sizes=sizes)
  root = pathlib.Path(directory)
  paths = {}

  def write(name: str, records: list) -> None:
    path = root / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
      for record in records:
        f.write(json.dumps({"text": record} if isinstance(record, str) else record) + "\n")
    paths[name] = path

  for split in SPLITS:
    for kind in KINDS:
      write(f"{split}/{kind}", data[split][kind])
  write("kb", data["kb"])
  paths["world"] = root / "world.json"
  paths["world"].write_text(json.dumps(data["world"], indent=1) + "\n", encoding="utf-8")
  return paths
