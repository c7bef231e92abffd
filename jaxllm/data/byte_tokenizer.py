"""Byte-level tokenizer: ids 0-255 are UTF-8 bytes, then pad, bos and eos."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """Lossless for any text; no training needed."""

  pad_id: int = 256
  bos_id: int = 257
  eos_id: int = 258

  @property
  def vocab_size(self) -> int:
    return 259

  def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
    ids = list(text.encode("utf-8"))
    return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

  def decode(self, ids) -> str:
    """Drops special ids; invalid UTF-8 becomes U+FFFD."""
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")
