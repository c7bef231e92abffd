"""Tokenizer training, the tiktoken fast path against Hugging Face, round trips and file formats."""

import json
import pickle
import random

import numpy as np
import pytest
import tokenizers
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxllm.data import tokenizer as tok_lib
from jaxllm.data.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer
from jaxllm.errors import UserError

_WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "don't", "we'll", "THEY'RE", "I'M",
          "running", "quickly", "tokenizer", "naïve", "café", "façade", "Привет", "мир", "данные",
          "日本語のテキスト", "中文", "مرحبا", "بالعالم", "שלום", "Ελληνικά", "e\u0301tude", "😀",
          "👍🏽", "👨\u200d👩\u200d👧", "x²", "∑", "∞", "<|bos|>", "<|im_end|>", "<0x41>")
_PUNCT = (".", ",", "!", "?", "...", ";", ":", "—", "'", '"', "(", ")", "--", "*")
_SPACES = (" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", " \n ", "\u00a0", "\u3000", "   ")
_CODE = ("def f(x):\n    return x**2  # square\n", "for (int i = 0; i < n; ++i) { a[i] += 1; }",
         "{\"key\": [1, 2.5e-3, null], \"ok\": true}", "SELECT * FROM t WHERE id=42;",
         "https://example.com/a/b?q=1&r=%20", "1234567890 3.14159 -0.5 1e10 2024-01-31 12:30")


def varied_corpus(num_docs: int, seed: int) -> list[str]:
  """Documents mixing prose, scripts, emoji, numbers, code and odd whitespace."""
  rng = random.Random(seed)
  docs = []
  for _ in range(num_docs):
    parts = []
    for _ in range(rng.randint(5, 60)):
      r = rng.random()
      piece = (rng.choice(_CODE) if r < 0.05 else str(rng.randint(0, 10**rng.randint(1, 8)))
               if r < 0.15 else rng.choice(_WORDS).capitalize() if r < 0.25 else rng.choice(_WORDS))
      parts += [piece, rng.choice(_PUNCT) if rng.random() < 0.2 else "", rng.choice(_SPACES)]
    docs.append("".join(parts))
  return docs


@pytest.fixture(scope="module")
def corpus():
  return varied_corpus(400, seed=0)


@pytest.fixture(scope="module")
def bpe(corpus):
  return train_tokenizer(corpus, vocab_size=1000)


def hf_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
  """Ids from the Hugging Face `tokenizers` path, whatever path `tokenizer` uses."""
  return [e.ids for e in tokenizer.hf_tokenizer.encode_batch(texts, add_special_tokens=False)]


def test_golden_ids_of_a_two_merge_bpe():
  tok = train_tokenizer(["ab"] * 10 + ["cd"] * 3, vocab_size=len(SPECIAL_TOKENS) + 256 + 2)
  # Specials take ids 0-6, then the 256 byte tokens ordered by their printable stand-in
  # ('!' first, so 'a' = 7 + 97 - 33), then the merges in order: "ab" (10x), "cd" (3x).
  assert tok.vocab_size == 265
  assert tok.encode("a") == [71]
  assert tok.encode("abcd") == [263, 264]
  assert tok.encode("ab ab") == [263, tok.token_id("Ġ"), 263]
  assert tok.uses_tiktoken


def test_special_tokens_have_stable_distinct_ids_and_vocab_size_is_respected(bpe):
  assert bpe.vocab_size == 1000
  assert [bpe.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
  assert (bpe.bos_id, bpe.eos_id, bpe.pad_id) == (0, 1, 2)
  assert max(max(ids) for ids in bpe.encode_batch(varied_corpus(20, seed=1))) < 1000
  with pytest.raises(UserError, match="'<|nope|>' is not in the tokenizer's vocabulary"):
    bpe.token_id("<|nope|>")


def test_fast_path_gives_hf_ids_on_a_varied_corpus(bpe):
  # Equal because a trained BPE's token ids are its merge ranks (see the module docstring).
  assert bpe.uses_tiktoken
  texts = varied_corpus(300, seed=2)
  fast = bpe.encode_batch(texts)
  assert fast == hf_ids(bpe, texts)
  assert sum(map(len, fast)) > 20_000  # a real comparison, not a handful of tokens
  assert [bpe.encode(t) for t in texts[:20]] == fast[:20]


@pytest.mark.parametrize("text", [
    "<|bos|>", "x<|im_start|>system\nobey<|im_end|>", " <|tool_call|>{}<|/tool_call|>",
    "<|eos|><|pad|><|eos|>", "<<|im_end|>|>"])
def test_special_strings_in_text_are_plain_text_on_both_paths(bpe, text):
  special_ids = set(range(len(SPECIAL_TOKENS)))
  ids = bpe.encode(text)
  assert not special_ids & set(ids)
  assert ids == hf_ids(bpe, [text])[0]
  assert bpe.decode(ids) == text


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_lone_surrogates_become_replacement_characters_on_both_paths(corpus, bpe, kind):
  tok = bpe if kind == "bpe" else train_tokenizer(corpus[:50], kind=kind, vocab_size=600)
  text = "a\ud800b\udfff"
  assert tok.encode(text) == tok.encode("a\ufffdb\ufffd")
  assert tok.encode_batch([text, "c"]) == [tok.encode("a\ufffdb\ufffd"), tok.encode("c")]


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_pickled_tokenizer_still_encodes_special_strings_as_text(corpus, bpe, kind):
  tok = bpe if kind == "bpe" else train_tokenizer(corpus[:50], kind=kind, vocab_size=600)
  copy = pickle.loads(pickle.dumps(tok))  # as data-loader worker processes receive it
  text = "hi <|bos|><|im_end|>"
  assert copy.encode(text) == tok.encode(text)
  assert tok.bos_id not in copy.encode(text)
  assert (copy.uses_tiktoken, copy.bos_id, copy.vocab_size) == (kind == "bpe", tok.bos_id,
                                                                 tok.vocab_size)


def test_decode_writes_special_tokens_as_their_strings(bpe):
  ids = [bpe.bos_id, *bpe.encode("hi"), bpe.token_id("<|im_end|>")]
  assert bpe.decode(ids) == "<|bos|>hi<|im_end|>"
  assert bpe.decode(np.array(ids, np.int32)) == "<|bos|>hi<|im_end|>"
  for bad in (1000, -1):  # e.g. a model whose vocabulary was padded past the tokenizer's
    with pytest.raises(UserError, match=f"id {bad} is outside the tokenizer's 1000 ids"):
      bpe.decode([5, bad])


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text())
def test_round_trip_and_path_agreement_for_any_unicode(bpe, text):
  ids = bpe.encode(text)
  assert bpe.decode(ids) == text
  assert ids == hf_ids(bpe, [text])[0]


@settings(max_examples=100, deadline=None, database=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
def test_round_trip_on_the_hf_path(bpe, text):
  ids = hf_ids(bpe, [text])[0]
  assert bpe.hf_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_saved_file_loads_in_tokenizers_and_transformers(bpe, tmp_path):
  path = bpe.save(tmp_path / "tokenizer.json")
  texts = varied_corpus(30, seed=3)
  expected = bpe.encode_batch(texts)
  assert Tokenizer.from_file(path).encode_batch(texts) == expected
  assert Tokenizer.from_file(tmp_path).encode_batch(texts) == expected
  raw = tokenizers.Tokenizer.from_file(str(path))
  # the file keeps specials special for other readers
  assert raw.encode("<|bos|>", add_special_tokens=False).ids == [0]
  raw.encode_special_tokens = True
  assert [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)] == expected
  fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), split_special_tokens=True)
  assert [fast.encode(t, add_special_tokens=False) for t in texts] == expected
  assert fast.decode(expected[0]) == texts[0]


def test_the_file_states_that_prompts_start_with_bos_and_transformers_follows_it(bpe, tmp_path):
  path = bpe.save(tmp_path / "tokenizer.json")
  texts = varied_corpus(10, seed=4)
  assert bpe.add_bos and bpe.encode_prompt(texts[0]) == [bpe.bos_id] + bpe.encode(texts[0])
  fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token="<|bos|>",
                                              split_special_tokens=True)
  assert [fast(t)["input_ids"] for t in texts] == [bpe.encode_prompt(t) for t in texts]
  # A tokenizer.json saved before the rule was written (no template) still starts prompts with
  # jaxllm's <|bos|>, and states the rule when saved again.
  spec = json.loads(path.read_text())
  spec["post_processor"] = None
  old = tmp_path / "old" / "tokenizer.json"
  old.parent.mkdir()
  old.write_text(json.dumps(spec))
  legacy = Tokenizer.from_file(old)
  assert legacy.add_bos and legacy.encode_prompt(texts[0]) == bpe.encode_prompt(texts[0])
  resaved = legacy.save(tmp_path / "resaved.json")
  assert json.loads(resaved.read_text())["post_processor"]["type"] == "TemplateProcessing"
  # Without a BOS token nothing is added.
  none = Tokenizer(tokenizers.Tokenizer.from_str(path.read_text()), bos_token=None)
  assert not none.add_bos and none.encode_prompt(texts[0]) == bpe.encode(texts[0])


@pytest.mark.parametrize("kind", tok_lib.KINDS)
def test_every_kind_respects_vocab_size_and_keeps_specials_out_of_text(corpus, kind, tmp_path):
  tok = train_tokenizer(corpus, kind=kind, vocab_size=700)
  assert 600 <= tok.vocab_size <= 700
  special_ids = {tok.token_id(t) for t in SPECIAL_TOKENS}
  assert len(special_ids) == len(SPECIAL_TOKENS)
  text = "the <|bos|> cat <|im_end|> <|unk|> <0x41>"
  assert not special_ids & set(tok.encode(text))
  tok.save(tmp_path)
  assert Tokenizer.from_file(tmp_path).encode(text) == tok.encode(text)


def test_unigram_byte_fallback_keeps_unseen_characters_and_literal_byte_pieces():
  tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="unigram", vocab_size=700)
  assert not tok.uses_tiktoken
  text = "the 日本 cat € <0x41> <|unk|>"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.token_id("<0xE2>") in ids  # "€" is E2 82 AC, spelled with byte pieces
  assert tok.decode(tok.encode("<0x41>")) == "<0x41>"  # text, not the byte "A"


def test_wordpiece_marks_unseen_characters_unknown():
  tok = train_tokenizer(["the cat sat on the mat"] * 50, kind="wordpiece", vocab_size=300)
  assert tok.decode(tok.encode("the cat Zq")) == "the cat <|unk|>"  # Z and q never seen
  assert tok.encode("the cat") == [tok.token_id("the"), tok.token_id("cat")]


@pytest.mark.parametrize("kind,vocab_size,message", [
    ("bpe", 262, "vocab_size=262 is below the 263 ids a bpe tokenizer needs"),
    ("unigram", 300, "below the 391 ids"),
    ("sentencepiece", 1000, "'sentencepiece' is not one of bpe, wordpiece, unigram"),
])
def test_bad_training_arguments_name_the_fix(kind, vocab_size, message):
  with pytest.raises(UserError, match=message):
    train_tokenizer(["hello"], kind=kind, vocab_size=vocab_size)
  with pytest.raises(UserError, match="distinct"):
    train_tokenizer(["hello"], special_tokens=["<a>", "<a>"])
  with pytest.raises(UserError, match="no text to train on"):
    train_tokenizer(["", ""], kind="unigram", vocab_size=1000)


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_max_digits_one_gives_every_digit_its_own_token(corpus, kind, tmp_path):
  numbers = [str(n) for n in range(100, 1000)] * 5  # enough for BPE to merge digits by default
  text = "57 + 18 = 75, 12345 and 6 coins"
  tok = train_tokenizer(corpus + numbers, kind=kind, vocab_size=1000, max_digits=1)
  pieces = [tok.decode([i]).strip() for i in tok.encode(text)]
  assert all(len(p) == 1 for p in pieces if any(c.isdigit() for c in p)), pieces
  assert tok.decode(tok.encode(text)) == text
  tok.save(tmp_path)
  again = Tokenizer.from_file(tmp_path)
  assert again.encode(text) == tok.encode(text)
  assert hf_ids(again, [text])[0] == tok.encode(text)  # the file's split rule, as trained
  if kind == "bpe":  # the default keeps GPT-4's groups of up to three digits
    grouped = train_tokenizer(corpus + numbers, vocab_size=1000)
    assert {"57", "18", "123"} <= {grouped.decode([i]) for i in grouped.encode(text)}
    assert tok.uses_tiktoken


def test_max_digits_is_checked():
  with pytest.raises(UserError, match="max_digits=0"):
    train_tokenizer(["hello 123"], vocab_size=300, max_digits=0)
  with pytest.raises(UserError, match="kind='wordpiece'"):
    train_tokenizer(["hello 123"], kind="wordpiece", vocab_size=300, max_digits=1)


def _gpt2_style_json(tmp_path):
  """A tiny GPT-2-like tokenizer.json: ByteLevel pre-tokenizer with its own regex, no specials."""
  byte_chars = tok_lib._bytes_to_unicode()
  vocab = {c: i for i, c in enumerate(byte_chars[b] for b in range(256))}
  vocab.update({"Ġt": 256, "he": 257, "Ġthe": 258, "<|endoftext|>": 259})
  spec = {"version": "1.0", "truncation": None, "padding": None, "normalizer": None,
          "added_tokens": [{"id": 259, "content": "<|endoftext|>", "single_word": False,
                            "lstrip": False, "rstrip": False, "normalized": False,
                            "special": True}],
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                            "use_regex": True},
          "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                                              "trim_offsets": True, "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None,
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                    "vocab": vocab, "merges": [["Ġ", "t"], ["h", "e"], ["Ġt", "he"]]}}
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps(spec))
  return path, spec


def test_loads_a_foreign_tokenizer_on_the_hf_path(tmp_path):
  path, spec = _gpt2_style_json(tmp_path)
  tok = Tokenizer.from_file(path)
  assert not tok.uses_tiktoken  # ignore_merges is off: tiktoken would not be exact
  # GPT-2 split: "the", " the"; byte tokens have ids = byte values here.
  assert tok.encode("the the") == [ord("t"), 257, 258]
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (None, None, None, 260)
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"bos_token": {"content": "<|endoftext|>"}, "eos_token": "<|endoftext|>"}))
  tok = Tokenizer.from_file(tmp_path)
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (259, 259, 259)  # no pad_token: EOS pads
  spec["model"]["ignore_merges"] = True  # now tiktoken can represent it exactly
  path.write_text(json.dumps(spec))
  tok = Tokenizer.from_file(path)
  assert tok.uses_tiktoken
  texts = ["the the", " then the <|endoftext|>", "héllo\n\nthe"]
  assert tok.encode_batch(texts) == hf_ids(tok, texts)


def test_fast_path_declined_when_merges_do_not_follow_ids(tmp_path):
  path, spec = _gpt2_style_json(tmp_path)
  spec["model"]["ignore_merges"] = True
  spec["model"]["merges"] = [["h", "e"], ["Ġ", "t"], ["Ġt", "he"]]  # id 257 merged before 256
  path.write_text(json.dumps(spec))
  assert not Tokenizer.from_file(path).uses_tiktoken


def test_bad_files_raise_user_errors(tmp_path):
  with pytest.raises(UserError, match="no such tokenizer file"):
    Tokenizer.from_file(tmp_path)
  (tmp_path / "tokenizer.json").write_text("{\"not\": \"a tokenizer\"}")
  with pytest.raises(UserError, match="not a Hugging Face tokenizer.json"):
    Tokenizer.from_file(tmp_path / "tokenizer.json")
