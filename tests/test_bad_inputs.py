"""Bad input files (tests/bad_inputs/) through the code paths a user hits: each gives a UserError
naming file:line, the field and the fix, or is skipped and counted as documented.

ERRORS and SKIPS are the case tables: (file, runner, options, expected). A runner is what a user's
run calls on the file: the readers (jaxllm/data/readers.py), preparing a dataset of one record
kind (jaxllm/data/sources.py), or parsing model output for tool calls (jaxllm/data/chat.py,
jaxllm/inference/tools.py). "{path}" in an expected message stands for the file's path.
"""

import json
import pathlib
import re
import shutil

import pytest

from jaxllm import config as config_lib
from jaxllm.data import chat, inputs, readers, sources
from jaxllm.errors import UserError
from jaxllm.inference import tools
from jaxllm.rl import rewards

BAD = pathlib.Path(__file__).parent / "bad_inputs"


def read_documents(path, tmp_path, **options):
  """The documents of one file and the counts (what pretraining data preparation reads)."""
  del tmp_path
  counts = readers.ReadCounts()
  return [d.text for d in readers.iter_documents(path, counts, **options)], counts


def _open(kind):
  def open_kind(path, tmp_path, **options):
    """The train split of `path` prepared as `kind` records, as the training stages open it."""
    source = sources.open_source(str(path), kind, "train", data_dir=tmp_path / "data", **options)
    return [source[i] for i in range(len(source))], readers.ReadCounts(**source.counts)
  open_kind.__name__ = f"open_{kind}"
  return open_kind


open_text, open_conversations, open_preferences = map(
    _open, ("text", "conversations", "preferences"))


def parse_model_output(path, tmp_path):
  """Assistant output as the tool loop reads it (special tokens written out)."""
  del tmp_path
  return chat.parse_assistant(path.read_text(encoding="utf-8"))


HINT = "set skip_malformed to skip and count such lines"

# (file, runner, options, message regex; "{path}" is the file's path, escaped)
ERRORS = [
    # 1. a line that is not JSON, in the middle of the file
    ("malformed_line.jsonl", read_documents, {},
     rf"^{{path}}:3: invalid JSON \(Expecting value, column 1\); .*{HINT}"),
    ("malformed_line.jsonl", open_text, {}, r"^{path}:3: invalid JSON .*skip_malformed"),
    # 2. the last line cut off mid-object, no trailing newline
    ("truncated.jsonl", read_documents, {},
     r"^{path}:2: invalid JSON \(Unterminated string .*skip_malformed"),
    ("truncated.jsonl", open_text, {}, r"^{path}:2: invalid JSON"),
    # 4. an empty file: preparing a dataset from it says it holds no records, and names it
    ("empty.jsonl", open_text, {},
     r"^{path}: Failed to finalize writing of split \"train\": No examples were yielded; "
     r"the input holds no records for that split \(check the files"),
    # 5. missing fields
    ("missing_text.jsonl", read_documents, {},
     r"^{path}:2: field 'text' is missing; set text_field to the field that holds the text"),
    ("missing_text.jsonl", open_text, {}, r"^{path}:2: field 'text' is missing; set text_field"),
    ("conversation_missing_messages.jsonl", open_conversations, {},
     r"^{path}:2: 'messages' must be a non-empty list of \{role, content\} objects; "
     r"it is missing\."),
    ("preference_missing_chosen.jsonl", open_preferences, {},
     r"^{path}:2: field 'chosen' must be a string for preferences records "
     r"\(fields: prompt, chosen, rejected, margin\); it is missing\."),
    # 6. wrong types
    ("text_not_string.jsonl", read_documents, {},
     r"^{path}:2: field 'text' is a int, not a string; set text_field"),
    ("text_not_string.jsonl", open_text, {}, r"^{path}:2: field 'text' is a int, not a string"),
    ("conversation_messages_string.jsonl", open_conversations, {},
     r"^{path}:1: 'messages' must be a non-empty list of \{role, content\} objects; "
     r"got \"hi\"\."),
    ("preference_chosen_list.jsonl", open_preferences, {},
     r"^{path}:1: field 'chosen' must be a string for preferences records .*; got list\."),
    # 7. an unknown role: the message names it and the allowed roles
    ("conversation_unknown_role.jsonl", open_conversations, {},
     r"^{path}:2: messages\[1\] must be an object with 'role' in "
     r"\('system', 'user', 'assistant', 'tool'\) and a string 'content'; "
     r"got \{\"role\": \"robot\", \"content\": \"beep\"\}\."),
    # 8. malformed tool calls in a conversation record: named at preparation, with file:line
    ("conversation_tool_calls_string.jsonl", open_conversations, {},
     r"^{path}:1: in 'messages', message 1: 'tool_calls' is a str; make it a list of "
     r"\{'name': str, 'arguments': dict\}\."),
    ("conversation_tool_call_bad_arguments.jsonl", open_conversations, {},
     r"^{path}:1: in 'messages', message 1: tool call 0 is .*; make it exactly "
     r"\{'name': non-empty str, 'arguments': dict\}\."),
]

# (file, runner, options, (kept records, counts that must match))
SKIPS = [
    ("malformed_line.jsonl", read_documents, {"skip_malformed": True},
     (["first document", "second document", "fourth document"],
      {"records": 3, "malformed_lines": 1})),
    ("malformed_line.jsonl", open_text, {"skip_malformed": True},
     (3, {"records": 3, "malformed_lines": 1})),
    ("truncated.jsonl", read_documents, {"skip_malformed": True},
     (["complete record"], {"records": 1, "malformed_lines": 1})),
    # 3. invalid UTF-8: replaced with U+FFFD and counted once per record, never an error
    ("invalid_utf8.jsonl", read_documents, {},
     (["caf\ufffd au lait", "clean line", "bad \ufffd\ufffd bytes"],
      {"records": 3, "invalid_utf8": 2, "malformed_lines": 0})),
    ("invalid_utf8.jsonl", open_text, {}, (3, {"records": 3, "invalid_utf8": 2})),
    ("invalid_utf8.txt", read_documents, {"separator": "\n\n"},
     (["good document", "bad \ufffd( byte", "last document"], {"records": 3, "invalid_utf8": 1})),
    ("empty.jsonl", read_documents, {}, ([], {"files": 1, "records": 0})),
    ("missing_text.jsonl", read_documents, {"skip_malformed": True},
     (["has text"], {"records": 1, "malformed_lines": 1})),
    ("text_not_string.jsonl", open_text, {"skip_malformed": True},
     (1, {"records": 1, "malformed_lines": 1})),
    ("conversation_unknown_role.jsonl", open_conversations, {"skip_malformed": True},
     (1, {"records": 1, "malformed_lines": 1})),
    ("conversation_missing_messages.jsonl", open_conversations, {"skip_malformed": True},
     (1, {"records": 1, "malformed_lines": 1})),
    ("preference_missing_chosen.jsonl", open_preferences, {"skip_malformed": True},
     (1, {"records": 1, "malformed_lines": 1})),
]

# 8. malformed tool calls written by the model: ToolCallError (which call, why) from the parser.
TOOL_OUTPUTS = [
    ("tool_output_unclosed.txt", 0, r"tool call 0 is not closed with <\|/tool_call\|>"),
    ("tool_output_invalid_json.txt", 0, r"tool call 0: invalid JSON \(Expecting property name"),
    ("tool_output_wrong_keys.txt", 0,
     r"tool call 0: expected \{\"name\": str, \"arguments\": object\}"),
    ("tool_output_stray_close.txt", 0, r"<\|/tool_call\|> without an opening <\|tool_call\|>"),
]


def _id(case):
  return f"{case[0]}-{case[1].__name__}"


def test_every_file_is_used():
  used = {case[0] for table in (ERRORS, SKIPS, TOOL_OUTPUTS) for case in table}
  used.add("tool_output_bad_arguments.txt")
  assert sorted(p.name for p in BAD.iterdir()) == sorted(used)


@pytest.mark.parametrize("name,runner,options,message", ERRORS, ids=map(_id, ERRORS))
def test_bad_file_gives_a_clear_error(tmp_path, name, runner, options, message):
  path = BAD / name
  with pytest.raises(UserError) as info:
    runner(path, tmp_path, **options)
  assert re.search(message.replace("{path}", re.escape(str(path))), str(info.value)), info.value


@pytest.mark.parametrize("name,runner,options,expected", SKIPS, ids=map(_id, SKIPS))
def test_bad_records_are_skipped_and_counted(tmp_path, name, runner, options, expected):
  kept, counts = runner(BAD / name, tmp_path, **options)
  want_kept, want_counts = expected
  assert (len(kept) if isinstance(want_kept, int) else kept) == want_kept
  assert {k: counts.as_dict()[k] for k in want_counts} == want_counts


@pytest.mark.parametrize("name,index,message", TOOL_OUTPUTS, ids=[c[0] for c in TOOL_OUTPUTS])
def test_malformed_tool_call_output(tmp_path, name, index, message):
  with pytest.raises(chat.ToolCallError, match=message) as info:
    parse_model_output(BAD / name, tmp_path)
  assert info.value.index == index
  # The documented fallback where the output is scored: an unreadable call earns no tool reward.
  text = (BAD / name).read_text(encoding="utf-8")
  assert rewards.tool_use(text, {}, tools.default_registry()) == 0.0


def test_readable_call_with_bad_arguments_becomes_an_error_text(tmp_path):
  """A call that parses but the tool cannot use: the registry answers "error: ...", never raises."""
  path = BAD / "tool_output_bad_arguments.txt"
  content, calls = parse_model_output(path, tmp_path)
  assert content == "" and calls == [{"name": "calculator", "arguments": {"expr": "6*7"}}]
  result = tools.default_registry().run(calls[0])
  assert result == "error: give the expression as a non-empty string."
  assert rewards.tool_use(path.read_text(encoding="utf-8"), {}, tools.default_registry()) == 0.0


def test_huge_line_is_kept_whole(tmp_path):
  """9. One 5 MB JSONL record: read without a line limit, the whole text kept, bytes counted."""
  text = "".join(f"word{i} " for i in range(700_000))[:5_000_000]
  path = tmp_path / "huge.jsonl"
  path.write_text(json.dumps({"text": "small"}) + "\n" + json.dumps({"text": text}) + "\n")
  kept, counts = read_documents(path, tmp_path)
  assert kept == ["small", text] and counts.bytes == 5 + len(text)
  records, counts = open_text(path, tmp_path)
  assert sorted(len(r["text"]) for r in records) == [5, len(text)] and counts.records == 2
  assert text in (r["text"] for r in records)


def test_missing_prepared_shard_names_the_file_and_the_fix(tmp_path):
  """10. A prepared ArrayRecord shard deleted: opening again names it and says to re-prepare."""
  for part in ("a", "b"):
    (tmp_path / f"{part}.jsonl").write_text("".join(
        json.dumps({"text": f"document {part}{i}"}) + "\n" for i in range(100)))
  config = config_lib.base_config("tiny")
  config.data.source = str(tmp_path / "*.jsonl")
  config.data.eval_fraction = 0.1
  workdir = tmp_path / "run"
  (train,), _ = inputs.open_sources(config.data, "text", "train", workdir)
  (validation,), _ = inputs.open_sources(config.data, "text", "validation", workdir)
  assert len(train) + len(validation) == 200 and train[0]["text"].startswith("document ")
  shards = sorted((workdir / "data").rglob("*-train.array_record-*"))
  assert len(shards) == 1
  shards[0].unlink()
  with pytest.raises(UserError) as info:
    inputs.open_sources(config.data, "text", "train", workdir)
  message = str(info.value)
  assert message.startswith(f"{shards[0]}: a prepared shard of jaxllm_text/"), message
  assert message.endswith(f"is missing; delete {shards[0].parent} so the dataset is prepared "
                          "again."), message
  # The fix works: with the prepared folder deleted, the same config prepares it again.
  shutil.rmtree(shards[0].parent)
  (again,), _ = inputs.open_sources(config.data, "text", "train", workdir)
  assert sorted(again[i]["text"] for i in range(len(again))) == sorted(
      train[i]["text"] for i in range(len(train)))
