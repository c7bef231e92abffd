"""A seeded synthetic world and a text corpus about it: the embedded default data.

The world holds people with a home city, a job, a pet and a favourite colour, plus arithmetic.
Documents state its facts in varied sentences, so a small model can learn real structure
(facts, agreement, sums) and its loss says something. Same seed, same corpus, on any machine.
"""

import dataclasses
import random

FIRST = ["Ada", "Bram", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Juno", "Kai", "Lena",
         "Milo", "Nia", "Omar", "Pia", "Quin", "Rosa", "Sami", "Tova", "Uma", "Vik", "Wren",
         "Yara", "Zed"]
LAST = ["Park", "Okafor", "Silva", "Novak", "Haas", "Ito", "Moreau", "Berg", "Costa", "Quinn"]
CITIES = ["Oslo", "Lima", "Kyoto", "Accra", "Lyon", "Perth", "Quito", "Riga", "Turin", "Hanoi"]
JOBS = ["baker", "pilot", "nurse", "painter", "farmer", "teacher", "chemist", "carpenter"]
PETS = ["cat", "dog", "parrot", "turtle", "rabbit", "goat"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "silver"]


@dataclasses.dataclass(frozen=True)
class Person:
  name: str
  city: str
  job: str
  pet: str
  color: str
  age: int


def make_world(seed: int = 0, num_people: int = 60) -> list[Person]:
  """People with fixed attributes; unique full names."""
  rng = random.Random(seed)
  names = [f"{f} {l}" for f in FIRST for l in LAST]
  rng.shuffle(names)
  return [Person(name, rng.choice(CITIES), rng.choice(JOBS), rng.choice(PETS),
                 rng.choice(COLORS), rng.randint(18, 80)) for name in names[:num_people]]


def _bio(p: Person, rng: random.Random) -> str:
  first = p.name.split()[0]
  facts = [
      rng.choice([f"{p.name} lives in {p.city}.", f"{p.name} has a home in {p.city}."]),
      rng.choice([f"{first} works as a {p.job}.", f"By trade, {first} is a {p.job}."]),
      rng.choice([f"{first} keeps a {p.pet}.", f"The {p.pet} at home belongs to {first}."]),
      f"{first}'s favourite colour is {p.color}.",
      f"{first} is {p.age} years old.",
  ]
  rest = facts[1:]
  rng.shuffle(rest)
  return " ".join([facts[0]] + rest[: rng.randint(2, 4)])


def _arithmetic(rng: random.Random) -> str:
  lines = []
  for _ in range(rng.randint(2, 5)):
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    lines.append(rng.choice([f"{a} plus {b} is {a + b}.", f"{a} + {b} = {a + b}"]))
  return "\n".join(lines)


def _neighbours(world: list[Person], rng: random.Random) -> str:
  city = rng.choice(CITIES)
  people = [p.name for p in world if p.city == city]
  if not people:
    return f"Nobody we know lives in {city}."
  return f"In {city} live: " + ", ".join(sorted(people)) + "."


def generate_corpus(seed: int = 0, num_docs: int = 2000, num_people: int = 60) -> list[str]:
  """`num_docs` documents: biographies, town lists and sums about one seeded world."""
  world = make_world(seed, num_people)
  rng = random.Random(seed + 1)
  docs = []
  for _ in range(num_docs):
    kind = rng.random()
    if kind < 0.6:
      docs.append(_bio(rng.choice(world), rng))
    elif kind < 0.75:
      docs.append(_neighbours(world, rng))
    else:
      docs.append(_arithmetic(rng))
  return docs
