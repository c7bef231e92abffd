"""Where a run's files live: a local directory or cloud storage (`gs://bucket/path`).

Every module that reads or writes a run directory goes through `path()`, which returns an
etils `epath.Path` (the path layer orbax uses): local paths work as before, and `gs://` paths
go through gcsfs (`pip install 'jaxllm[gcs]'`). What cloud storage does differently is handled
here, once:

- `write_text`: a local file is written beside its target and renamed over it (a kill leaves the
  old content); an object upload is already all-or-nothing.
- appends: an object cannot be appended to (gcsfs's "a" mode replaces it), so files that grow
  line by line (metrics.jsonl, perf.jsonl, TensorBoard events) are written in a local staging
  folder and uploaded whole by `Mirror.sync` (jaxllm/train/metrics.py).
- `files_under`, `size`, `move`, `copy_tree`, `absolute`: recursive listing, sizes, moves,
  copies and absolute paths, which epath's own methods do not do on gs://; `save_figure`: a
  plot rendered in memory, then written.
- `local_folder`: where files go that only local readers open (prepared ArrayRecord data,
  generated JSONL inputs); `require_local`: the refusal of commands that write only local files.
- gcsfs's folder-listing cache is turned off, so that one process sees what another just wrote.

The GCS emulator (`STORAGE_EMULATOR_HOST`, `TENSORSTORE_GCS_HTTP_URL`) is honoured by gcsfs and
tensorstore, which is how the tests run all of this on 127.0.0.1.
"""

import io
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

from etils import epath

from jaxllm.errors import UserError

REMOTE_SCHEMES = ("gs://",)


def is_remote(p) -> bool:
  """Whether `p` names cloud storage (gs://) rather than a local path."""
  return str(p).startswith(REMOTE_SCHEMES)


def path(p) -> epath.Path:
  """`p` (a str, pathlib.Path or epath.Path) as an epath.Path."""
  if is_remote(p):
    _check_backend(str(p))
  return epath.Path(p)


def absolute(p) -> epath.Path:
  """`p` made absolute when local (orbax needs it; epath's absolute() garbles gs:// paths)."""
  return path(p) if is_remote(p) else epath.Path(os.path.abspath(os.fspath(p)))


def _check_backend(p: str) -> None:
  try:
    import fsspec  # pylint: disable=import-outside-toplevel
    import gcsfs  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise UserError(f"{p}: reading and writing gs:// needs gcsfs; install it with "
                    "pip install 'jaxllm[gcs]' (or pip install gcsfs).") from None
  # gcsfs keeps folder listings (with each file's size) for the life of the process, so a file
  # another process rewrote would read as its old length, and a new one as missing: off.
  fsspec.config.conf.setdefault("gs", {})["use_listings_cache"] = False


def local_folder(p) -> pathlib.Path:
  """`p` when it is local; for a gs:// path the local folder that stands in for it:
  $JAXLLM_CACHE (default ~/.cache/jaxllm)/BUCKET/PATH. Files that only local readers open
  (prepared ArrayRecord data, generated JSONL inputs) go there; they are made again from their
  sources on a machine that lacks them."""
  if not is_remote(p):
    return pathlib.Path(p)
  cache = pathlib.Path(os.environ.get("JAXLLM_CACHE", "~/.cache/jaxllm")).expanduser()
  return cache / str(p).split("://", 1)[1].strip("/")


def require_local(p, field: str, why: str) -> None:
  """UserError naming `field` when `p` is a gs:// path for a command that writes local files."""
  if is_remote(p):
    raise UserError(f"{field}={str(p)!r}: {why}, so it takes a local directory; write there and "
                    "copy the result to cloud storage (gcloud storage cp -r).")


def write_text(p, text: str) -> None:
  """Writes `p` whole or not at all: locally a new file beside it, then a rename over it, so a
  kill mid-write leaves the old content; on cloud storage one upload (objects appear whole)."""
  p = path(p)
  if is_remote(p):
    p.write_text(text)
    return
  tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, p)


def save_figure(fig, p, dpi: int = 100) -> None:
  """A matplotlib figure as a PNG at `p` (rendered in memory, so gs:// works too)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  path(p).write_bytes(buffer.getvalue())


def size(p) -> int:
  """The file's size in bytes."""
  return path(p).stat().length


def files_under(directory) -> Iterator[epath.Path]:
  """Every file below `directory`, in sorted order (pathlib's rglob, which epath refuses on
  gs://)."""
  for child in sorted(path(directory).iterdir()):
    if child.is_dir():
      yield from files_under(child)
    else:
      yield child


def move(src, dst) -> None:
  """Moves a file or folder to `dst`, which must not exist (on cloud storage: copied, then
  deleted)."""
  src, dst = path(src), path(dst)
  if not (is_remote(src) or is_remote(dst)):
    shutil.move(src, dst)
    return
  if not src.is_dir():
    src.copy(dst)
    src.unlink()
    return
  copy_tree(src, dst)
  src.rmtree()


def copy_tree(src, dst) -> None:
  """Copies the folder `src` to `dst` (either may be gs://); `dst` must not exist. Locally the
  copy is made beside `dst` and renamed into place, so a reader sees all of it or none (two
  processes on one machine may both copy; the second one's copy is dropped)."""
  src = path(src)
  final = path(dst)
  target = final if is_remote(final) else final.with_name(f".{final.name}.{os.getpid()}.tmp")
  for file in files_under(src):
    out = target / file.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(file.read_bytes())
  if target != final:
    try:
      os.rename(target, final)
    except OSError:  # another process put it there first
      shutil.rmtree(target, ignore_errors=True)


class Mirror:
  """Files of a run directory that grow by appends, kept in a local folder and uploaded whole.

  For a local run directory the folder is the run directory itself and `sync` does nothing. For
  a gs:// one the named files (and folders) are first copied down (a resumed run appends to
  what it had), then written locally and uploaded by `sync` when they changed.
  """

  def __init__(self, directory, names: tuple[str, ...]):
    self.remote = path(directory)
    self.names = names
    if not is_remote(self.remote):
      self.local = pathlib.Path(self.remote)
      return
    self.local = pathlib.Path(tempfile.mkdtemp(prefix="jaxllm-mirror-"))
    self._uploaded: dict[str, tuple[int, int]] = {}
    for name in names:
      source = self.remote / name
      if source.is_dir():
        for file in files_under(source):
          self._download(str(file.relative_to(self.remote)))
      elif source.exists():
        self._download(name)

  def _download(self, name: str) -> None:
    target = self.local / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((self.remote / name).read_bytes())
    self._uploaded[name] = self._signature(target)

  @staticmethod
  def _signature(p: pathlib.Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_size, st.st_mtime_ns

  def sync(self) -> None:
    """Uploads each mirrored file that changed since its last upload (no-op when local)."""
    if not is_remote(self.remote):
      return
    for name in self.names:
      top = self.local / name
      files = sorted(f for f in top.rglob("*") if f.is_file()) if top.is_dir() else (
          [top] if top.is_file() else [])
      for file in files:
        rel = str(file.relative_to(self.local))
        signature = self._signature(file)
        if self._uploaded.get(rel) != signature:
          target = self.remote / rel
          target.parent.mkdir(parents=True, exist_ok=True)
          target.write_bytes(file.read_bytes())
          self._uploaded[rel] = signature

  def close(self) -> None:
    """Uploads what changed and removes the local folder (when remote)."""
    if is_remote(self.remote):
      self.sync()
      shutil.rmtree(self.local, ignore_errors=True)
