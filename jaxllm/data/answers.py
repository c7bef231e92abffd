"""The one answer checker: the final answer of a reply, compared with the reference answer.

A reply states its final answer as "The answer is X." (style "line", the embedded world's
format) or as <answer>X</answer> (style "tag"), or declines with "I don't know." The world's
scoring of eval replies (jaxllm/eval/qa.py), the RL verifier (jaxllm/rl/rewards.py) and the
on-policy preference pairs (jaxllm/rl/policy_pairs.py) all check replies here:

- `final_answer`: the text X of the last final answer (the line's first sentence).
- `answers_match`: numbers by value ("1,200.50" = "$1200.5" = "1200.5 coins"), anything else by
  normalised text (case, edge punctuation and a leading article ignored).
- `is_refusal`: says "I don't know" and gives no other final answer.
- `score`: 1.0 when the reply's final answer matches; when the reference is "I don't know",
  when the reply refuses.
- `well_formatted`: the reply ends with its one final answer (or a refusal).
"""

import re

REFUSAL = "I don't know"
STYLES = ("line", "tag")

_NUMBER = re.compile(r"^[+-]?\$?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?$")
_CANONICAL_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(\.\d+)?")
_LINE = re.compile(r"the answer is\s*:?\s*(.*)", re.IGNORECASE)
_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_REFUSALS = ("i don't know", "i do not know")


def normalize(answer: str) -> str:
  """Lower case, no edge punctuation or leading article; numbers canonical ("1,200.0" -> "1200")."""
  s = " ".join(answer.replace("\u2019", "'").lower().split()).strip(" *_`\"'.!")
  s = re.sub(r"^(a|an|the)\s+", "", s)
  number = _CANONICAL_NUMBER.match(s)
  if number and (number.end() == len(s) or re.fullmatch(r"[a-z ]+", s[number.end():].strip())):
    value = float(number.group().replace(",", "").replace("$", ""))
    return str(int(value)) if value.is_integer() else str(value)
  return s


def parse_number(text: str) -> float | None:
  """The value of a number written as text, or None: "1,234", "-5", "+3", "3.50", ".5",
  "$12", "-$4", "\u22127" (a minus sign), with spaces, a trailing period or a trailing unit
  word ("12 apples") allowed. "1,23" (a misplaced comma) is not a number."""
  s = text.strip().replace("\u2212", "-").replace("\u2013", "-")
  s = re.sub(r"\s+[A-Za-z][A-Za-z ]*$", "", s).rstrip(".").strip()
  s = s.replace("$-", "-$")
  s = re.sub(r"^([+-])\s+", r"\1", s)
  if not s or not _NUMBER.match(s) or not re.search(r"\d", s):
    return None
  return float(s.replace(",", "").replace("$", ""))


def final_answer(reply: str, style: str = "line") -> str | None:
  """The text of the last final answer in `reply` (None when there is none): X of "The answer
  is X." up to the sentence's end (style "line"), or of <answer>X</answer> (style "tag")."""
  if style == "line":
    found = [m.group(1) for m in _LINE.finditer(reply)]
    if not found:
      return None
    text = re.split(r"\.(\s|$)", found[-1].split("\n")[0], maxsplit=1)[0]
  elif style == "tag":
    found = _TAG.findall(reply)
    if not found:
      return None
    text = found[-1]
  else:
    raise ValueError(f"answer style {style!r} is not one of {STYLES}.")
  return text.strip() or None


def extract_answer(reply: str, style: str = "line") -> str | None:
  """The normalised final answer (None when there is none)."""
  found = final_answer(reply, style)
  return (normalize(found) or None) if found is not None else None


def answers_match(predicted: str | None, reference: str) -> bool:
  """Numbers by value (relative tolerance 1e-9), anything else by normalised text."""
  if predicted is None:
    return False
  a, b = parse_number(predicted), parse_number(reference)
  if a is not None and b is not None:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))
  return normalize(predicted) == normalize(reference)


def is_refusal(reply: str, style: str = "line") -> bool:
  """Says "I don't know" (or "I do not know") and gives no other final answer."""
  text = reply.replace("\u2019", "'").lower()
  return (any(r in text for r in _REFUSALS)
          and extract_answer(reply, style) in (None, *_REFUSALS))


def score(reply: str, answer: str, style: str = "line") -> float:
  """1.0 when the reply's final answer is `answer` (a refusal when the answer is I don't know)."""
  if normalize(answer) == normalize(REFUSAL):
    return float(is_refusal(reply, style))
  if is_refusal(reply, style):
    return 0.0
  return float(answers_match(final_answer(reply, style), answer))


def well_formatted(reply: str, style: str = "line") -> float:
  """1.0 when the reply's last non-empty line is its one final answer ("The answer is X." or
  "I don't know.") for "line", or it ends with its one <answer>X</answer> for "tag"."""
  text = reply.strip()
  if style == "tag":
    return float(len(_TAG.findall(text)) == 1 and text.endswith("</answer>")
                 and bool(final_answer(text, "tag")))
  lines = [line.strip() for line in text.split("\n") if line.strip()]
  if not lines or len(_LINE.findall(text)) > 1:
    return 0.0
  last = lines[-1]
  return float(bool(re.fullmatch(r"the answer is\s*:?\s*\S.*\.", last, re.IGNORECASE))
               or last.lower().rstrip(".") in _REFUSALS)
