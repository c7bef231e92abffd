"""Subword tokenizers: train byte-level BPE (or WordPiece, Unigram), load any tokenizer.json.

A `Tokenizer` wraps a Hugging Face `tokenizers.Tokenizer` (the format on disk is its
tokenizer.json). Byte-level BPE splits text with the GPT-4 (cl100k) pattern, then merges bytes, so
any Unicode string round-trips exactly.

Fast path: when the tokenizer is a byte-level BPE that tiktoken can represent exactly, encoding
goes through tiktoken (about 5x faster than `tokenizers` on one core), otherwise through
`tokenizers`. The two give the same ids because a trained BPE numbers its tokens in merge order:
the token made by merge i gets id `first_merge_id + i`. tiktoken merges, within each piece of the
split, the adjacent pair whose concatenation has the lowest rank; with rank = token id that is the
pair `tokenizers` merges first (lowest merge index). Both look a whole piece up first when it is
itself a token (tiktoken always does; the trained model sets `ignore_merges`). `_tiktoken_encoding`
checks these conditions on the tokenizer.json and declines the fast path when one fails. (tiktoken
would also join a pair that spells a token some other merge made; training does not leave such
pairs to be found, and the tests compare both paths on varied text and random Unicode.)

Special tokens (`SPECIAL_TOKENS`) are never produced from text: `encode` treats their strings as
plain text on both paths, so user content cannot inject them; code that needs one asks
`token_id`. `<|im_start|>`/`<|im_end|>` frame chat messages and `<|tool_call|>`/`<|/tool_call|>`
enclose one JSON tool call in an assistant message (see jaxllm/data/chat.py); `add_special_tokens`
adds such tokens to an imported tokenizer (jaxllm/interop/hf_tokenizer.py).

BOS rule: `add_bos` says whether a plain prompt starts with the BOS token, read from tokenizer.json
as transformers reads it (its post-processor's template for a single text: Llama 2 and 3 add BOS,
GPT-2 names <|endoftext|> as BOS but adds nothing, Qwen has none). Tokenizers trained here state
the rule in a TemplateProcessing post-processor ("<|bos|> $A"), so `tokenizer(prompt)` in
transformers gives `encode_prompt(prompt)`. (A tokenizer.json saved here before the rule was
written has jaxllm's <|bos|> and no template: it adds BOS, and states so when saved again.)
Documents in training and perplexity always start with BOS when there is one (`bos_ids`).

`encode_inside` encodes a text that sits inside a longer input (a chat message, after a special
token or after other text) as tokenizing the whole input would; it differs from `encode` only for
SentencePiece-style tokenizers (Llama 2, Mistral, our Unigram), which put a "▁" before a text.
"""

import contextlib
import json
from collections.abc import Iterable, Sequence

import tiktoken
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from jaxllm import storage
from jaxllm.errors import UserError

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_CALL, TOOL_CALL_END = "<|tool_call|>", "<|/tool_call|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, IM_START, IM_END, TOOL_CALL, TOOL_CALL_END)
UNK = "<|unk|>"  # added for WordPiece and Unigram, which need an unknown-token id
KINDS = ("bpe", "wordpiece", "unigram")

# GPT-4 (cl100k) split: contractions, words with one leading non-letter, up to 3 digits,
# punctuation runs, newlines, other whitespace. Both regex engines (onig in tokenizers,
# fancy-regex in tiktoken) read it the same way.
def split_pattern(max_digits: int = 3) -> str:
  """The GPT-4 split with numbers cut into pieces of at most `max_digits` digits (3 as in GPT-4
  and Llama 3; 1 as in Llama 2, Mistral and Gemma, so every digit is its own token and sums can
  be learned digit by digit)."""
  digits = r"\p{N}" if max_digits == 1 else rf"\p{{N}}{{1,{max_digits}}}"
  return (r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|" + digits
          + r"| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")


GPT4_SPLIT_PATTERN = split_pattern(3)
# What ByteLevel(use_regex=True) splits with (GPT-2 tokenizers).
GPT2_SPLIT_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                      r"""|\s+(?!\S)|\s+""")
_NUM_BYTES = 256
_UNREACHABLE_SCORE = -1e9  # Unigram log-prob of byte pieces and unk: used only where nothing fits


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character map used by ByteLevel tokenizers."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  extra = [b for b in range(_NUM_BYTES) if b not in printable]
  return {**{b: chr(b) for b in printable},
          **{b: chr(_NUM_BYTES + i) for i, b in enumerate(extra)}}


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def _byte_level_bytes(token: str) -> bytes | None:
  """The bytes a ByteLevel token stands for; None when it is not in the byte alphabet."""
  try:
    return bytes(_UNICODE_TO_BYTE[c] for c in token)
  except KeyError:
    return None


def _split_pattern(pre_tokenizer: dict | None) -> str | None:
  """The regex of a byte-level pre-tokenizer (Split + ByteLevel, or ByteLevel alone)."""
  if not pre_tokenizer:
    return None
  if pre_tokenizer["type"] == "ByteLevel":
    ok = pre_tokenizer.get("use_regex", True) and not pre_tokenizer.get("add_prefix_space")
    return GPT2_SPLIT_PATTERN if ok else None
  if pre_tokenizer["type"] != "Sequence" or len(pre_tokenizer["pretokenizers"]) != 2:
    return None
  split, byte_level = pre_tokenizer["pretokenizers"]
  if (split["type"] != "Split" or "Regex" not in split["pattern"] or split["invert"]
      or split["behavior"] != "Isolated" or byte_level["type"] != "ByteLevel"
      or byte_level.get("use_regex", True) or byte_level.get("add_prefix_space")):
    return None
  return split["pattern"]["Regex"]


def _tiktoken_encoding(spec: dict) -> tiktoken.Encoding | None:
  """An exact tiktoken equivalent of a tokenizer.json dict, or None when there is none."""
  model = spec["model"]
  pattern = _split_pattern(spec.get("pre_tokenizer"))
  if (model["type"] != "BPE" or pattern is None or spec.get("normalizer")
      or (spec.get("decoder") or {}).get("type") != "ByteLevel" or model.get("dropout")
      or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
      or not model.get("ignore_merges")):
    return None
  added = spec.get("added_tokens", [])
  if not all(t["special"] for t in added):  # non-special added tokens would split text on HF only
    return None
  specials = {t["content"]: t["id"] for t in added}
  ranks = {}
  for token, token_id in model["vocab"].items():
    if token in specials:
      continue
    token_bytes = _byte_level_bytes(token)
    if token_bytes is None:
      return None
    ranks[token_bytes] = token_id
  if sum(len(b) == 1 for b in ranks) != _NUM_BYTES:
    return None
  # Every longer token is made by exactly one merge, and ids grow along the merge list.
  made, last_id = set(), -1
  for merge in model["merges"]:
    left, right = merge.split(" ") if isinstance(merge, str) else merge
    token_id = model["vocab"].get(left + right)
    if token_id is None or token_id <= last_id:
      return None
    made.add(left + right)
    last_id = token_id
  if len(made) != len(ranks) - _NUM_BYTES:
    return None
  try:
    return tiktoken.Encoding("jaxllm", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens=specials)
  except ValueError:  # a pattern fancy-regex cannot compile, or clashing ids
    return None


def _replace_surrogates(text: str) -> str:
  """`text` with lone surrogates replaced by U+FFFD (what tiktoken does before encoding)."""
  return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _without_prefix(spec: dict, *, only_first: bool) -> dict | None:
  """`spec` without the "▁" a SentencePiece-style tokenizer puts before a text
  (a Prepend normalizer, a Metaspace pre-tokenizer's prepend_scheme); with `only_first`, without
  only a Metaspace "first" prefix (which goes before the start of the whole input, so never
  after a special token). None when that changes nothing."""
  changed = False

  def normalizer(entry):
    nonlocal changed
    if entry and entry["type"] == "Prepend" and not only_first:
      changed = True
      return None
    if entry and entry["type"] == "Sequence":
      kept = [normalizer(e) for e in entry["normalizers"]]
      return {**entry, "normalizers": [e for e in kept if e is not None]}
    return entry

  def pre_tokenizer(entry):
    nonlocal changed
    if entry and entry["type"] == "Metaspace":
      scheme = entry.get("prepend_scheme", "always" if entry.get("add_prefix_space") else "never")
      if scheme == "first" or (scheme == "always" and not only_first):
        changed = True
        return {**{k: v for k, v in entry.items() if k != "add_prefix_space"},
                "prepend_scheme": "never"}
    if entry and entry["type"] == "Sequence":
      return {**entry, "pretokenizers": [pre_tokenizer(e) for e in entry["pretokenizers"]]}
    return entry

  variant = {**spec, "normalizer": normalizer(spec.get("normalizer")),
             "pre_tokenizer": pre_tokenizer(spec.get("pre_tokenizer"))}
  return variant if changed else None


def _load_variant(spec: dict | None) -> tokenizers.Tokenizer | None:
  """The tokenizer of a `_without_prefix` spec (None stays None)."""
  if spec is None:
    return None
  hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
  hf.encode_special_tokens = True
  return hf


def _hf_encode(hf: tokenizers.Tokenizer, text: str) -> list[int]:
  """Ids of `text` from a `tokenizers` tokenizer, lone surrogates as U+FFFD."""
  with _no_panic([text]):
    try:
      return hf.encode(text, add_special_tokens=False).ids
    except TypeError:  # tokenizers rejects strings with lone surrogates
      return hf.encode(_replace_surrogates(text), add_special_tokens=False).ids


@contextlib.contextmanager
def _no_panic(texts: list[str]):
  """Turns a panic of a Rust tokenizer (tokenizers' or tiktoken's PanicException, a BaseException
  that code expecting an Exception does not catch: in a prefetch thread it would leave the
  training loop waiting forever) into a UserError naming the text."""
  try:
    yield
  except (KeyboardInterrupt, SystemExit, GeneratorExit):
    raise
  except BaseException as e:  # noqa: BLE001  (the panic; re-raised as an error)
    if isinstance(e, Exception):
      raise
    longest = max(texts, key=len, default="")
    raise UserError(f"the tokenizer failed ({str(e)[:120]}) on a text of {len(longest):,} "
                    f"characters starting {longest[:40]!r}; a long run of one character (such "
                    "as a page of spaces) overflows its split pattern: clean the data "
                    "(experiments/prepare_data.py) or drop that record.") from None


def _template_adds(entry: dict | None, token: str) -> bool | None:
  """Whether a tokenizer.json post-processor starts a single text with `token` (None when it
  has no template: ByteLevel, or none)."""
  if not entry:
    return None
  if entry["type"] == "TemplateProcessing":
    first = entry["single"][0] if entry["single"] else {}
    return first.get("SpecialToken", {}).get("id") == token
  if entry["type"] in ("BertProcessing", "RobertaProcessing"):
    return entry["cls"][0] == token
  if entry["type"] == "Sequence":
    stated = [_template_adds(e, token) for e in entry["processors"]]
    stated = [x for x in stated if x is not None]
    return stated[-1] if stated else None
  return None


def bos_template(bos: str, bos_id: int) -> processors.TemplateProcessing:
  """The post-processor that states "a text starts with BOS" (as Llama's tokenizer.json)."""
  return processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B:1",
                                       special_tokens=[(bos, bos_id)])


def _token_content(value) -> str | None:
  """A tokenizer_config.json token entry (string or {"content": ...}) -> its string."""
  return value.get("content") if isinstance(value, dict) else value


class Tokenizer:
  """Text <-> ids with a Hugging Face tokenizer, through tiktoken where that is exact."""

  def __init__(self, hf: tokenizers.Tokenizer, *, bos_token: str | None = BOS,
               eos_token: str | None = EOS, pad_token: str | None = PAD):
    self._hf = hf
    self._hf.encode_special_tokens = True  # special strings in text are plain text
    self._names = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token}
    self._update()

  def _update(self) -> None:
    """Sets the fast path, vocab_size and the special ids from the wrapped tokenizer."""
    hf, names = self._hf, self._names
    spec = json.loads(hf.to_str())
    self._fast = _tiktoken_encoding(spec)
    # For encode_inside: the tokenizer of a text right after a special token, and right after
    # other text (None: self._hf's ids).
    after_special = _without_prefix(spec, only_first=True)
    after_text = _without_prefix(spec, only_first=False)
    self._after_text = _load_variant(after_text)
    self._after_special = (self._after_text if after_special == after_text
                           else _load_variant(after_special))
    self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
    self.bos_id = None if names["bos_token"] is None else hf.token_to_id(names["bos_token"])
    self.eos_id = None if names["eos_token"] is None else hf.token_to_id(names["eos_token"])
    self.pad_id = None if names["pad_token"] is None else hf.token_to_id(names["pad_token"])
    stated = (None if self.bos_id is None
              else _template_adds(spec.get("post_processor"), names["bos_token"]))
    # Without a template, only jaxllm's own <|bos|> (a tokenizer.json saved before the rule was
    # written) starts prompts; it gets the template, so a saved copy states the rule.
    self.add_bos = bool(stated) if stated is not None else names["bos_token"] == BOS
    if stated is None and self.add_bos and self.bos_id is not None:
      hf.post_processor = bos_template(names["bos_token"], self.bos_id)

  def __getstate__(self) -> dict:  # tokenizers does not pickle encode_special_tokens
    return {"tokenizer_json": self._hf.to_str(), **self._names}

  def __setstate__(self, state: dict) -> None:
    self.__init__(tokenizers.Tokenizer.from_str(state.pop("tokenizer_json")), **state)

  @classmethod
  def from_file(cls, path) -> "Tokenizer":
    """Loads a tokenizer.json, or a directory holding one (and maybe a tokenizer_config.json).

    The config's bos_token, eos_token and pad_token name the special tokens (our own names when
    there is no config); a config without a pad token pads with the EOS token.
    """
    path = storage.path(path)  # a local path or gs://
    names = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    if path.is_dir():
      config_path = path / "tokenizer_config.json"
      if config_path.exists():
        try:
          config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
          raise UserError(f"{config_path}:{e.lineno}: invalid JSON ({e.msg}); fix or delete the "
                          "file.") from e
        names = {k: _token_content(config[k]) if k in config else v for k, v in names.items()}
        if _token_content(config.get("pad_token")) is None:  # pad with EOS, as Hugging Face
          names["pad_token"] = names["eos_token"]  # does (padding is always masked)
      path = path / "tokenizer.json"
    if not path.is_file():
      raise UserError(f"{path}: no such tokenizer file; pass a tokenizer.json or the directory "
                      "holding one (experiments/train_tokenizer.py writes them).")
    try:
      hf = tokenizers.Tokenizer.from_str(path.read_text(encoding="utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
      raise UserError(f"{path}: not a Hugging Face tokenizer.json ({e}); re-create it with "
                      "experiments/train_tokenizer.py or use the file a model ships.") from e
    return cls(hf, **names)

  @property
  def bos_ids(self) -> list[int]:
    """[bos_id], or [] for a tokenizer without a BOS token (Qwen): what starts a document."""
    return [] if self.bos_id is None else [self.bos_id]

  def encode_prompt(self, text: str) -> list[int]:
    """Ids of a plain prompt as the tokenizer's own rule encodes it (transformers'
    `tokenizer(text)`): BOS first when `add_bos`, then `encode(text)`."""
    return (self.bos_ids if self.add_bos else []) + self.encode(text)

  @property
  def uses_tiktoken(self) -> bool:
    """Whether encoding goes through the tiktoken fast path."""
    return self._fast is not None

  @property
  def special_ids(self) -> frozenset[int]:
    """The ids of the special tokens (BOS, EOS, chat markers, ...)."""
    return frozenset(i for i, t in self._hf.get_added_tokens_decoder().items() if t.special)

  @property
  def hf_tokenizer(self) -> tokenizers.Tokenizer:
    """The wrapped Hugging Face tokenizer (with encode_special_tokens on)."""
    return self._hf

  def save(self, path):
    """Writes tokenizer.json to `path` (a file, or a directory to hold it; local or gs://);
    returns the file."""
    path = storage.path(path)
    if path.is_dir():
      path = path / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(path, self._hf.to_str(pretty=True))  # what tokenizers' save() writes
    return path

  def add_special_tokens(self, tokens: Sequence[str]) -> list[str]:
    """Adds the `tokens` not yet in the vocabulary as special tokens; returns those added.

    They get the next ids after every existing one, in order, and `vocab_size` grows; like every
    special token, their strings in text still encode as plain text, so no text encodes
    differently. A model using this tokenizer needs its embedding grown to `vocab_size`.
    """
    tokens = list(tokens)
    if not all(isinstance(t, str) and t for t in tokens):
      raise UserError(f"special tokens {tokens!r} must be non-empty strings.")
    new = [t for t in dict.fromkeys(tokens) if self._hf.token_to_id(t) is None]
    if new:
      self._hf.add_special_tokens(new)
      self._update()
    return new

  def token_id(self, token: str) -> int:
    """The id of a special or regular token."""
    token_id = self._hf.token_to_id(token)
    if token_id is None:
      raise UserError(f"token {token!r} is not in the tokenizer's vocabulary ({self.vocab_size} "
                      "tokens); train the tokenizer with it in special_tokens.")
    return token_id

  def encode(self, text: str) -> list[int]:
    """Ids of `text`; special-token strings in it are encoded as plain text.

    Lone surrogates (not encodable as UTF-8) become U+FFFD on both paths, as tiktoken does.
    """
    if self._fast is not None:
      with _no_panic([text]):
        return self._fast.encode_ordinary(text)
    return _hf_encode(self._hf, text)

  def encode_inside(self, text: str, *, after_special: bool) -> list[int]:
    """Ids of `text` inside a longer input, right after a special token or right after other
    text: what tokenizing the whole input gives for it (where it starts on a token boundary).

    The same as `encode`, except for SentencePiece-style tokenizers, which put a "▁" before a
    text: after other text never, and after a special token not when they put it only before
    the start of the input (Metaspace "first", Llama's in transformers 5).
    """
    hf = self._after_special if after_special else self._after_text
    return self.encode(text) if hf is None else _hf_encode(hf, text)

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    """`encode` for each text (one Python loop on the fast path: quicker than tiktoken's pool)."""
    texts = list(texts)
    if self._fast is not None:
      encode = self._fast.encode_ordinary
      with _no_panic(texts):
        return [encode(text) for text in texts]
    with _no_panic(texts):
      try:
        encodings = self._hf.encode_batch(texts, add_special_tokens=False)
      except TypeError:
        encodings = self._hf.encode_batch([_replace_surrogates(t) for t in texts],
                                          add_special_tokens=False)
    return [e.ids for e in encodings]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, special tokens written as their strings; broken UTF-8 becomes U+FFFD."""
    ids = [int(i) for i in ids]
    if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
      bad = next(i for i in ids if not 0 <= i < self.vocab_size)
      raise UserError(f"id {bad} is outside the tokenizer's {self.vocab_size} ids; a model with a "
                      "larger (padded) vocabulary must not sample ids >= vocab_size (mask those "
                      "logits).")
    if self._fast is not None:
      return self._fast.decode(ids)
    return self._hf.decode(ids, skip_special_tokens=False)


def _check_specials(special_tokens: Sequence[str]) -> list[str]:
  """The special tokens as a list; UserError unless distinct and non-empty."""
  special_tokens = list(special_tokens)
  if len(set(special_tokens)) != len(special_tokens) or not all(special_tokens):
    raise UserError(f"special_tokens {special_tokens} must be distinct non-empty strings.")
  return special_tokens


# What each kind needs below its learned pieces, besides the special tokens.
_BASE = {"bpe": (256, "256 byte tokens"), "wordpiece": (128, "unk + an alphabet"),
         "unigram": (384, "256 byte pieces + unk + printable ASCII")}


def min_vocab_size(kind: str, num_special_tokens: int = len(SPECIAL_TOKENS)) -> int:
  """The smallest vocab_size `train_tokenizer` accepts for `kind`."""
  if kind not in KINDS:
    raise UserError(f"tokenizer kind {kind!r} is not one of {', '.join(KINDS)}.")
  return _BASE[kind][0] + num_special_tokens


def _train_bpe(texts, vocab_size, special_tokens, min_frequency,
               max_digits) -> tokenizers.Tokenizer:
  hf = tokenizers.Tokenizer(models.BPE())
  hf.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(split_pattern(max_digits)), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  hf.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                special_tokens=special_tokens, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  hf.train_from_iterator(texts, trainer)
  spec = json.loads(hf.to_str())
  spec["model"]["ignore_merges"] = True  # a piece that is a token stays whole, as in tiktoken
  return tokenizers.Tokenizer.from_str(json.dumps(spec))


def _with_digits(pre_tokenizer, max_digits: int):
  """`pre_tokenizer`, then numbers cut into single digits when max_digits is 1 (Unigram has no
  digit-group limit otherwise)."""
  if max_digits != 1:
    return pre_tokenizer
  return pre_tokenizers.Sequence([pre_tokenizer, pre_tokenizers.Digits(individual_digits=True)])


def _train_wordpiece(texts, vocab_size, special_tokens, min_frequency,
                     max_digits) -> tokenizers.Tokenizer:
  hf = tokenizers.Tokenizer(models.WordPiece(unk_token=UNK))
  hf.normalizer = normalizers.NFC()
  del max_digits  # train_tokenizer refuses 1: WordPiece would decode split digits with spaces
  hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  hf.decoder = decoders.WordPiece()
  specials = special_tokens + [UNK] * (UNK not in special_tokens)
  trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=specials, show_progress=False,
                                      limit_alphabet=min(1000, vocab_size // 4))
  hf.train_from_iterator(texts, trainer)
  return hf


def _train_unigram(texts, vocab_size, special_tokens, min_frequency,
                   max_digits) -> tokenizers.Tokenizer:
  """SentencePiece-style Unigram with byte fallback: unseen characters become <0xNN> pieces."""
  del min_frequency  # Unigram prunes by likelihood, not by count
  specials = [t for t in special_tokens if t != UNK]
  hf = tokenizers.Tokenizer(models.Unigram())
  hf.pre_tokenizer = _with_digits(
      pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"), max_digits)
  hf.decoder = decoders.Sequence([
      decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="always")])
  # Printable ASCII is always a piece, so literal "<0x41>" text is never read as a byte piece.
  trainer = trainers.UnigramTrainer(
      vocab_size=vocab_size - _NUM_BYTES - len(specials), special_tokens=[UNK], unk_token=UNK,
      initial_alphabet=[chr(c) for c in range(ord("!"), ord("~") + 1)], show_progress=False)
  hf.train_from_iterator(texts, trainer)
  spec = json.loads(hf.to_str())
  pieces = spec["model"]["vocab"]
  known = {piece for piece, _ in pieces}
  pieces[spec["model"]["unk_id"]][1] = _UNREACHABLE_SCORE  # literal "<|unk|>" stays text
  pieces += [[f"<0x{b:02X}>", _UNREACHABLE_SCORE] for b in range(_NUM_BYTES)
             if f"<0x{b:02X}>" not in known]
  spec["model"]["byte_fallback"] = True
  hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
  # Added after the model's pieces, so no text piece can ever match them.
  hf.add_special_tokens(specials)
  return hf


def train_tokenizer(texts: Iterable[str], *, kind: str = "bpe", vocab_size: int = 32768,
                    special_tokens: Sequence[str] = SPECIAL_TOKENS,
                    min_frequency: int = 2, max_digits: int = 3) -> Tokenizer:
  """Trains a `kind` tokenizer of at most `vocab_size` ids (special tokens included) on `texts`.

  max_digits: the longest run of digits one token may hold (BPE: 1, 2, 3, ...; Unigram: 1, or
  any other value for its own rule; WordPiece: its own rule only).
  """
  special_tokens = _check_specials(special_tokens)
  if not isinstance(max_digits, int) or max_digits < 1:
    raise UserError(f"max_digits={max_digits!r}: use 1 (one token per digit) or more.")
  if kind == "wordpiece" and max_digits == 1:
    raise UserError("max_digits=1 with kind='wordpiece': WordPiece decodes digits split apart "
                    "with spaces between them (1 2 3); use kind='bpe' or 'unigram'.")
  minimum = min_vocab_size(kind, len(special_tokens))
  if vocab_size < minimum:
    raise UserError(f"vocab_size={vocab_size} is below the {minimum} ids a {kind} tokenizer needs "
                    f"({_BASE[kind][1]} + {len(special_tokens)} special tokens); raise it.")
  num_texts = 0

  def counted():
    nonlocal num_texts
    for text in texts:
      num_texts += bool(text)
      yield text
    if not num_texts:
      raise UserError("train_tokenizer got no text to train on; pass at least one non-empty "
                      "document.")

  train = {"bpe": _train_bpe, "wordpiece": _train_wordpiece, "unigram": _train_unigram}[kind]
  hf = train(counted(), vocab_size, special_tokens, min_frequency, max_digits)
  size = hf.get_vocab_size(with_added_tokens=True)
  if size > vocab_size:
    raise UserError(f"the {kind} tokenizer came out with {size} ids, over vocab_size={vocab_size} "
                    "(the texts hold more distinct characters than fit); raise vocab_size or use "
                    "kind='bpe', whose base alphabet is the 256 bytes.")
  names = {n: t if t in special_tokens else None
           for n, t in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD))}
  if names["bos_token"] is not None:  # tokenizer.json states that prompts start with BOS
    hf.post_processor = bos_template(BOS, hf.token_to_id(BOS))
  return Tokenizer(hf, **names)
