"""Datasets as TFDS ArrayRecord sources (no TensorFlow): local files, the embedded world, catalog.

`open_source(spec, kind, split, data_dir=...)` returns a random-access source (len, [i]) of
decoded records for grain. `spec` is one of
  - a glob (or comma-separated globs) of local .txt / .jsonl(.gz) / .html files,
  - "world": the embedded seeded world (jaxllm/data/world.py), written as JSONL first,
  - "tfds:NAME[/CONFIG][:VERSION]": a TFDS catalog dataset, downloaded and prepared as
    ArrayRecord on first use (needs the network once; later runs read data_dir). Offline, put
    the files TFDS would download in `manual_dir` (e.g. input.txt for tiny_shakespeare).
Local inputs become a TFDS builder whose config name is a fingerprint of the files' content and
the options, so a changed input is prepared again and an unchanged one is read from `data_dir`,
wherever the files (or the run directory) are. What reading dropped or repaired (malformed
lines, invalid UTF-8, empty documents) is counted and stored next to the prepared data as
read_counts.json.

Record kinds and their fields (all strings; `messages` is a JSON list of {role, content}):
  text: text, id        conversations: messages, id
  preferences: prompt, chosen, rejected, margin, id        rl_prompts: prompt, answer, id
A preference prompt is a string (the user's message) or a list of messages ending with a user
message (system prompt, earlier turns); `margin` is optional (a number, e.g. how strongly the
chosen reply wins, for the reward model's margin loss). Both are stored as JSON and decoded.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds

from jaxllm.data import chat, readers
from jaxllm.errors import ConfigError, UserError
from jaxllm.parallel import mesh as mesh_lib

KINDS = ("text", "conversations", "preferences", "rl_prompts")
SPLITS = ("train", "validation")
_FIELDS = {
    "text": ("text", "id"),
    "conversations": ("messages", "id"),
    "preferences": ("prompt", "chosen", "rejected", "margin", "id"),
    "rl_prompts": ("prompt", "answer", "id"),
}
_WORLD_FILES = {"text": "pretrain", "conversations": "sft", "preferences": "preferences",
                "rl_prompts": "rl"}
_ROLES = ("system", "user", "assistant", "tool")


class _DropCustomConfigWarning(logging.Filter):
  """TFDS warns on every builder with a config it did not predefine: ours always are."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_DropCustomConfigWarning())


@dataclasses.dataclass
class LocalFiles(tfds.core.BuilderConfig):
  """Which local files make each split, and how to read them."""
  train_files: tuple[str, ...] = ()
  validation_files: tuple[str, ...] = ()
  validation_fraction: float = 0.0  # without validation_files: records held out by id hash
  text_field: str = "text"
  separator: str | None = None
  skip_malformed: bool = False


def _in_validation(record_id: str, fraction: float) -> bool:
  """Deterministic hold-out by a hash of the record id (independent of file order)."""
  return zlib.crc32(record_id.encode()) % 100_000 < fraction * 100_000


def _check_messages(messages: Any, where: str, field: str = "messages") -> str:
  if not isinstance(messages, list) or not messages:
    got = "it is missing" if messages is None else f"got {json.dumps(messages)[:120]}"
    raise UserError(f"{where}: {field!r} must be a non-empty list of {{role, content}} objects; "
                    f"{got}.")
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(
        m.get("content"), str):
      raise UserError(f"{where}: {field}[{i}] must be an object with 'role' in {_ROLES} and a "
                      f"string 'content'; got {json.dumps(m)[:120]}.")
  if field == "prompt" and messages[-1]["role"] not in ("user", "tool"):
    raise UserError(f"{where}: a prompt given as messages must end with a user or tool "
                    f"message, not {messages[-1]['role']!r}; the replies follow it.")
  try:  # tool calls, role order: what render_chat would refuse later, without file:line
    chat.validate_messages(messages)
  except UserError as e:
    raise UserError(f"{where}: in {field!r}, {e}") from e
  return json.dumps(messages, ensure_ascii=False)


def _structured(kind: str, obj: dict, where: str) -> dict[str, str] | None:
  """A JSONL object -> the fields of `kind`, all strings; UserError naming what is missing."""
  if kind == "conversations":
    return {"messages": _check_messages(obj.get("messages"), where)}
  out = {}
  if kind == "preferences":
    obj = dict(obj)
    prompt, margin = obj.pop("prompt", None), obj.pop("margin", None)
    if isinstance(prompt, list):
      _check_messages(prompt, where, "prompt")
    elif not isinstance(prompt, str):
      raise UserError(f"{where}: field 'prompt' must be a string or a list of messages for "
                      f"preferences records; got {type(prompt).__name__}.")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
      raise UserError(f"{where}: field 'margin' must be a number (or absent); got {margin!r}.")
    out = {"prompt": json.dumps(prompt, ensure_ascii=False), "margin": json.dumps(margin)}
  for name in _FIELDS[kind][:-1]:
    if name in out:
      continue
    value = obj.get(name)
    if kind == "rl_prompts" and name == "answer" and isinstance(value, (int, float)):
      value = str(value)
    if not isinstance(value, str):
      got = "it is missing" if name not in obj else f"got {type(value).__name__}"
      raise UserError(f"{where}: field {name!r} must be a string for {kind} records "
                      f"(fields: {', '.join(_FIELDS[kind][:-1])}); {got}.")
    out[name] = value
  return out


class _LocalBuilder(tfds.core.GeneratorBasedBuilder):
  """Reads local files of one record kind into train/validation ArrayRecord splits."""
  VERSION = tfds.core.Version("1.0.0")
  KIND = ""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.read_counts = readers.ReadCounts()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(
        {name: tfds.features.Text() for name in _FIELDS[self.KIND]}))

  # TFDS prints "Downloading and preparing dataset Unknown size ..." in bold for every builder;
  # local files download nothing: one plain line instead.
  def _log_download_bytes(self) -> None:
    print(f"data: preparing {self.name}/{self.builder_config.name} from local files, once "
          f"(-> {self.data_dir})", flush=True)

  def _log_download_done(self) -> None:
    pass

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    if c.validation_files:
      return {"train": self._generate_examples(c.train_files, None),
              "validation": self._generate_examples(c.validation_files, None)}
    if c.validation_fraction > 0:
      return {"train": self._generate_examples(c.train_files, False),
              "validation": self._generate_examples(c.train_files, True)}
    return {"train": self._generate_examples(c.train_files, None)}

  def _records(self, path: str,
               counts: readers.ReadCounts) -> Iterator[tuple[str, dict[str, str]]]:
    c = self.builder_config
    if self.KIND == "text":
      for doc in readers.iter_documents(path, counts, text_field=c.text_field,
                                        separator=c.separator, skip_malformed=c.skip_malformed):
        yield doc.id, {"text": doc.text}
      return
    for line_no, obj in readers.iter_jsonl(path, counts, skip_malformed=c.skip_malformed):
      where = f"{path}:{line_no}"
      try:
        fields = _structured(self.KIND, obj, where)
      except UserError:
        if not c.skip_malformed:
          raise
        counts.malformed_lines += 1
        continue
      counts.records += 1
      yield str(obj.get("id", where)), fields

  def _generate_examples(self, files: Sequence[str], validation: bool | None = None):
    """validation=None: every record; True/False: only those the id hash holds out (or not)."""
    # A hash hold-out reads the same files twice; count them once.
    counts = readers.ReadCounts() if validation else self.read_counts
    c = self.builder_config
    # Ids name files relative to the inputs' common folder, so the ArrayRecord order (TFDS
    # shuffles by key) and the hash hold-out do not depend on where the files live.
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f))
                               for f in c.train_files + c.validation_files])
    seen = set()
    for path in files:
      relative = os.path.relpath(os.path.abspath(path), root)
      for record_id, fields in self._records(path, counts):
        if record_id.startswith(path):
          record_id = relative + record_id[len(path):]
        if validation is not None and _in_validation(
            record_id, self.builder_config.validation_fraction) != validation:
          continue
        key = record_id if record_id not in seen else f"{record_id}#{len(seen)}"
        seen.add(key)
        yield key, {**fields, "id": record_id}


class JaxllmText(_LocalBuilder):
  KIND = "text"


class JaxllmConversations(_LocalBuilder):
  KIND = "conversations"


class JaxllmPreferences(_LocalBuilder):
  VERSION = tfds.core.Version("1.1.0")  # 1.1: prompt may be messages; optional margin
  KIND = "preferences"


class JaxllmRlPrompts(_LocalBuilder):
  KIND = "rl_prompts"


BUILDERS: dict[str, type[_LocalBuilder]] = {
    "text": JaxllmText, "conversations": JaxllmConversations,
    "preferences": JaxllmPreferences, "rl_prompts": JaxllmRlPrompts}


def _fingerprint(kind: str, files: Sequence[pathlib.Path], options: dict) -> str:
  """The prepared dataset's name: a hash of the files' content (not their paths or times, so a
  run directory that is moved or copied, its data regenerated, still reads the same name) and
  the options that shape the records."""
  h = hashlib.sha256(json.dumps([kind, options], sort_keys=True).encode())
  for path in files:
    content = hashlib.sha256()
    with path.open("rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        content.update(block)
    h.update(f"{content.hexdigest()}\n".encode())
  return h.hexdigest()[:16]


def _legacy_fingerprint(kind: str, files: Sequence[pathlib.Path], options: dict) -> str:
  """The name jaxllm gave the same prepared dataset before names were by content (paths, sizes
  and modification times): a checkpoint written then still resumes while the files are as they
  were (`Source.aliases`)."""
  h = hashlib.sha256(json.dumps([kind, options], sort_keys=True).encode())
  for path in files:
    stat = path.stat()
    h.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
  return h.hexdigest()[:16]


@dataclasses.dataclass
class Source:
  """Decoded records of one split, random access for grain; `counts` are from preparation.
  `aliases`: other names of the same records (the name an older jaxllm gave them)."""
  name: str
  kind: str
  split: str
  data: Any  # tfds ArrayRecord data source: len() and [i] -> dict of bytes
  decode: Callable[[dict], dict]
  counts: dict[str, int]
  aliases: tuple[str, ...] = ()

  def __len__(self) -> int:
    return len(self.data)

  def __getitem__(self, index: int) -> dict:
    return self.decode(self.data[index])


def _decoder(kind: str, text_field: str, local: bool = True) -> Callable[[dict], dict]:
  """Raw ArrayRecord features -> a record; `local`: written by the builders here (JSON fields)."""
  def decode(raw: dict) -> dict:
    out = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in raw.items()}
    if kind == "text" and "text" not in out:
      if text_field not in out:
        raise ConfigError(f"the dataset has no field {text_field!r} (fields: {sorted(out)}); "
                          "set config.data.text_field.")
      out["text"] = out[text_field]
    if kind == "conversations":
      out["messages"] = json.loads(out["messages"])
    if kind == "preferences" and local:
      out["prompt"], out["margin"] = json.loads(out["prompt"]), json.loads(out["margin"])
    elif kind == "preferences":
      out.setdefault("margin", None)
    return out
  return decode


def _download_and_prepare(builder, manual_dir: str = "") -> None:
  tfds.disable_progress_bar()
  try:
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
    builder.download_and_prepare(file_format="array_record", download_config=download_config)
  except ModuleNotFoundError as e:
    if e.name != "tensorflow":
      raise
    raise UserError(f"preparing {builder.info.full_name} runs its TFDS builder code, which needs "
                    "TensorFlow: `pip install tensorflow-cpu` once (reading the prepared "
                    "ArrayRecord files afterwards does not), or convert the data to JSONL and "
                    "pass the files as config.data.source.") from e
  except AssertionError as e:  # TFDS refuses to write a split without examples
    if "No examples were yielded" not in str(e):
      raise
    config = builder.builder_config
    inputs = (", ".join(config.train_files + config.validation_files)
              if isinstance(config, LocalFiles) else builder.info.full_name)
    raise UserError(f"{inputs}: {str(e).rstrip('.')}; the input holds no records for that split "
                    "(check the files, config.data.eval_fraction or config.data.eval_input)."
                    ) from e


def _data_source(builder, split: str):
  """The split's ArrayRecord source; UserError naming a prepared shard that is gone."""
  for path in builder.info.splits[split].filepaths:
    if not path.exists():
      raise UserError(f"{path}: a prepared shard of {builder.info.full_name} is missing; delete "
                      f"{builder.data_dir} so the dataset is prepared again.")
  return builder.as_data_source(split)


def _local_builder(kind: str, train_files: Sequence[pathlib.Path],
                   validation_files: Sequence[pathlib.Path], data_dir: pathlib.Path,
                   **options) -> _LocalBuilder:
  files = list(train_files) + list(validation_files)
  name = _fingerprint(kind, files, {**options, "n_train": len(train_files)})
  config = LocalFiles(name=name, train_files=tuple(map(str, train_files)),
                      validation_files=tuple(map(str, validation_files)), **options)
  builder = BUILDERS[kind](config=config, data_dir=str(data_dir), file_format="array_record")
  builder.legacy_name = _legacy_fingerprint(kind, files, {**options, "n_train": len(train_files)})
  return builder


def _counts_path(builder) -> pathlib.Path:
  return pathlib.Path(builder.data_dir) / "read_counts.json"


def _world_dir_name(seed: int, sizes) -> str:
  """world-seed{seed}, plus a hash of the sizes when they are not the defaults."""
  from jaxllm.data import world
  if sizes is None or sizes == world.WorldSizes():
    return f"world-seed{seed}"
  digest = hashlib.sha256(repr(dataclasses.astuple(sizes)).encode()).hexdigest()[:8]
  return f"world-seed{seed}-{digest}"


def _world_files(directory: pathlib.Path, seed: int, sizes) -> dict[str, pathlib.Path]:
  """The world's JSONL files; rewritten only when their content changes (the prepared datasets
  are keyed by the content, so a rewrite with the same content would cost nothing either)."""
  from jaxllm.data import world
  directory.parent.mkdir(parents=True, exist_ok=True)
  out = {}

  def write():
    with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
      for name, path in world.write_jsonl_files(tmp, seed, sizes=sizes).items():
        dest = out[name] = directory / path.relative_to(tmp)
        if not dest.exists() or dest.read_bytes() != path.read_bytes():
          dest.parent.mkdir(parents=True, exist_ok=True)
          shutil.copyfile(path, dest)
  # Process 0 first: on a shared disk the others then find equal files and leave them alone.
  mesh_lib.process_zero_first(lambda: True, write, "world-files")
  return out


def open_source(spec: str, kind: str, split: str, *, data_dir, eval_input: str = "",
                eval_fraction: float = 0.0, text_field: str = "text",
                separator: str | None = None, skip_malformed: bool = False,
                world_seed: int = 0, world_sizes=None, manual_dir: str = "") -> Source:
  """Prepares (once) and opens split `split` ("train" / "validation", or a catalog split name)."""
  if kind not in KINDS:
    raise ConfigError(f"record kind {kind!r} is not one of {KINDS}.")
  data_dir = pathlib.Path(data_dir)
  if spec.startswith("tfds:"):
    return _catalog_source(spec[len("tfds:"):], kind, split, data_dir, text_field, manual_dir)
  if split not in SPLITS:
    raise ConfigError(f"split {split!r}: local and world datasets have splits {SPLITS}.")
  options = {"text_field": text_field, "separator": separator or None,
             "skip_malformed": skip_malformed}
  if spec == "world":
    files = _world_files(data_dir / _world_dir_name(world_seed, world_sizes), world_seed,
                         world_sizes)
    name = _WORLD_FILES[kind]
    make_builder = functools.partial(_local_builder, kind, [files[f"train/{name}"]],
                                     [files[f"eval/{name}"]], data_dir, **options)
  else:
    train_files = readers.expand_inputs(spec)
    validation_files = readers.expand_inputs(eval_input) if eval_input else []
    if not validation_files and not 0.0 <= eval_fraction < 1.0:
      raise ConfigError(f"config.data.eval_fraction={eval_fraction} must be in [0, 1).")
    make_builder = functools.partial(
        _local_builder, kind, train_files, validation_files, data_dir,
        validation_fraction=0.0 if validation_files else eval_fraction, **options)
  builder = make_builder()

  def prepare():
    _download_and_prepare(builder)
    _counts_path(builder).write_text(json.dumps(builder.read_counts.as_dict()))
  mesh_lib.process_zero_first(lambda: not _counts_path(builder).exists(), prepare,
                              f"prepare-{kind}-{split}")
  builder = make_builder()  # reads the splits another process may have just written
  counts = json.loads(_counts_path(builder).read_text())
  if split not in builder.info.splits:
    raise ConfigError(f"{spec!r} has no {split!r} split: hold out documents with "
                      "config.data.eval_fraction > 0 or give config.data.eval_input.")
  name = f"{builder.name}/{builder.builder_config.name}"  # loads again as "tfds:" + name
  return Source(name, kind, split, _data_source(builder, split), _decoder(kind, text_field),
                counts, aliases=(f"{builder.name}/{builder.legacy_name}",))


def _catalog_source(name: str, kind: str, split: str, data_dir: pathlib.Path, text_field: str,
                    manual_dir: str) -> Source:
  def make_builder():
    try:
      return tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError as e:
      raise ConfigError(f"'tfds:{name}' is not a TFDS dataset ({e}); check the name in the TFDS "
                        "catalog.") from e
  builder = make_builder()
  mesh_lib.process_zero_first(lambda: not builder.is_prepared(),
                              lambda: _download_and_prepare(builder, manual_dir), f"tfds-{split}")
  builder = make_builder()
  if split not in builder.info.splits:
    raise ConfigError(f"'tfds:{name}' has splits {sorted(builder.info.splits)}, not {split!r}; "
                      "set config.data.train_split / eval_split.")
  return Source(name, kind, split, _data_source(builder, split),
                _decoder(kind, text_field, local=False), {})
