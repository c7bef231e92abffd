"""A Hugging Face model's tokenizer as ours, with its chat format mapped to one render_chat speaks.

  import_tokenizer(DIR) -> (Tokenizer, the special tokens added for chat)

DIR is a Hugging Face model directory: tokenizer.json, and optionally tokenizer_config.json
(tokenizer_class, bos/eos/pad tokens) and config.json (model_type).

Encoding: text encodes to the ids `transformers.AutoTokenizer.from_pretrained(DIR).encode(text,
add_special_tokens=False)` gives (transformers 5). AutoTokenizer does not always use
tokenizer.json as it is: it picks a class from tokenizer_class (else config.json's model_type),
and LlamaTokenizer, Qwen2Tokenizer and GPT2Tokenizer rebuild the tokenizer from tokenizer.json's
vocabulary and merges with their own normalizer, pre-tokenizer and decoder. We build the same:

  PreTrainedTokenizerFast     tokenizer.json as it is. So are Mistral-family model directories,
  (TokenizersBackend)         whatever class they declare, and a LlamaTokenizer declared over a
                              byte-level tokenizer.json (Llama 3 repos that say LlamaTokenizer).
  LlamaTokenizer(Fast)        BPE with byte fallback; no normalizer; a Metaspace pre-tokenizer
                              turning spaces into "▁" and prepending one "▁" unless the text
                              starts with one ("first"; "always" with legacy: true, none with
                              add_prefix_space: false). Llama 2's tokenizer.json prepends "▁"
                              always (Prepend + Replace normalizers, as SentencePiece does), so
                              text starting with a space or "▁" encodes differently there:
                              " Hi" gives the ids of "Hi" here and in transformers 5.
  Qwen2Tokenizer(Fast)        NFC, Qwen's split pattern, byte-level BPE (no ignore_merges); also
                              for model_type qwen2 whatever the declared class.
  GPT2Tokenizer(Fast)         GPT-2's byte-level pre-tokenizer (its own regex), BPE.

Any other class is refused with a UserError (setting tokenizer_class to PreTrainedTokenizerFast
makes both sides use tokenizer.json as it is). BOS, EOS and pad tokens come from
tokenizer_config.json, else the class's defaults (Llama <s> and </s>; GPT-2 <|endoftext|> for
both; Qwen no BOS, EOS <|endoftext|>); with no pad token, EOS pads.

Chat format (jaxllm/data/chat.py `format_of`):

  Llama 3         header style, kept: <|begin_of_text|>, <|start_header_id|>role<|end_header_id|>,
                  "\\n\\n" + content, <|eot_id|>. No tool-call tokens: the markers are text.
  Qwen2, 2.5, 3   ChatML, kept: <|im_start|> and <|im_end|> are tokens; no BOS; tool calls
                  between <tool_call> and </tool_call>, single ids.
  Llama 2,        no token-framed template (Llama 2 and Mistral frame turns with [INST] text,
  Mistral, GPT-2  GPT-2 has none): <|im_start|> and <|im_end|> are added as special tokens, as
                  TRL's setup_chat_format does, and <|tool_call|> and <|/tool_call|> when the
                  vocabulary has no tool-call pair. Their embeddings start untrained; fine-tuning
                  teaches the format. Text encodes as before (special strings stay text).

render_chat encodes each text as it reads inside the rendered conversation
(`Tokenizer.encode_inside`), so for every family the template chat.save_pretrained writes gives
render_chat's ids in transformers' apply_chat_template, and so do Llama 3's and Qwen's own
templates (for contents without leading or trailing whitespace, which Llama 3's trims).

The caller grows the model's embedding (and LM head) to `tokenizer.vocab_size`.
"""

import json
import os
import pathlib

import tokenizers
from tokenizers import decoders, pre_tokenizers

from jaxllm.data import chat
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError

_AS_IS, _LLAMA, _QWEN2, _GPT2 = ("PreTrainedTokenizerFast", "LlamaTokenizer", "Qwen2Tokenizer",
                                 "GPT2Tokenizer")
# tokenizer_class values (without "Fast") that load tokenizer.json as it is.
_AS_IS_NAMES = ("PreTrainedTokenizer", "TokenizersBackend")
_MISTRAL_TYPES = ("mistral", "mixtral", "ministral", "ministral3", "mistral3", "pixtral", "voxtral")
# model_type -> the class transformers registers for it, for the families we import.
_MODEL_TYPE_CLASS = {"gpt2": _GPT2, **{t: _QWEN2 for t in ("qwen2", "qwen2_moe", "qwen3",
                                                               "qwen3_moe")},
                     **{t: _AS_IS for t in _MISTRAL_TYPES}}
# Model types whose declared tokenizer_class transformers overrides with the registered one.
_OVERRIDDEN = ("qwen2",)
# What each class names when tokenizer_config.json does not.
_DEFAULT_TOKENS = {
    _AS_IS: {"bos_token": None, "eos_token": None, "pad_token": None},
    _LLAMA: {"bos_token": "<s>", "eos_token": "</s>", "pad_token": None},
    _QWEN2: {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
    _GPT2: {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": None},
}
# transformers' Qwen2Tokenizer split pattern (the one Qwen's tokenizer.json files hold).
QWEN2_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                       r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _read_text(path: pathlib.Path) -> str:
  """The text of `path`; UserError when it is missing or not UTF-8."""
  if not path.is_file():
    raise UserError(f"{path}: no such file; a Hugging Face model directory holds its tokenizer "
                    "there (for a model that ships only tokenizer.model, write it with "
                    "transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)).")
  try:
    return path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"{path}: not UTF-8 text ({e}); download the file again.") from e


def _read_json(path: pathlib.Path, text: str | None = None) -> dict:
  """The JSON object in `path` (whose text is `text` when given); UserError naming the file."""
  try:
    value = json.loads(_read_text(path) if text is None else text)
  except json.JSONDecodeError as e:
    raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); fix the file or download it "
                    "again.") from e
  if not isinstance(value, dict):
    raise UserError(f"{path}: holds a JSON {type(value).__name__}, not an object; download the "
                    "file again.")
  return value


def _class_of(declared: str | None, model_type: str | None, byte_level: bool) -> str | None:
  """The tokenizer class AutoTokenizer (transformers 5) builds, None for one we do not
  reproduce; `declared` is tokenizer_class, `byte_level` whether tokenizer.json mentions
  ByteLevel (AutoTokenizer's own test)."""
  if declared is not None:
    declared = declared.removesuffix("Fast")
    declared = _AS_IS if declared in _AS_IS_NAMES else declared
  registered = _MODEL_TYPE_CLASS.get(model_type)
  if declared == _LLAMA and byte_level and model_type not in _OVERRIDDEN:
    return _AS_IS
  if declared is not None and registered is not None and registered != declared:
    if registered == _AS_IS:
      return _AS_IS
    declared = registered if model_type in _OVERRIDDEN else declared
  declared = declared or registered or _AS_IS
  return declared if declared in _DEFAULT_TOKENS else None


def _state(component) -> dict:
  """The tokenizer.json entry of a `tokenizers` normalizer, pre-tokenizer or decoder."""
  return json.loads(component.__getstate__())


def _rebuild(spec: dict, cls: str, config: dict, path: pathlib.Path) -> None:
  """Sets the normalizer, pre-tokenizer, decoder and BPE options `cls` builds in transformers 5
  around tokenizer.json's vocabulary, merges and added tokens (`spec`, changed in place)."""
  model = spec["model"]
  if model.get("type") != "BPE":
    raise UserError(f"{path}: a {model.get('type')} model, but tokenizer_class {cls} makes "
                    "transformers rebuild it as BPE; set tokenizer_class to "
                    "PreTrainedTokenizerFast in tokenizer_config.json to use tokenizer.json as "
                    "it is.")
  add_prefix_space = config.get("add_prefix_space")
  options = {"dropout": None, "unk_token": None, "ignore_merges": False, "fuse_unk": False,
             "byte_fallback": False, "continuing_subword_prefix": "", "end_of_word_suffix": ""}
  if cls == _LLAMA:
    add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
    scheme = ("always" if config.get("legacy") else "first") if add_prefix_space else "never"
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    steps += [decoders.Strip(" ", 1, 0)] if add_prefix_space else []
    spec.update(normalizer=None, decoder=_state(decoders.Sequence(steps)),
                pre_tokenizer=_state(pre_tokenizers.Metaspace(
                    replacement="▁", prepend_scheme=scheme, split=False)))
    options.update(fuse_unk=True, byte_fallback=True, continuing_subword_prefix=None,
                   end_of_word_suffix=None)
  elif cls == _QWEN2:
    spec.update(normalizer={"type": "NFC"}, decoder=_state(decoders.ByteLevel()),
                pre_tokenizer=_state(pre_tokenizers.Sequence([
                    pre_tokenizers.Split(tokenizers.Regex(QWEN2_SPLIT_PATTERN),
                                         behavior="isolated", invert=False),
                    pre_tokenizers.ByteLevel(add_prefix_space=bool(add_prefix_space),
                                             use_regex=False)])))
  else:  # GPT-2
    spec.update(normalizer=None, decoder=_state(decoders.ByteLevel()),
                pre_tokenizer=_state(pre_tokenizers.ByteLevel(
                    add_prefix_space=bool(add_prefix_space))))
  model.update(options)


def import_tokenizer(directory: str | os.PathLike) -> tuple[Tokenizer, list[str]]:
  """(tokenizer, added): the tokenizer of Hugging Face model directory `directory`, encoding as
  transformers does, and the chat tokens added to it (see the module docstring; the model's
  embedding must grow to `tokenizer.vocab_size`)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise UserError(f"{directory}: not a directory; pass a Hugging Face model directory "
                    "(tokenizer.json, tokenizer_config.json, config.json).")
  path, config_path = directory / "tokenizer.json", directory / "tokenizer_config.json"
  text = _read_text(path)
  spec = _read_json(path, text)
  config = _read_json(config_path) if config_path.is_file() else {}
  model_path = directory / "config.json"
  model_config = _read_json(model_path) if model_path.is_file() else {}
  if not isinstance(spec.get("model"), dict):
    raise UserError(f"{path}: no tokenizer model in it; download the file again.")
  declared = config.get("tokenizer_class") or model_config.get("tokenizer_class")
  cls = _class_of(declared, model_config.get("model_type"), '"ByteLevel"' in text)
  if cls is None:
    raise UserError(f"{config_path}: tokenizer_class {declared!r} is not one whose encoding we "
                    "reproduce (PreTrainedTokenizerFast, LlamaTokenizer, Qwen2Tokenizer, "
                    "GPT2Tokenizer); if tokenizer.json describes the tokenizer fully, set "
                    "tokenizer_class to PreTrainedTokenizerFast.")
  if cls != _AS_IS:
    _rebuild(spec, cls, config, path)
  spec.update(truncation=None, padding=None)  # encode() gives every id of the text
  try:
    hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
  except Exception as e:  # tokenizers raises a bare Exception on malformed files
    raise UserError(f"{path}: not a tokenizer tokenizers can load ({e}); download the file "
                    "again.") from e
  names = {}
  for key, default in _DEFAULT_TOKENS[cls].items():
    value = config.get(key, default)
    names[key] = value.get("content") if isinstance(value, dict) else value  # maybe an AddedToken
    if names[key] is not None and hf.token_to_id(names[key]) is None:
      raise UserError(f"{config_path}: {key} {names[key]!r} is not in {path}; name a token of "
                      "the vocabulary (or null for none).")
  names["pad_token"] = names["pad_token"] or names["eos_token"]  # padding is masked anyway
  tokenizer = Tokenizer(hf, **names)

  def has(token: str) -> bool:
    return hf.token_to_id(token) is not None

  if all(map(has, chat.HEADER_TOKENS)) or all(map(has, chat.CHATML_TOKENS)):
    return tokenizer, []
  wanted = list(chat.CHATML_TOKENS)
  if not any(all(map(has, pair)) for pair in chat.TOOL_CALL_PAIRS):
    wanted += chat.TOOL_CALL_PAIRS[0]
  return tokenizer, tokenizer.add_special_tokens(wanted)
