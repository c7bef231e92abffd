"""Raw text inputs (.txt, .jsonl, .jsonl.gz, .html) as Documents; every drop or repair is counted.

Every reader yields `Document`s and adds to a `ReadCounts`: records yielded, their UTF-8 bytes,
and what was dropped or repaired on the way (malformed JSONL lines, invalid UTF-8, empty text).
"""

import dataclasses
import glob
import gzip
import json
import pathlib
import re
import zlib
from collections.abc import Iterator, Sequence

from jaxllm.errors import UserError

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".html", ".htm")
_SKIP_HINT = "expected one JSON object per line (set skip_malformed to skip and count such lines)"
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")  # undecodable bytes under surrogateescape
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclasses.dataclass
class Document:
  """One record of text with where it came from."""
  text: str
  id: str  # "path:LINE" for jsonl (or the record's own "id"), "path" or "path#i" for txt/html
  url: str | None = None
  metadata: dict = dataclasses.field(default_factory=dict)  # e.g. {"format": "html"}


@dataclasses.dataclass
class ReadCounts:
  """Mutable counters, summed across files."""
  files: int = 0
  records: int = 0  # records yielded
  bytes: int = 0  # UTF-8 bytes of yielded text
  malformed_lines: int = 0  # skipped bad JSONL lines (only when skip_malformed=True)
  invalid_utf8: int = 0  # records whose bytes were not valid UTF-8 (replaced with U+FFFD)
  empty: int = 0  # records dropped because their text was empty/whitespace

  def as_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)

  def merge(self, other: "ReadCounts") -> None:
    """Adds `other`'s counters to these."""
    for field in dataclasses.fields(self):
      setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def expand_inputs(patterns: str | Sequence[str]) -> list[pathlib.Path]:
  """Comma-separated globs (or a list of them) -> sorted, deduplicated existing files."""
  if isinstance(patterns, str):
    patterns = patterns.split(",")
  patterns = [p.strip() for p in patterns if p.strip()]
  if not patterns:
    raise UserError("no input given; pass a file or a glob such as 'data/*.jsonl'.")
  paths = set()
  for pattern in patterns:
    matches = [pathlib.Path(m) for m in glob.glob(pattern, recursive=True)]
    matches = [m for m in matches if m.is_file()]
    if not matches:
      raise UserError(f"input glob {pattern!r} matches no files; check the path (relative paths "
                      f"start at {pathlib.Path.cwd()}).")
    paths.update(matches)
  return sorted(paths, key=str)


def _suffix(path: pathlib.Path) -> str:
  name = path.name.lower()
  for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
    if name.endswith(suffix):
      return suffix
  raise UserError(f"{path}: unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}.")


def _decode(data: bytes, counts: ReadCounts) -> str:
  """UTF-8 text; invalid bytes become U+FFFD and the record is counted once."""
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    counts.invalid_utf8 += 1
    return data.decode("utf-8", "replace")


def _read_bytes(path: pathlib.Path) -> bytes:
  try:
    return path.read_bytes()
  except OSError as e:
    raise UserError(f"{path}: cannot read ({e.strerror}); check the path and permissions.") from e


def iter_jsonl(path, counts: ReadCounts, *,
               skip_malformed: bool = False) -> Iterator[tuple[int, dict]]:
  """(1-based line number, JSON object) for each non-blank line of a .jsonl or .jsonl.gz file."""
  path = pathlib.Path(path)
  opener = gzip.open if path.name.lower().endswith(".gz") else open
  counts.files += 1
  line_no = 0
  try:
    with opener(path, "rb") as f:
      for line_no, raw in enumerate(f, start=1):
        if not raw.strip():
          continue
        line = _decode(raw, counts)
        try:
          obj = json.loads(line)
          problem = None if isinstance(obj, dict) else f"got a JSON {type(obj).__name__}"
        except json.JSONDecodeError as e:
          problem = f"invalid JSON ({e.msg}, column {e.colno})"
        if problem is None:
          yield line_no, obj
        elif skip_malformed:
          counts.malformed_lines += 1
        else:
          raise UserError(f"{path}:{line_no}: {problem}; {_SKIP_HINT}.")
  except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt gzip, unreadable file
    raise UserError(f"{path}:{line_no + 1}: cannot read ({e}); re-create or remove the "
                    "file.") from e


def _split_txt(text: str, separator: str | None) -> list[str]:
  """Whole file, a literal multi-line separator ("\\n\\n"), or a marker on its own line ("%")."""
  if not separator:
    return [text]
  if "\n" in separator:
    return text.split(separator)
  marker = re.compile(rf"^[ \t]*{re.escape(separator)}[ \t]*\r?$", re.MULTILINE)
  return marker.split(text)


def _repair(text: str, counts: ReadCounts) -> tuple[str, int]:
  """(text, UTF-8 byte count); lone surrogates (e.g. from JSON escapes) become U+FFFD, counted."""
  try:
    return text, len(text.encode("utf-8"))
  except UnicodeEncodeError:
    counts.invalid_utf8 += 1
    text = _SURROGATES.sub("\ufffd", text)
    return text, len(text.encode("utf-8"))


def _emit(doc: Document, counts: ReadCounts) -> Document | None:
  """Counts `doc` as yielded, or as empty (returns None)."""
  if not doc.text.strip():
    counts.empty += 1
    return None
  doc.text, num_bytes = _repair(doc.text, counts)
  counts.records += 1
  counts.bytes += num_bytes
  return doc


def iter_documents(path, counts: ReadCounts, *, text_field: str = "text",
                   separator: str | None = None,
                   skip_malformed: bool = False) -> Iterator[Document]:
  """Documents of one file, by extension: .txt, .jsonl(.gz) (`text_field`), .html/.htm (raw)."""
  path = pathlib.Path(path)
  suffix = _suffix(path)
  if suffix in (".jsonl", ".jsonl.gz"):
    for line_no, obj in iter_jsonl(path, counts, skip_malformed=skip_malformed):
      text = obj.get(text_field)
      if not isinstance(text, str):
        what = "is missing" if text is None else f"is a {type(text).__name__}, not a string"
        if skip_malformed:
          counts.malformed_lines += 1
          continue
        raise UserError(f"{path}:{line_no}: field {text_field!r} {what}; set text_field to the "
                        f"field that holds the text, or set skip_malformed to skip and count such "
                        f"lines.")
      url, doc_id, metadata = obj.get("url"), obj.get("id"), obj.get("metadata")
      doc = Document(text, str(doc_id) if doc_id is not None else f"{path}:{line_no}",
                     url if isinstance(url, str) and url else None,
                     dict(metadata) if isinstance(metadata, dict) else {})
      if _emit(doc, counts):
        yield doc
    return

  counts.files += 1
  data = _read_bytes(path)
  if suffix in (".html", ".htm"):
    doc = Document(_decode(data, counts), str(path), metadata={"format": "html"})
    if _emit(doc, counts):
      yield doc
    return

  # .txt: split first, then decode each piece, so invalid UTF-8 is counted per document.
  text = data.decode("utf-8", "surrogateescape")
  pieces = _split_txt(text, separator)
  for i, piece in enumerate(pieces):
    if _ESCAPED_BYTES.search(piece):
      piece = _decode(piece.encode("utf-8", "surrogateescape"), counts)
    doc_id = str(path) if len(pieces) == 1 and not separator else f"{path}#{i}"
    doc = Document(piece.strip(), doc_id)
    if _emit(doc, counts):
      yield doc


def read_texts(globs: str | Sequence[str]) -> list[str]:
  """The documents' texts of comma-separated globs of .txt / .jsonl(.gz) / .html files."""
  counts = ReadCounts()
  return [d.text for path in expand_inputs(globs) for d in iter_documents(path, counts)]
