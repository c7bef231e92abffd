"""Batching with grain: shard, shuffle, tokenize, split, pack, batch, prefetch; exact resume.

    records (one random-access source per dataset, weighted mixture)
      -> one data shard s of S (records s, s + S, s + 2S, ...); S = config.data.shards, or one
         per process; a process reads the S / P shards s = p * S / P, ...
      -> shuffle (a fresh seeded order each epoch) and repeat
      -> to_example: record -> {"tokens": [n], "loss_mask": [n]}  (pretraining text or chat)
      -> shift and split: inputs/targets/loss_mask pieces of at most seq_len tokens; a long
         document becomes several rows, nothing is truncated
      -> mixture of the datasets by weight
      -> pack pieces into rows of seq_len (first-fit or best-fit) with segment ids and positions
      -> batch of batch_size / S rows per shard; this process's shards side by side
         (batch_size / P rows) -> prefetch

Each shard is its own stream, so the global batch (every shard's rows in shard order) depends on
S, not on the process count P: with config.data.shards fixed, a run on 1, 2 or S processes sees
the same batches, and a checkpoint's data position (one per shard) restores on another P.

With packing="rows" the examples are fixed-shape rows already (preference pairs,
jaxllm/data/preferences.py): they skip the split and pack steps and are batched as they come.

Rows: inputs, targets [B, L] int32; loss_mask [B, L] float32 (0 on padding); segment_ids
[B, L] int32 (1-based per piece, 0 = padding); positions [B, L] int32 (restart per piece).
`Batches` wraps the grain iterator: its state (saved in the model's checkpoint) carries the
settings that fix the order, and restoring into batches built otherwise is refused.
"""

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from jaxllm.errors import ConfigError

Example = dict[str, np.ndarray]
PACKINGS = ("first_fit", "best_fit", "rows")


def text_example(tokenizer, field: str = "text") -> Callable[[dict], Example]:
  """Pretraining record -> <|bos|> text <|eos|>, loss on every token."""
  bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
  eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []

  def to_example(record: dict) -> Example:
    tokens = np.asarray(bos + tokenizer.encode(record[field]) + eos, np.int32)
    return {"tokens": tokens, "loss_mask": np.ones(len(tokens), np.float32)}
  return to_example


def chat_example(tokenizer, field: str = "messages") -> Callable[[dict], Example]:
  """Conversation record -> its ChatML ids, loss only on what the assistant writes."""
  from jaxllm.data import chat  # chat imports the tokenizer module; keep this module light

  def to_example(record: dict) -> Example:
    ids, mask = chat.render_chat(tokenizer, record[field])
    return {"tokens": np.asarray(ids, np.int32), "loss_mask": np.asarray(mask, np.float32)}
  return to_example


def chat_or_text_example(tokenizer, field: str = "messages") -> Callable[[dict], Example]:
  """Conversation records as chat_example, text records ({"text"}, no `field`) as text_example:
  fine-tuning data with pretraining text mixed in against forgetting."""
  chat_fn, text_fn = chat_example(tokenizer, field), text_example(tokenizer)
  return lambda record: chat_fn(record) if field in record else text_fn(record)


def split_example(example: Example, seq_len: int) -> list[Example]:
  """tokens [n] -> pieces with inputs = tokens[:-1], targets = tokens[1:], <= seq_len each."""
  tokens, mask = example["tokens"], example["loss_mask"]
  inputs, targets, target_mask = tokens[:-1], tokens[1:], mask[1:].astype(np.float32)
  return [{"inputs": inputs[i:i + seq_len], "targets": targets[i:i + seq_len],
           "loss_mask": target_mask[i:i + seq_len]}
          for i in range(0, len(inputs), seq_len)]


class _SplitIterator(grain.DatasetIterator):
  """Yields the pieces of each parent example; state = (parent state, pieces already emitted)."""

  def __init__(self, parent, seq_len: int):
    super().__init__(parent)
    self._seq_len = seq_len
    self._start_state = self._parent.get_state()
    self._pieces: list[Example] = []
    self._emitted = 0

  def __next__(self) -> Example:
    while self._emitted >= len(self._pieces):
      self._start_state = self._parent.get_state()
      self._pieces = split_example(next(self._parent), self._seq_len)
      self._emitted = 0
    self._emitted += 1
    return self._pieces[self._emitted - 1]

  def get_state(self) -> dict:
    return {"parent": self._start_state, "emitted": self._emitted}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["parent"])
    self._start_state, self._pieces, self._emitted = state["parent"], [], 0
    if state["emitted"]:
      self._pieces = split_example(next(self._parent), self._seq_len)
      self._emitted = state["emitted"]


class _SplitDataset(grain.IterDataset):
  def __init__(self, parent: grain.IterDataset, seq_len: int):
    super().__init__(parent)
    self._seq_len = seq_len

  def __iter__(self) -> _SplitIterator:
    return _SplitIterator(self._parent.__iter__(), self._seq_len)


def _to_row(packed: dict) -> Example:
  segment_ids = packed["inputs_segment_ids"].astype(np.int32)
  return {
      "inputs": packed["inputs"].astype(np.int32),
      "targets": packed["targets"].astype(np.int32),
      "loss_mask": (packed["loss_mask"] * (segment_ids > 0)).astype(np.float32),
      "segment_ids": segment_ids,
      "positions": packed["inputs_positions"].astype(np.int32),
  }


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
  """What fixes the stream of batches (all of it goes into the resume fingerprint)."""
  seq_len: int
  batch_size: int  # global rows per batch
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None  # None: repeat forever
  weights: tuple[float, ...] = ()  # one per source; empty: equal
  packing: str = "first_fit"  # first_fit | best_fit | rows (examples are rows already)
  packing_bins: int = 0  # 0: the rows of one shard's batch
  process_index: int = 0
  process_count: int = 1
  # True: each process reads only its data shards' records. False: every process reads the whole
  # stream and keeps its rows of each global batch (costs each process the tokenizing of all
  # data). Either way the batches do not depend on the process count when `shards` is fixed.
  shard_by_process: bool = True
  shards: int = 0  # data shards (shard_by_process); 0: one per process
  prefetch: int = 2  # batches prefetched on a thread (0: none)
  num_workers: int = 0  # >0: grain worker processes for tokenizing and packing
  read_threads: int = 0  # threads reading and tokenizing records ahead (0: in line)


def shard_layout(c: BatchingConfig) -> tuple[range, int, int]:
  """(the data shards this process reads, the number of shards, rows per shard per batch)."""
  if c.batch_size % c.process_count:
    raise ConfigError(f"config.train.batch_size={c.batch_size} is not divisible by the "
                      f"{c.process_count} processes; change it.")
  if not c.shard_by_process:
    return range(1), 1, c.batch_size
  count = c.shards or c.process_count
  if c.shards < 0 or count % c.process_count:
    raise ConfigError(f"config.data.shards={c.shards} must be a positive multiple of the "
                      f"{c.process_count} processes (or 0: one shard per process).")
  if c.batch_size % count:
    raise ConfigError(f"config.train.batch_size={c.batch_size} is not divisible by the {count} "
                      "data shards (config.data.shards); change one of them.")
  per_process = count // c.process_count
  first = c.process_index * per_process
  return range(first, first + per_process), count, c.batch_size // count


def _shard(sources: Sequence[Any], to_example: Callable[[dict], Example], c: BatchingConfig,
           shard: int, count: int, rows: int) -> grain.IterDataset:
  """Batches of `rows` rows from records shard, shard + count, ... of every source."""
  weights = c.weights or (1.0,) * len(sources)
  pieces = []
  for i, source in enumerate(sources):
    ds = grain.MapDataset.source(source)[shard::count]
    if len(ds) == 0:
      raise ConfigError(f"dataset {i} has {len(source)} records, too few to give each of the "
                        f"{count} data shards one; add data or lower config.data.shards.")
    if c.shuffle:
      ds = ds.shuffle(seed=c.seed + i)
    ds = ds.repeat(c.num_epochs).map(to_example)
    read = grain.ReadOptions(num_threads=c.read_threads, prefetch_buffer_size=4 * c.read_threads)
    ds = ds.to_iter_dataset(read)
    pieces.append(ds if c.packing == "rows" else _SplitDataset(ds, c.seq_len))
  ds = pieces[0] if len(pieces) == 1 else grain.IterDataset.mix(pieces, list(weights))
  if c.packing != "rows":
    pack = (grain.experimental.FirstFitPackIterDataset if c.packing == "first_fit" else
            grain.experimental.BestFitPackIterDataset)
    length = {"inputs": c.seq_len, "targets": c.seq_len, "loss_mask": c.seq_len}
    ds = pack(ds, length_struct=length, num_packing_bins=c.packing_bins or rows,
              seed=c.seed, shuffle_bins=c.shuffle).map(_to_row)
  return ds.batch(rows, drop_remainder=c.num_epochs is None)


class _ShardsIterator(grain.DatasetIterator):
  """The next batch of every shard, rows side by side; state = each shard's position."""

  def __init__(self, parents, shards: range):
    super().__init__(parents)
    self._shards = shards

  def __next__(self) -> Example:
    batches = [next(parent) for parent in self._parents]
    if len(batches) == 1:
      return batches[0]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def get_state(self) -> dict:
    return {"shards": {str(s): p.get_state() for s, p in zip(self._shards, self._parents)}}

  def set_state(self, state: dict) -> None:
    for s, parent in zip(self._shards, self._parents):
      parent.set_state(state["shards"][str(s)])


class _ShardsDataset(grain.IterDataset):
  def __init__(self, parents: list[grain.IterDataset], shards: range):
    super().__init__(parents)
    self._shards = shards

  def __iter__(self) -> _ShardsIterator:
    return _ShardsIterator([p.__iter__() for p in self._parents], self._shards)


def _check(sources: Sequence[Any], c: BatchingConfig) -> None:
  if c.packing not in PACKINGS:
    raise ConfigError(f"config.data.packing={c.packing!r} is not one of {PACKINGS}.")
  weights = c.weights or (1.0,) * len(sources)
  if len(weights) != len(sources) or min(weights) <= 0:
    raise ConfigError(f"config.data.weights={list(c.weights)} must hold one positive weight "
                      f"per dataset ({len(sources)}).")


def build(sources: Sequence[Any], to_example: Callable[[dict], Example],
          config: BatchingConfig) -> grain.IterDataset:
  """The grain dataset of per-process batches (see the module docstring)."""
  c = config
  _check(sources, c)
  shards, count, rows = shard_layout(c)
  ds = _ShardsDataset([_shard(sources, to_example, c, s, count, rows) for s in shards], shards)
  if not c.shard_by_process:
    ds = ds.map(functools.partial(_own_rows, c))
  if c.num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=c.num_workers))
  elif c.prefetch > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=c.prefetch)
  return ds


def settings(sources: Sequence[Any], config: BatchingConfig) -> dict:
  """What fixes the batches: the sources (name, split, length), the batching config and the
  number of data shards. The process layout counts only with worker processes, whose position
  is per process; otherwise every shard's position is saved and any layout can take it."""
  what = [[getattr(s, "name", type(s).__name__), getattr(s, "split", ""), len(s)]
          for s in sources]
  ignored = ("prefetch", "read_threads")  # these do not change the order
  if config.num_workers == 0:
    ignored += ("process_index", "process_count")
  fixed = {k: v for k, v in dataclasses.asdict(config).items() if k not in ignored}
  fixed["shards"] = shard_layout(config)[1]
  return json.loads(json.dumps({"sources": what, **fixed}))


_FIELD_NAMES = {"batch_size": "config.train.batch_size", "seed": "config.seed",
                "sources": "config.data.source", "weights": "config.data.source weights",
                "process_index": "the process index", "process_count": "the process count",
                "shards": "config.data.shards (0 = one per process)"}


class Batches:
  """Iterator of this process's batches; get_state/set_state for the checkpoint.

  The state records the settings that fix the batches; restoring into batches with other
  settings is refused with the fields that differ, since it would silently read other data.
  Without worker processes the state is {"settings", "shards": {shard: position}}: the union of
  the states of all processes restores on any number of processes that divides the shards
  (see checkpoint.restore).
  """

  def __init__(self, sources: Sequence[Any], to_example: Callable[[dict], Example],
               config: BatchingConfig):
    self.config = config
    self._iter = iter(build(sources, to_example, config))
    self._settings = settings(sources, config)
    self._shards = shard_layout(config)[0]
    # A source's other names (its name under an older jaxllm) -> its name now.
    self._aliases = {alias: s.name for s in sources for alias in getattr(s, "aliases", ())}

  def __iter__(self) -> "Batches":
    return self

  def __next__(self) -> Example:
    return next(self._iter)

  def get_state(self) -> dict:
    state = self._iter.get_state()
    if self.config.num_workers > 0:
      return {"settings": self._settings, "grain": state}
    return {"settings": self._settings, "shards": state["shards"]}

  def set_state(self, state: dict) -> None:
    saved = dict(state.get("settings", {}))
    if isinstance(saved.get("sources"), list):
      saved["sources"] = [[self._aliases.get(s[0], s[0]), *s[1:]] if isinstance(s, list) else s
                          for s in saved["sources"]]
    changed = [f"{_FIELD_NAMES.get(k, 'config.data.' + k)}: {saved.get(k)!r} in the checkpoint, "
               f"{v!r} now" for k, v in self._settings.items() if saved.get(k) != v]
    if changed:
      raise ConfigError("the checkpoint's data position was written with other data settings ("
                        + "; ".join(changed) + "); restore them or start in a new --workdir.")
    if self.config.num_workers > 0:
      self._iter.set_state(state["grain"])
      return
    missing = [s for s in self._shards if str(s) not in state["shards"]]
    if missing:
      raise ConfigError(f"the checkpoint has no data position for shards {missing} of "
                        f"config.data.shards={self._settings['shards']}; it is incomplete, "
                        "start in a new --workdir.")
    self._iter.set_state({"shards": {str(s): state["shards"][str(s)] for s in self._shards}})

  def close(self) -> None:
    """Stops prefetch threads or worker processes."""
    close = getattr(self._iter, "close", None)
    if close is not None:
      close()


def padded_batches(sources: Sequence[Any], to_example: Callable[[dict], Example],
                   config: BatchingConfig, max_batches: int) -> list[Example]:
  """Exactly `max_batches` batches of one unshuffled pass; once a shard's data runs out, its
  rows are padding (loss_mask 0), so every process evaluates the same number of batches."""
  c = dataclasses.replace(config, shuffle=False, num_epochs=1, prefetch=0, num_workers=0)
  _check(sources, c)
  shards, count, rows = shard_layout(c)
  columns = []
  for shard in shards:
    it = iter(_shard(sources, to_example, c, shard, count, rows))
    column = []
    for _ in range(max_batches):
      batch = next(it, None)
      if batch is None:
        if column:
          batch = {k: np.zeros((0,) + v.shape[1:], v.dtype) for k, v in column[0].items()}
        elif c.packing == "rows":  # zero rows shaped like the examples
          batch = {k: np.zeros((0,) + np.shape(v), np.asarray(v).dtype)
                   for k, v in to_example(sources[0][0]).items()}
        else:
          batch = _empty_batch(rows, c.seq_len)
      pad = rows - len(next(iter(batch.values())))
      column.append({k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
                     for k, v in batch.items()})
    columns.append(column)
  out = [{k: np.concatenate([col[i][k] for col in columns]) for k in columns[0][i]}
         for i in range(max_batches)]
  return out if c.shard_by_process else [_own_rows(c, b) for b in out]


def _own_rows(c: BatchingConfig, batch: Example) -> Example:
  """This process's rows of a global batch (shard_by_process=False: every process reads all)."""
  local_batch = c.batch_size // c.process_count
  first = c.process_index * local_batch
  return {k: v[first:first + local_batch] for k, v in batch.items()}


def row_layout(seq_len: int) -> dict[str, tuple[tuple[int, ...], type]]:
  """key -> (shape of one row, dtype) of the packed rows these batches hold."""
  return {"inputs": ((seq_len,), np.int32), "targets": ((seq_len,), np.int32),
          "loss_mask": ((seq_len,), np.float32), "segment_ids": ((seq_len,), np.int32),
          "positions": ((seq_len,), np.int32)}


def _empty_batch(rows: int, seq_len: int) -> Example:
  return {k: np.zeros((rows, *shape), dtype) for k, (shape, dtype) in row_layout(seq_len).items()}
