"""Language-modelling batches: documents packed into fixed windows, a resumable sharded iterator.

A window holds seq_len + 1 tokens of the concatenated document stream; inputs are the first
seq_len, targets the last seq_len. Segment ids (1-based per document in the window) keep
documents from attending to each other, positions restart at each document, and the loss mask
drops targets that belong to the next document.
"""

from typing import Iterator

import numpy as np

from jaxllm.errors import ConfigError


def pack_windows(docs: list[list[int]], seq_len: int) -> dict[str, np.ndarray]:
  """Token lists -> arrays [N, seq_len]: inputs, targets, loss_mask, segment_ids, positions."""
  tokens = np.concatenate([np.asarray(d, np.int32) for d in docs])
  doc_ids = np.concatenate([np.full(len(d), i, np.int32) for i, d in enumerate(docs)])
  n = (len(tokens) - 1) // seq_len
  if n < 1:
    raise ConfigError(f"{len(tokens)} tokens do not fill one window of config.data.seq_len="
                      f"{seq_len}; add documents (config.data.num_docs) or shorten seq_len.")
  idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
  tok, doc = tokens[idx], doc_ids[idx]
  inputs_doc = doc[:, :-1]
  new_doc = np.concatenate([np.ones((n, 1), bool), inputs_doc[:, 1:] != inputs_doc[:, :-1]], 1)
  segment_ids = np.cumsum(new_doc, axis=1).astype(np.int32)
  # Position = distance to the start of the segment.
  col = np.broadcast_to(np.arange(seq_len), (n, seq_len))
  starts = np.maximum.accumulate(np.where(new_doc, col, 0), axis=1)
  return {
      "inputs": tok[:, :-1],
      "targets": tok[:, 1:],
      "loss_mask": (doc[:, 1:] == inputs_doc).astype(np.float32),
      "segment_ids": segment_ids,
      "positions": (col - starts).astype(np.int32),
  }


class BatchIterator(Iterator[dict[str, np.ndarray]]):
  """Deterministic, resumable, per-process iterator over windows.

  Global batch n takes rows n*B ... n*B + B - 1 of an endless stream that visits all windows in
  a fresh seeded permutation each epoch; process p of P yields its contiguous B / P rows.
  The state is the next batch index plus what fixes the order (batch size, number of
  windows, seed); restoring into an iterator that differs in those is refused, since it would
  silently read other data.
  """

  def __init__(self, windows: dict[str, np.ndarray], global_batch_size: int, seed: int,
               shuffle: bool = True, process_index: int = 0, process_count: int = 1):
    if global_batch_size % process_count:
      raise ConfigError(f"config.train.batch_size={global_batch_size} is not divisible by the "
                        f"{process_count} processes; change it.")
    self.windows = windows
    self.num_windows = len(next(iter(windows.values())))
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed, self.shuffle = seed, shuffle
    self.process_index = process_index
    self.index = 0
    self._perms: dict[int, np.ndarray] = {}

  def _order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self.num_windows)
    if epoch not in self._perms:
      self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)}
    return self._perms[epoch]

  def __next__(self) -> dict[str, np.ndarray]:
    start = self.index * self.global_batch_size + self.process_index * self.local_batch_size
    ks = np.arange(start, start + self.local_batch_size)
    rows = np.array([self._order(k // self.num_windows)[k % self.num_windows] for k in ks])
    self.index += 1
    return {key: value[rows] for key, value in self.windows.items()}

  def _fingerprint(self) -> dict[str, int]:
    return {"global_batch_size": self.global_batch_size, "num_windows": self.num_windows,
            "seed": int(self.seed), "shuffle": int(self.shuffle)}

  def get_state(self) -> dict[str, int]:
    return {"index": self.index, **self._fingerprint()}

  def set_state(self, state: dict[str, int]) -> None:
    saved = {k: state[k] for k in self._fingerprint() if k in state}
    if saved != self._fingerprint():
      raise ConfigError(
          f"the checkpoint's data position was written for {saved}, but this run has "
          f"{self._fingerprint()} (config.train.batch_size, config.data.*, config.seed); restore "
          "those values or start in a new --workdir.")
    self.index = int(state["index"])
