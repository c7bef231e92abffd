"""The world's pretraining documents dressed as a small web crawl, with junk planted in it, so
the cleaning stage has real work to do and its result can be checked against the labels.

Pages join the world's train documents (in order) until each has at least `min_words` words,
under URLs of one made-up site. Every record carries metadata["planted"]:

| planted        | what it is                                        | the step that should act |
|----------------|---------------------------------------------------|--------------------------|
| page           | a page of world documents                         | none: kept               |
| html           | a page served as HTML with a menu and a footer    | html: kept, as text      |
| pii            | a page with an e-mail address and a phone number  | pii: kept, masked        |
| duplicate      | an exact copy of an earlier page at another URL   | exact_dedup              |
| near_duplicate | a copy of an earlier page with a date line added  | minhash_dedup            |
| foreign        | a paragraph in German, French or Spanish          | language                 |
| spam           | one advertising line repeated                     | gopher_repetition        |
| stub           | a few menu words                                  | gopher_quality           |
| blocked_url    | a page under a URL with a banned word             | url                      |

Copies always come after their original, so dedup (which keeps the first of a group) drops the
copy. `check(records_in, kept_ids)` compares the cleaned output with the labels.
"""

import random
from collections import Counter
from collections.abc import Iterable, Sequence

KEPT_KINDS = ("page", "html", "pii")
DROPPED_KINDS = ("duplicate", "near_duplicate", "foreign", "spam", "stub", "blocked_url")

FOREIGN = (
    "Der kleine Markt in unserer Stadt ist jeden Samstag geöffnet. Die Bauern bringen frisches "
    "Gemüse, Brot und Käse, und viele Familien kaufen dort für die ganze Woche ein. Im Sommer "
    "gibt es auch Erdbeeren und Kirschen, die sehr schnell verkauft sind.",
    "Mein Nachbar arbeitet seit vielen Jahren als Lehrer an der Schule am Fluss. Er erzählt gern "
    "von seinen Schülern und von den Reisen, die er mit ihnen in die Berge gemacht hat.",
    "Le marché du village ouvre ses portes chaque mardi matin. Les habitants viennent acheter "
    "des fruits, des légumes et du pain encore chaud, puis ils restent souvent pour discuter "
    "autour d'un café avec leurs voisins.",
    "Ma grand-mère habite dans une petite maison près de la rivière. Elle garde deux chats et "
    "cultive des tomates dans son jardin, qu'elle partage volontiers avec toute la famille.",
    "La biblioteca del barrio abre todos los días excepto el domingo. Los niños vienen después "
    "de la escuela para leer cuentos, y los mayores buscan periódicos y novelas para llevar a "
    "casa durante la semana.",
    "Mi hermano trabaja como panadero desde hace diez años. Se levanta muy temprano cada mañana "
    "para preparar el pan, y a las siete la tienda ya huele a pan recién hecho.",
)
SPAM_LINES = ("Buy cheap coins now, best price, click here!", "Win a free cart today, limited "
              "offer, sign up now!", "Hot deals on marbles, do not miss out, click the link!")
STUBS = ("Home | About | Contact", "Login or register to continue.", "Page 2 of 40. Next page.",
         "Loading...", "Cookies help us deliver our services.")


def _html(title: str, text: str) -> str:
  paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
  return (f"<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a> "
          f"<a href='/towns'>Towns</a> <a href='/people'>People</a></nav><main><article>"
          f"<h1>{title}</h1>{paragraphs}</article></main><footer>Copyright the town "
          "archive. All rights reserved.</footer></body></html>")


def pages(documents: Sequence[str], min_words: int = 80) -> list[str]:
  """Documents joined (blank line between) until each page has min_words words; a short tail
  joins the last page."""
  out, current, words = [], [], 0
  for doc in documents:
    current.append(doc)
    words += len(doc.split())
    if words >= min_words:
      out.append("\n\n".join(current))
      current, words = [], 0
  if current:
    if out:
      out[-1] += "\n\n" + "\n\n".join(current)
    else:
      out.append("\n\n".join(current))
  return out


def make_crawl(documents: Sequence[str], seed: int = 0, *, min_words: int = 80,
               junk_fraction: float = 0.25) -> list[dict]:
  """JSONL records {"text", "id", "url", "metadata": {"planted", "format"?}}: the pages, then
  junk pages numbering about junk_fraction of them, spread over the kinds."""
  rng = random.Random(f"crawl:{seed}")
  site = f"https://world-{seed}.example"
  records = []
  for i, text in enumerate(pages(documents, min_words)):
    kind = rng.choices(KEPT_KINDS, weights=(0.9, 0.05, 0.05))[0]
    record = {"text": text, "id": f"page-{i:05d}", "url": f"{site}/archive/{i}",
              "metadata": {"planted": kind}}
    if kind == "html":
      record["text"] = _html(f"Archive page {i}", text)
      record["metadata"]["format"] = "html"
    elif kind == "pii":
      record["text"] = (f"{text}\n\nWrite to the archive at keeper{i}@archive-mail.org or call "
                        f"555-01{i % 100:02d}-{1000 + i}.")
    records.append(record)
  originals = [r for r in records if r["metadata"]["planted"] == "page"]
  n = max(1, round(len(records) * junk_fraction / len(DROPPED_KINDS)))
  junk = []
  for j in range(n):
    source = rng.choice(originals)
    junk.append(("duplicate", source["text"], f"{site}/mirror/{j}"))
    source = rng.choice(originals)
    junk.append(("near_duplicate", source["text"] + f"\n\nUpdated on day {rng.randrange(1, 30)}.",
                 f"{site}/copy/{j}"))
    junk.append(("foreign", FOREIGN[j % len(FOREIGN)] + f" ({j})", f"{site}/intl/{j}"))
    line = SPAM_LINES[j % len(SPAM_LINES)]
    junk.append(("spam", "\n".join([line] * rng.randrange(15, 30)), f"{site}/deals/{j}"))
    junk.append(("stub", STUBS[j % len(STUBS)], f"{site}/menu/{j}"))
    junk.append(("blocked_url", rng.choice(originals)["text"].split("\n\n")[0] + f" ({j})",
                 f"https://free-xxx-{j}.example/page"))
  for j, (kind, text, url) in enumerate(junk):
    records.append({"text": text, "id": f"{kind}-{j:05d}", "url": url,
                    "metadata": {"planted": kind}})
  return records


def check(records_in: Iterable[dict], kept_ids: Iterable[str]) -> dict:
  """Per planted kind of records_in: pages in, kept (their ids among kept_ids) and the
  fraction; plus "content_kept" (kept / in over the kinds that should stay) and "junk_removed"
  (dropped / in over the kinds that should go)."""
  planted = {r["id"]: r["metadata"]["planted"] for r in records_in}
  total = Counter(planted.values())
  kept = Counter(planted[i] for i in kept_ids if i in planted)
  out = {kind: {"in": total[kind], "kept": kept[kind],
                "kept_fraction": kept[kind] / total[kind] if total[kind] else None}
         for kind in KEPT_KINDS + DROPPED_KINDS}
  content = sum(total[k] for k in KEPT_KINDS)
  junk = sum(total[k] for k in DROPPED_KINDS)
  out["content_kept"] = sum(kept[k] for k in KEPT_KINDS) / content if content else None
  out["junk_removed"] = 1 - sum(kept[k] for k in DROPPED_KINDS) / junk if junk else None
  return out
