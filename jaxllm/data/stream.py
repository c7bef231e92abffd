"""One text file as a token stream: a 90/10 train/validation split and random windows (nanoGPT).

nanoGPT's data path: the whole file is encoded once, the first 90% of its tokens train and the
rest validate, and every batch is `batch` windows of seq_len + 1 tokens starting at uniformly
random offsets (inputs = window[:-1], targets = window[1:]). No document boundaries, no packing,
no padding: every position is a target. Here the offsets of step s come from
`np.random.default_rng((seed, s, process))`, so the position in the data is just the step, a
resumed run draws the same windows as an uninterrupted one, and each process draws its own rows.

`char_tokenizer(text)` is nanoGPT's character-level vocabulary: the sorted distinct characters
(65 for Shakespeare), one id each, as a Hugging Face WordLevel tokenizer saved like any other.
"""

import pathlib
from collections.abc import Iterator

import jax
import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from jaxllm.data.tokenizer import Tokenizer
from jaxllm.errors import UserError

TRAIN_FRACTION = 0.9  # nanoGPT's split


def read_text(path) -> str:
  """The file's text; UserError naming the file when it is missing, empty or not UTF-8."""
  path = pathlib.Path(path).expanduser()
  try:
    text = path.read_text(encoding="utf-8")
  except FileNotFoundError as e:
    raise UserError(f"config.data.path={str(path)!r} does not exist; pass a UTF-8 text file "
                    "(e.g. tinyshakespeare's input.txt).") from e
  except UnicodeDecodeError as e:
    raise UserError(f"config.data.path={str(path)!r} is not UTF-8 text (byte {e.start}).") from e
  if not text:
    raise UserError(f"config.data.path={str(path)!r} is empty.")
  return text


def char_tokenizer(text: str) -> Tokenizer:
  """One id per distinct character of `text`, in sorted order; no special tokens."""
  vocab = {c: i for i, c in enumerate(sorted(set(text)))}
  hf = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=None))
  hf.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")
  hf.decoder = decoders.Fuse()
  return Tokenizer(hf, bos_token=None, eos_token=None, pad_token=None)


def split_tokens(tokens: np.ndarray, train_fraction: float = TRAIN_FRACTION
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(train, validation): the first `train_fraction` of the tokens, then the rest."""
  n = int(len(tokens) * train_fraction)
  return tokens[:n], tokens[n:]


def encode_file(path, tokenizer: Tokenizer) -> np.ndarray:
  """The file's text as one int32 token array (characters the vocabulary lacks: UserError)."""
  text = read_text(path)
  ids = tokenizer.encode(text)
  if len(ids) != len(text) and tokenizer.hf_tokenizer.get_vocab_size() == len(set(text)):
    raise UserError(f"config.data.path={str(path)!r}: {len(text) - len(ids)} characters are not "
                    "in the character vocabulary; use the tokenizer made from this file.")
  return np.asarray(ids, np.int32)


def windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
  """The LM batch of windows starting at `offsets`: inputs, targets, loss_mask [B, seq_len]."""
  index = offsets[:, None] + np.arange(seq_len + 1)[None, :]
  rows = tokens[index]
  return {"inputs": rows[:, :-1], "targets": rows[:, 1:],
          "loss_mask": np.ones((len(offsets), seq_len), np.float32)}


def _check_length(tokens: np.ndarray, seq_len: int, split: str) -> None:
  if len(tokens) <= seq_len:
    raise UserError(f"the {split} split holds {len(tokens)} tokens, not more than "
                    f"config.data.seq_len={seq_len}; use a longer file or a shorter seq_len.")


class RandomWindows:
  """This process's training batches: `batch` random windows per step (batch = the global batch
  divided among processes); the state is the step."""

  def __init__(self, tokens: np.ndarray, batch: int, seq_len: int, seed: int):
    _check_length(tokens, seq_len, "train")
    self.tokens, self.batch, self.seq_len, self.seed = tokens, batch, seq_len, seed
    self.step = 0
    self._settings = {"batch": batch, "seq_len": seq_len, "seed": seed, "tokens": len(tokens)}

  def __iter__(self) -> "RandomWindows":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, self.step, jax.process_index()))
    offsets = rng.integers(0, len(self.tokens) - self.seq_len, self.batch)
    self.step += 1
    return windows(self.tokens, offsets, self.seq_len)

  def get_state(self) -> dict:
    return {"step": self.step, "settings": self._settings}

  def set_state(self, state: dict) -> None:
    if state.get("settings") != self._settings:
      raise UserError(f"the checkpoint's data position was written with {state.get('settings')}, "
                      f"this run has {self._settings}; restore config.data (path, seq_len), "
                      "config.train.batch_size and config.seed, or start in a new --workdir.")
    self.step = state["step"]

  def close(self) -> None:
    pass


def eval_windows(tokens: np.ndarray, batch: int, seq_len: int, num_batches: int,
                 seed: int) -> Iterator[dict[str, np.ndarray]]:
  """The same `num_batches` batches of random validation windows at every eval (nanoGPT
  estimates the loss on eval_iters fresh random batches; fixed ones make evals comparable)."""
  _check_length(tokens, seq_len, "validation")
  rng = np.random.default_rng((seed, 1 << 30, jax.process_index()))
  for _ in range(num_batches):
    yield windows(tokens, rng.integers(0, len(tokens) - seq_len, batch), seq_len)
