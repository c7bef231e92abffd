"""Crafted test documents: varied English prose that passes every filter, and non-English text."""

import random

_WORDS = ["the", "of", "and", "to", "with", "that", "have", "be", "river", "garden", "bridge",
          "teacher", "village", "doctor", "market", "winter", "summer", "evening", "morning",
          "letter", "window", "kitchen", "harbour", "forest", "mountain", "church", "school",
          "carried", "painted", "repaired", "described", "discovered", "measured", "questioned",
          "remembered", "collected", "borrowed", "examined", "wrote", "found", "built", "opened",
          "closed", "walked", "watched", "heard", "brought", "quiet", "careful", "bright",
          "ancient", "narrow", "heavy", "gentle", "patient", "famous", "empty", "crowded",
          "distant", "golden", "wooden", "broken", "early", "late", "slowly", "quickly",
          "together", "because", "although", "while", "before", "after", "during", "across",
          "under", "through", "family", "friends", "children", "neighbours", "travellers",
          "workers", "sailors", "farmers", "students", "musicians", "story", "journey",
          "festival", "harvest", "season", "weather", "history", "island", "valley", "coast",
          "road", "station"]


def english_doc(seed: int, sentences: int = 12) -> str:
  """English-looking prose from a fixed vocabulary, distinct per seed (~1 KB)."""
  rng = random.Random(seed)
  out = []
  for i in range(sentences):
    words = [rng.choice(_WORDS) for _ in range(rng.randrange(9, 15))]
    out.append(" ".join(words).capitalize() + ".")
    out.append("\n" if i % 4 == 3 else " ")
  return "".join(out).strip()


GERMAN = ("Die Stadt liegt an einem breiten Fluss, und im Sommer kommen viele Besucher, um die "
          "alten Häuser und die Brücken zu sehen. Am Abend sitzen die Leute in den Gärten, trinken "
          "Wein und sprechen über das Wetter, die Arbeit und ihre Familien. Im Winter ist es "
          "ruhig, und nur wenige Geschäfte haben lange geöffnet.")
FRENCH = ("La ville se trouve au bord d'une large rivière, et en été de nombreux visiteurs "
          "viennent voir les vieilles maisons et les ponts. Le soir, les habitants s'assoient dans "
          "les jardins, boivent du vin et parlent du temps, du travail et de leurs familles. En "
          "hiver, tout est calme et peu de magasins restent ouverts tard.")
