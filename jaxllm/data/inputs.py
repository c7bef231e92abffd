"""A run's inputs from its config: datasets, tokenizer, train iterator and eval batches.

config.data.source names one dataset or a weighted mixture, `SPEC[@WEIGHT];SPEC[@WEIGHT]...`,
where SPEC is "world" (the embedded world), a glob of local files, or "tfds:NAME" (see
jaxllm/data/sources.py). Every stage (pretraining, SFT, ...) builds its inputs here, with its
own record kind and `to_example` function.
"""

import json
import pathlib
import tempfile
from collections.abc import Callable

import jax
import ml_collections

from jaxllm import rundir, storage
from jaxllm.data import batching, chat, preferences, sources, stream
from jaxllm.data import tokenizer as tokenizer_lib
from jaxllm.errors import ConfigError, UserError
from jaxllm.parallel import mesh as mesh_lib


def parse_mixture(source: str) -> list[tuple[str, float]]:
  """'world@0.3;data/*.jsonl@0.7' -> [("world", 0.3), ("data/*.jsonl", 0.7)]."""
  out = []
  for part in filter(None, (p.strip() for p in source.split(";"))):
    spec, sep, weight = part.rpartition("@")
    if not sep:
      spec, weight = part, "1"
    try:
      out.append((spec, float(weight)))
    except ValueError:
      raise ConfigError(f"config.data.source: {part!r} has weight {weight!r}, not a number; "
                        "write SPEC@WEIGHT, e.g. 'world@0.3;data/*.jsonl@0.7'.") from None
  if not out:
    raise ConfigError("config.data.source is empty; give 'world', a file glob or 'tfds:NAME'.")
  return out


def world_sizes(data_config: ml_collections.ConfigDict):
  """config.data.world_sizes -> world.WorldSizes (None when absent: the defaults)."""
  from jaxllm.data import world  # the generator is only needed for "world" sources
  counts = data_config.get("world_sizes")
  return None if counts is None else world.WorldSizes(**dict(counts))


def data_dir(data_config: ml_collections.ConfigDict, workdir) -> pathlib.Path:
  """Where prepared ArrayRecord data lives: config.data.data_dir, or WORKDIR/data (for a gs://
  WORKDIR, in its local folder: ArrayRecord files are read from local disk,
  jaxllm/storage.py local_folder)."""
  if data_config.data_dir:
    return pathlib.Path(data_config.data_dir)
  return storage.local_folder(workdir) / "data"


def open_sources(data_config: ml_collections.ConfigDict, kind: str, split: str,
                 workdir) -> tuple[list[sources.Source], tuple[float, ...]]:
  """The datasets of config.data.source (one split each) and their mixture weights."""
  d = data_config
  out, weights = [], []
  for spec, weight in parse_mixture(d.source):
    catalog = spec.startswith("tfds:")
    source_split = (d.train_split if split == "train" else d.eval_split) if catalog else split
    out.append(sources.open_source(
        spec, kind, source_split, data_dir=data_dir(d, workdir), eval_input=d.eval_input,
        eval_fraction=d.eval_fraction, text_field=d.text_field, separator=d.separator,
        skip_malformed=d.skip_malformed, world_seed=d.world_seed,
        world_sizes=world_sizes(d), manual_dir=d.manual_dir))
    weights.append(weight)
    dropped = {k: v for k, v in out[-1].counts.items()
               if k in ("malformed_lines", "invalid_utf8", "empty") and v}
    shown = d.eval_input if split != "train" and d.eval_input and not catalog else spec
    print(f"data {split}: {shown} -> {out[-1].name}, {len(out[-1]):,} records"
          + (f" (when prepared: {dropped})" if dropped else ""), flush=True)
  return out, tuple(weights)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def save_run_tokenizer(tok: tokenizer_lib.Tokenizer, workdir, given: str = "") -> None:
  """Writes the tokenizer a run trains with into it (tokenizer.json, tokenizer_config.json), so
  the run directory is whole wherever it is moved; process 0 writes. A run that has checkpoints
  keeps its own: another tokenizer (`given` names where it came from) is refused."""
  if jax.process_index() != 0:
    return
  workdir = storage.path(workdir)
  if rundir.latest_step(workdir) is not None and (workdir / "tokenizer.json").is_file():
    with tempfile.TemporaryDirectory() as tmp:
      chat.save_pretrained(tok, tmp)
      same = all(_json_or_none(storage.path(tmp) / f) == _json_or_none(workdir / f)
                 for f in TOKENIZER_FILES)
    if not same:
      raise UserError(f"{given or 'the tokenizer'} differs from {workdir / 'tokenizer.json'}, "
                      f"the tokenizer the run in --workdir={workdir} was trained with; resume "
                      "it with that one, or start in a new --workdir.")
    return
  chat.save_pretrained(tok, workdir)


def _json_or_none(path):
  return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def tokenizer(data_config: ml_collections.ConfigDict, workdir,
              train_sources: list[sources.Source],
              extra_special_tokens: tuple[str, ...] = ()) -> tokenizer_lib.Tokenizer:
  """config.data.tokenizer, or a byte-level BPE trained on the training text (saved in workdir).

  A run that resumes reloads WORKDIR/tokenizer.json rather than training again.
  A trained one also holds `extra_special_tokens` (a masked-LM run's mask token), within
  tokenizer_vocab_size.
  """
  d = data_config
  if d.tokenizer:
    return _given_tokenizer(d.tokenizer, workdir)

  def texts():
    for source in train_sources:
      for i in range(min(len(source), d.tokenizer_train_docs)):
        yield source[i]["text"]
  return _workdir_tokenizer(workdir, lambda: tokenizer_lib.train_tokenizer(
      texts(), kind="bpe", vocab_size=d.tokenizer_vocab_size,
      special_tokens=tokenizer_lib.SPECIAL_TOKENS + tuple(extra_special_tokens)))


def _given_tokenizer(path: str, workdir) -> tokenizer_lib.Tokenizer:
  """config.data.tokenizer, copied into the run (the run's own copy is what later commands
  read)."""
  tok = tokenizer_lib.Tokenizer.from_file(path)
  save_run_tokenizer(tok, workdir, f"config.data.tokenizer={path!r}")
  return tok


def _workdir_tokenizer(workdir, make: Callable[[], tokenizer_lib.Tokenizer]
                       ) -> tokenizer_lib.Tokenizer:
  """WORKDIR/tokenizer.json, made by `make()` and saved there unless it exists.

  Process 0 makes it first; on a shared workdir the others load its file (making is
  deterministic, so processes with their own disks make the same tokenizer).
  """
  path = storage.path(workdir) / "tokenizer.json"

  def make_and_save():
    path.parent.mkdir(parents=True, exist_ok=True)
    make().save(path)
  mesh_lib.process_zero_first(lambda: not path.exists(), make_and_save, "tokenizer")
  return tokenizer_lib.Tokenizer.from_file(path)


def stream_tokenizer(data_config: ml_collections.ConfigDict, workdir) -> tokenizer_lib.Tokenizer:
  """The tokenizer of a config.data.path run: config.data.tokenizer, else one made from the file
  by config.data.tokenizer_kind ("char": one id per character, as nanoGPT's shakespeare_char;
  "bpe": byte-level BPE of tokenizer_vocab_size), saved to WORKDIR/tokenizer.json."""
  d = data_config
  if d.tokenizer:
    return _given_tokenizer(d.tokenizer, workdir)
  if d.tokenizer_kind not in ("char", "bpe"):
    raise ConfigError(f"config.data.tokenizer_kind={d.tokenizer_kind!r} is not 'char' or 'bpe'.")

  def make():
    text = stream.read_text(d.path)
    if d.tokenizer_kind == "char":
      return stream.char_tokenizer(text)
    return tokenizer_lib.train_tokenizer([text], vocab_size=d.tokenizer_vocab_size)
  return _workdir_tokenizer(workdir, make)


def stream_train_and_eval(config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer):
  """(train iterator, eval-batches function) over config.data.path as one token stream: the
  first 90% trains, the rest validates, random windows of seq_len (jaxllm/data/stream.py)."""
  t = config.train
  train, validation = stream.split_tokens(stream.encode_file(config.data.path, tokenizer))
  print(f"data: {config.data.path} -> {len(train):,} train and {len(validation):,} validation "
        "tokens", flush=True)
  rows = t.batch_size // jax.process_count()
  train_iter = stream.RandomWindows(train, rows, config.data.seq_len, config.seed)

  def eval_batches():
    return stream.eval_windows(validation, rows // t.microbatches, config.data.seq_len,
                               t.eval_batches, config.seed)
  return train_iter, eval_batches


def batching_config(config: ml_collections.ConfigDict, **overrides) -> batching.BatchingConfig:
  d, t = config.data, config.train
  values = {
      "seq_len": d.seq_len, "batch_size": t.batch_size, "seed": config.seed,
      "packing": d.packing, "packing_bins": d.packing_bins, "prefetch": d.prefetch,
      "read_threads": d.read_threads, "num_workers": d.num_workers,
      "shard_by_process": d.shard_by_process, "shards": d.shards,
      "process_index": jax.process_index(),
      "process_count": jax.process_count()}
  return batching.BatchingConfig(**{**values, **overrides})


def train_and_eval(config: ml_collections.ConfigDict, workdir, kind: str,
                   to_example: Callable[[dict], batching.Example],
                   train_sources=None, weights=None, eval_sources=None,
                   eval_example: Callable[[dict], batching.Example] | None = None):
  """(train iterator, eval-batches function) for the record kind of a stage; `eval_example`
  builds the eval rows when they differ from the training ones."""
  if train_sources is None:
    train_sources, weights = open_sources(config.data, kind, "train", workdir)
  eval_weights = weights
  if eval_sources is None:
    eval_sources, eval_weights = open_sources(config.data, kind, "validation", workdir)
  eval_example = eval_example or to_example
  t = config.train
  train_iter = batching.Batches(train_sources, to_example,
                                batching_config(config, weights=weights))
  eval_config = batching_config(config, batch_size=t.batch_size // t.microbatches,
                                weights=eval_weights)

  def eval_batches():  # microbatch-sized, so eval fits wherever a train microbatch fits
    return batching.padded_batches(eval_sources, eval_example, eval_config, t.eval_batches)
  return train_iter, eval_batches


def preference_pairs(config: ml_collections.ConfigDict, workdir, tokenizer,
                     reference: Callable[[list], dict] | None = None):
  """(train iterator, eval batches) of preference pair rows (jaxllm/data/preferences.py).

  config.data.annotator relabels the training pairs (and its effect is printed); eval pairs
  keep their true labels. `reference(train_sources + eval_sources)` -> {sequence_key: logp}
  adds reference log-probs to every row.
  """
  train_sources, weights = open_sources(config.data, "preferences", "train", workdir)
  eval_sources, _ = open_sources(config.data, "preferences", "validation", workdir)
  annotator = preferences.annotator_from_config(config.data.annotator)
  if annotator is not None:
    summary = preferences.annotation_summary(
        annotator, (s[i] for s in train_sources for i in range(len(s))))
    print(f"simulated annotator (noise {annotator.noise}, length bias {annotator.length_bias}): "
          f"of {summary['pairs']:,} training pairs it kept {summary['kept']:.1%}, flipped "
          f"{summary['flipped_length']:.1%} for length and {summary['flipped_noise']:.1%} by "
          "noise", flush=True)
  table = None if reference is None else reference(train_sources + eval_sources)
  seq_len = config.data.seq_len
  return train_and_eval(
      config, workdir, "preferences",
      preferences.pair_example(tokenizer, seq_len, annotator, table),
      train_sources, weights, eval_sources,
      eval_example=preferences.pair_example(tokenizer, seq_len, None, table))


def check_vocab(config: ml_collections.ConfigDict, vocab_size: int) -> None:
  """config.model.vocab_size = 0 takes the tokenizer's, rounded up to a multiple of 128."""
  if config.model.vocab_size == 0:
    config.model.vocab_size = -(-vocab_size // 128) * 128
  elif config.model.vocab_size < vocab_size:
    raise ConfigError(f"config.model.vocab_size={config.model.vocab_size} is smaller than the "
                      f"tokenizer's {vocab_size} ids; raise it (or set 0 to follow the tokenizer).")
