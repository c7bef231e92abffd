"""Hugging Face tokenizer import: transformers' ids per family, chat format mapping, round trips.

Each family's tokenizer is a tiny one trained here with the structure of the real tokenizer.json
(normalizer, pre-tokenizer, model options, added tokens) and tokenizer_config.json.
"""

import dataclasses
import json
import pathlib
import pickle
import re

import numpy as np
import pytest
import tokenizers
import transformers
from tokenizers import (
  AddedToken,
  decoders,
  models,
  normalizers,
  pre_tokenizers,
  processors,
  trainers,
)

from jaxllm.data import chat
from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError
from jaxllm.inference import assistant, tools
from jaxllm.inference.sampler import SampleOutput
from jaxllm.interop import hf_tokenizer

_LINES = (
    "The quick brown fox jumps over the lazy dog. Don't stop; we'll see, they're here!",
    "Il était une fois une façade naïve près du café, où l'été dure longtemps.",
    "Über größere Straßen fährt man schnell; Ærø og Øresund ligger i Danmark.",
    "日本語のテキストと中文的句子，还有한국어 문장도 있습니다。",
    "Привет, мир! Данные и тексты на русском языке.",
    "Emoji: 😀 👍🏽 🎉 and symbols ∑ ∞ ≤ ≥ → ©.",
    "Numbers 0 1 12 123 1234 12345 3.14159 -0.5 1e10 2024-01-31 12:30:45.",
    "def square(x):\n    return x ** 2  # the square\n\nprint(square(12))",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    '{"key": [1, 2.5, null], "ok": true, "name": "value"}',
    "Whitespace  runs   here\t\ttabs\n\n\nand newlines\r\nwindows lines.",
    "SELECT name, age FROM people WHERE age > 30 ORDER BY name;",
    "https://example.com/path/to/page?query=1&other=two#anchor",
    "What is 12 * 7? The answer is 84. Let me compute that for you.",
)
CORPUS = [line for line in _LINES for _ in range(3)]

# Llama 3's split pattern and chat template (Meta-Llama-3-8B-Instruct).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CHATML_TEMPLATE = (  # Qwen2.5's without tools and default system prompt
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\n' + message.content + "
    "'<|im_end|>' + '\n' }}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\n' }}{%- endif %}")

PARITY_TEXTS = [
    "Hello world", "hello world", " leading space", "  two leading spaces", "trailing space ",
    "multiple   inner    spaces", "tab\tseparated\tvalues", "\tleading tab", "line one\nline two",
    "\n\nleading newlines", "trailing newlines\n\n", "windows\r\nline", "naïve café résumé",
    "e\u0301tude (decomposed)", "Ångström ﬁ ligature", "日本語のテキスト", "中文句子，标点。",
    "한국어 문장", "Привет, мир", "😀 emoji 👍🏽 mixed 🎉", "👨\u200d👩\u200d👧 family",
    "1234567890", "3.14159 and -0.5", "x = 12345 + 678", "def f(x):\n    return x ** 2",
    "{\"a\": [1, 2], \"b\": null}", "don't you'll WE'RE I'M", "▁literal metaspace ▁ char",
    "<0x41> looks like a byte", "unseen 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ⚙ ⚡", "", " ", "\n",
]

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 12 * 7? Café 日本 😀"},
    {"role": "assistant", "content": "It is 84, naïve friend."},
]
TOOL_CONVERSATION = CONVERSATION[:2] + [
    {"role": "assistant", "content": "Let me compute.",
     "tool_calls": [{"name": "calculator", "arguments": {"expression": "12 * 7"}}]},
    {"role": "tool", "content": "84"},
    {"role": "assistant", "content": "The answer is 84."},
]


def _byte_level_bpe(pre_tokenizer, normalizer=None, vocab_size=500) -> tokenizers.Tokenizer:
  hf = tokenizers.Tokenizer(models.BPE())
  hf.normalizer = normalizer
  hf.pre_tokenizer = pre_tokenizer
  hf.decoder = decoders.ByteLevel()
  hf.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=vocab_size, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return hf


def _write(directory: pathlib.Path, hf: tokenizers.Tokenizer, config: dict,
           model_config: dict | None = None) -> pathlib.Path:
  directory.mkdir(parents=True)
  hf.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps(config))
  if model_config is not None:
    (directory / "config.json").write_text(json.dumps(model_config))
  return directory


def _gpt2(directory):
  hf = _byte_level_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
  hf.post_processor = processors.ByteLevel(trim_offsets=False)
  hf.add_special_tokens(["<|endoftext|>"])  # the last id, as in GPT-2
  return _write(directory, hf, {"add_prefix_space": False, "bos_token": "<|endoftext|>",
                                "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                                "model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer"})


def _llama3(directory):
  hf = _byte_level_bpe(pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(LLAMA3_PATTERN), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
  spec = json.loads(hf.to_str())
  spec["model"]["ignore_merges"] = True
  hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
  hf.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                         "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                         "<|reserved_special_token_2|>", "<|start_header_id|>",
                         "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>"])
  bos = hf.token_to_id("<|begin_of_text|>")
  hf.post_processor = processors.Sequence([
      processors.ByteLevel(trim_offsets=False),
      processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                    special_tokens=[("<|begin_of_text|>", bos)])])
  return _write(directory, hf, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                "clean_up_tokenization_spaces": True,
                                "model_max_length": 1000000000000000019884624838656,
                                "tokenizer_class": "PreTrainedTokenizerFast",
                                "chat_template": LLAMA3_TEMPLATE},
                {"model_type": "llama"})


def _qwen2(directory):
  hf = _byte_level_bpe(pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(hf_tokenizer.QWEN2_SPLIT_PATTERN),
                           behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                       normalizer=normalizers.NFC())
  hf.post_processor = processors.ByteLevel(trim_offsets=False)
  hf.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  hf.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                 AddedToken("</tool_call>", special=False, normalized=False)])
  return _write(directory, hf, {"add_prefix_space": False, "bos_token": None,
                                "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                "unk_token": None, "errors": "replace",
                                "split_special_tokens": False, "model_max_length": 131072,
                                "tokenizer_class": "Qwen2Tokenizer",
                                "chat_template": CHATML_TEMPLATE},
                {"model_type": "qwen2"})


def _sentencepiece_bpe() -> tokenizers.Tokenizer:
  """Llama 2's layout: <unk> <s> </s>, the 256 <0xNN> byte pieces, then ▁-prefixed pieces."""
  trainer = tokenizers.Tokenizer(models.BPE())
  trainer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                             normalizers.Replace(" ", "▁")])
  trainer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
  # No newline pieces: Llama 2 writes "\n" as its byte piece <0x0A>.
  trainer.train_from_iterator([t.replace("\n", " ").replace("\r", " ") for t in CORPUS],
                              trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                  limit_alphabet=120))
  spec = json.loads(trainer.to_str())
  vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
  for piece, _ in sorted(spec["model"]["vocab"].items(), key=lambda item: item[1]):
    vocab.setdefault(piece, len(vocab))
  merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
            for m in spec["model"]["merges"]]
  hf = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                                       fuse_unk=True, byte_fallback=True))
  hf.normalizer = trainer.normalizer
  hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                  decoders.Fuse(), decoders.Strip(" ", 1, 0)])
  hf.add_special_tokens([AddedToken(t, special=True, normalized=False)
                         for t in ("<unk>", "<s>", "</s>")])
  hf.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  return hf


_LLAMA_CONFIG = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                 "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
                 "clean_up_tokenization_spaces": False, "sp_model_kwargs": {}}


def _llama2(directory):
  return _write(directory, _sentencepiece_bpe(),
                {**_LLAMA_CONFIG, "legacy": False, "tokenizer_class": "LlamaTokenizerFast"},
                {"model_type": "llama"})


def _mistral(directory):
  """Mistral 7B: Llama 2's layout and class, but transformers uses tokenizer.json as it is."""
  return _write(directory, _sentencepiece_bpe(),
                {**_LLAMA_CONFIG, "legacy": True, "tokenizer_class": "LlamaTokenizer"},
                {"model_type": "mistral"})


BUILDERS = {"gpt2": _gpt2, "llama2": _llama2, "mistral": _mistral, "llama3": _llama3,
            "qwen2": _qwen2}
ADDS_CHATML = ("gpt2", "llama2", "mistral")


@pytest.fixture(scope="module")
def families(tmp_path_factory):
  """family -> (HF directory, transformers' tokenizer of it, our import, tokens added)."""
  root = tmp_path_factory.mktemp("hf")
  out = {}
  for name, build in BUILDERS.items():
    directory = build(root / name)
    tokenizer, added = hf_tokenizer.import_tokenizer(directory)
    out[name] = (directory, transformers.AutoTokenizer.from_pretrained(directory), tokenizer,
                 added)
  return out


@pytest.fixture(scope="module")
def saved(families, tmp_path_factory):
  """family -> (our save_pretrained directory, transformers' tokenizer of it)."""
  root = tmp_path_factory.mktemp("saved")
  out = {}
  for name, (_, _, tokenizer, _) in families.items():
    directory = chat.save_pretrained(tokenizer, root / name)
    out[name] = (directory, transformers.AutoTokenizer.from_pretrained(directory))
  return out


@pytest.mark.parametrize("family", BUILDERS)
def test_text_encodes_as_in_transformers_before_and_after_import(families, saved, family):
  _, reference, tokenizer, _ = families[family]
  expected = [reference.encode(t, add_special_tokens=False) for t in PARITY_TEXTS]
  assert [tokenizer.encode(t) for t in PARITY_TEXTS] == expected
  assert tokenizer.encode_batch(PARITY_TEXTS) == expected
  # The saved tokenizer (chat tokens added) encodes text as the original does.
  exported = saved[family][1]
  assert [exported.encode(t, add_special_tokens=False) for t in PARITY_TEXTS] == expected
  assert [tokenizer.decode(ids) for ids in expected] == [
      reference.decode(ids) for ids in expected]


def test_transformers_classes_rebuild_some_tokenizers(families):
  """What transformers 5 makes of each tokenizer_class (the import reproduces it)."""
  kinds = {name: type(reference).__name__ for name, (_, reference, _, _) in families.items()}
  assert kinds == {"gpt2": "GPT2Tokenizer", "llama2": "LlamaTokenizer",
                   "mistral": "TokenizersBackend", "llama3": "TokenizersBackend",
                   "qwen2": "Qwen2Tokenizer"}
  # Llama 2's tokenizer.json prepends "▁" always; transformers' LlamaTokenizer only when the text
  # does not start with one, so a leading space is dropped (Mistral keeps tokenizer.json's).
  for name, same in (("llama2", True), ("mistral", False)):
    _, reference, tokenizer, _ = families[name]
    assert (reference.encode(" Hello", add_special_tokens=False)
            == reference.encode("Hello", add_special_tokens=False)) is same
    assert (tokenizer.encode(" Hello") == tokenizer.encode("Hello")) is same


def test_chat_formats_per_family(families):
  formats = {name: chat.format_of(tok) for name, (_, _, tok, _) in families.items()}
  assert formats["llama3"] == chat.LLAMA3  # header style; tool calls as text
  qwen = families["qwen2"][2]
  assert formats["qwen2"] == chat.ChatFormat(
      bos=None, start="<|im_start|>", header_end=None, header_sep="\n", end="<|im_end|>",
      separator="\n", tool_call="<tool_call>", tool_call_end="</tool_call>")
  assert qwen.bos_ids == [] and qwen.eos_id == qwen.token_id("<|im_end|>")
  assert qwen.pad_id == qwen.token_id("<|endoftext|>")
  for name in ADDS_CHATML:
    _, reference, tokenizer, added = families[name]
    assert added == ["<|im_start|>", "<|im_end|>", "<|tool_call|>", "<|/tool_call|>"]
    old_size = len(reference)
    assert [tokenizer.token_id(t) for t in added] == list(range(old_size, old_size + 4))
    assert tokenizer.vocab_size == old_size + 4
    assert formats[name] == dataclasses.replace(chat.CHATML, bos=reference.bos_token)
    assert tokenizer.pad_id == tokenizer.eos_id == reference.eos_token_id  # EOS pads
  for name in ("llama3", "qwen2"):
    assert families[name][3] == []
  assert chat.stop_ids(families["llama3"][2]) == [families["llama3"][1].eos_token_id]
  gpt2 = families["gpt2"][2]
  assert chat.stop_ids(gpt2) == [gpt2.token_id("<|im_end|>"), gpt2.token_id("<|endoftext|>")]


@pytest.mark.parametrize("family", ["llama3", "qwen2"])
def test_render_chat_equals_the_models_own_template(families, family):
  _, reference, tokenizer, _ = families[family]
  for messages, prompt in ((CONVERSATION, False), (CONVERSATION[:2], True)):
    ids, _ = chat.render_chat(tokenizer, messages, add_generation_prompt=prompt)
    assert reference.apply_chat_template(messages, add_generation_prompt=prompt)[
        "input_ids"] == ids


@pytest.mark.parametrize("family", BUILDERS)
def test_saved_tokenizer_keeps_format_and_ids_and_its_template_gives_them(
    families, saved, family):
  tokenizer = families[family][2]
  directory, exported = saved[family]
  loaded = Tokenizer.from_file(directory)
  assert chat.format_of(loaded) == chat.format_of(tokenizer)
  assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.vocab_size) == (
      tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.vocab_size)
  assert [loaded.encode(t) for t in PARITY_TEXTS] == [tokenizer.encode(t) for t in PARITY_TEXTS]
  unpickled = pickle.loads(pickle.dumps(tokenizer))  # as data loader workers get it
  for messages in (CONVERSATION, TOOL_CONVERSATION):
    ids, mask = chat.render_chat(tokenizer, messages)
    assert chat.render_chat(loaded, messages) == chat.render_chat(unpickled, messages) == (
        ids, mask)
    out = exported.apply_chat_template(messages, return_assistant_tokens_mask=True)
    assert out["input_ids"] == ids
    assert out["assistant_masks"] == mask
    prompt = messages[:-1]
    assert exported.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"] == (
        chat.render_chat(tokenizer, prompt, add_generation_prompt=True)[0])


@pytest.mark.parametrize("family", ["qwen2", "llama3"])
def test_tool_calls_round_trip_with_the_family_markers(families, family):
  tokenizer = families[family][2]
  fmt = chat.format_of(tokenizer)
  ids, mask = chat.render_chat(tokenizer, TOOL_CONVERSATION[:3])
  written = tokenizer.decode([i for i, m in zip(ids, mask) if m])
  assert written == ("Let me compute." + fmt.tool_call + chat.tool_call_json(
      TOOL_CONVERSATION[2]["tool_calls"][0]) + fmt.tool_call_end + fmt.end)
  assert chat.parse_assistant(written, fmt) == ("Let me compute.",
                                                TOOL_CONVERSATION[2]["tool_calls"])
  marker_ids = [tokenizer.hf_tokenizer.token_to_id(m) for m in (fmt.tool_call,
                                                               fmt.tool_call_end)]
  if family == "qwen2":  # single ids
    assert all(i in ids for i in marker_ids)
  else:  # text: no such tokens
    assert marker_ids == [None, None]


def test_assistant_runs_a_tool_call_written_as_text(families):
  tokenizer = families["llama3"][2]
  eot = tokenizer.token_id("<|eot_id|>")
  call = '<|tool_call|>{"name": "calculator", "arguments": {"expression": "12 * 7"}}<|/tool_call|>'
  replies = [tokenizer.encode("Let me compute." + call) + [eot],
             tokenizer.encode("The answer is 84.") + [eot]]
  prompts = []

  class Scripted:
    def generate(self, prompts_, max_new_tokens, *, stop_tokens=(), **_):
      assert list(stop_tokens) == [eot]  # no single-token tool-call end to stop at
      prompts.append(prompts_[0])
      ids = replies.pop(0)
      n = len(ids)
      return SampleOutput(np.array([ids]), np.array([n]), np.zeros((1, n)), np.zeros((1, n)),
                          np.array([True]))

  added = assistant.respond(Scripted(), tokenizer, CONVERSATION[1:2], tools.default_registry())
  assert added == [TOOL_CONVERSATION[2], TOOL_CONVERSATION[3], TOOL_CONVERSATION[4]]
  assert prompts[1] == chat.render_chat(tokenizer, CONVERSATION[1:2] + added[:2],
                                        add_generation_prompt=True)[0]


def test_config_without_pad_token_pads_with_eos(families, tmp_path):
  directory = families["llama3"][0]
  config = json.loads((directory / "tokenizer_config.json").read_text())
  (tmp_path / "tokenizer.json").write_text((directory / "tokenizer.json").read_text())
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
  loaded = Tokenizer.from_file(tmp_path)
  assert loaded.pad_id == loaded.eos_id == loaded.token_id("<|eot_id|>")
  assert loaded.bos_ids == [loaded.token_id("<|begin_of_text|>")]


def _copy(families, family, directory: pathlib.Path) -> pathlib.Path:
  directory.mkdir()
  for path in families[family][0].iterdir():
    (directory / path.name).write_bytes(path.read_bytes())
  return directory


def test_bad_directories_name_the_file_and_the_fix(families, tmp_path):
  with pytest.raises(UserError, match=f"{tmp_path / 'tokenizer.json'}: no such file"):
    hf_tokenizer.import_tokenizer(tmp_path)
  with pytest.raises(UserError, match="not a directory"):
    hf_tokenizer.import_tokenizer(tmp_path / "missing")
  broken = _copy(families, "qwen2", tmp_path / "broken")
  (broken / "tokenizer_config.json").write_text("{\"eos_token\": ")
  with pytest.raises(UserError, match=r"tokenizer_config.json:1: invalid JSON"):
    hf_tokenizer.import_tokenizer(broken)
  other = _copy(families, "qwen2", tmp_path / "other")
  config = json.loads((other / "tokenizer_config.json").read_text())
  (other / "tokenizer_config.json").write_text(json.dumps(
      {**config, "tokenizer_class": "BertTokenizer"}))
  (other / "config.json").unlink()
  with pytest.raises(UserError, match="tokenizer_class 'BertTokenizer'.*PreTrainedTokenizerFast"):
    hf_tokenizer.import_tokenizer(other)
  (other / "tokenizer_config.json").write_text(json.dumps(
      {**config, "eos_token": "<|not_a_token|>"}))
  with pytest.raises(UserError, match=re.escape("eos_token '<|not_a_token|>' is not in")):
    hf_tokenizer.import_tokenizer(other)
  bare = Tokenizer(tokenizers.Tokenizer(models.BPE()), bos_token=None, eos_token=None,
                   pad_token=None)
  with pytest.raises(UserError, match=re.escape("lacks <|im_start|> and <|im_end|> for ChatML")):
    chat.format_of(bare)


@pytest.mark.parametrize("family,bos_first", [("gpt2", False), ("llama2", True),
                                              ("mistral", True), ("llama3", True),
                                              ("qwen2", False)])
def test_prompts_start_with_bos_exactly_where_transformers_adds_it(families, saved, family,
                                                                    bos_first):
  _, reference, tokenizer, _ = families[family]
  assert tokenizer.add_bos == bos_first
  _, reloaded = saved[family]  # our save_pretrained directory states the same rule
  for text in PARITY_TEXTS[:6]:
    want = reference(text)["input_ids"]
    assert tokenizer.encode_prompt(text) == want == reloaded(text)["input_ids"], text
