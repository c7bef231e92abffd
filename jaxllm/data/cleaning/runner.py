"""The cleaning runner: per-file steps in a process pool, one global dedup pass, shards and stats.

    input files (this process's share: files p, p + P, ...)
      -> workers, one file at a time: read -> steps in config order -> kept documents to a
         temporary file, with their dedup keys (exact hash, MinHash signature)
      -> main process, in input order: exact dedup, then MinHash near-dedup (keys only)
      -> workers: OUT/shard-00000-of-0000N.jsonl.gz (text, id, url, metadata), OUT/stats.json

Dedup is global over this process's files, so any num_workers gives the same output. With
process_count > 1 each process deduplicates only its own files (its output goes to
OUT/process-0000i-of-0000P/); duplicates across processes remain.

Every document is accounted for: at each step docs_in = kept + dropped, and a step's docs_in is
the previous step's kept; "read" counts what the readers dropped (empty, malformed lines).
"""

import concurrent.futures
import dataclasses
import gzip
import json
import math
import multiprocessing
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from jaxllm import rundir
from jaxllm.data import readers
from jaxllm.data.cleaning import dedup, filters, html, pii

Step = Callable[[readers.Document], str | None]

# Applied in this order by default, as FineWeb (which masks PII after dedup; here dedup is last,
# on the masked text, which changes only the masked spans).
STEP_TYPES = {
    "url": filters.UrlFilter,
    "html": html.HtmlExtractor,
    "language": filters.LanguageFilter,
    "gopher_repetition": filters.GopherRepetitionFilter,
    "gopher_quality": filters.GopherQualityFilter,
    "c4_quality": filters.C4QualityFilter,
    "fineweb_quality": filters.FineWebQualityFilter,
    "pii": pii.PiiMasker,
}
EXAMPLE_CHARS = 200
BATCH_SIZE = 512  # documents that go through one step before the next (see filters.split_words)
BATCH_BYTES = 4_000_000  # ... or fewer, so a batch's cached tokens stay small
GZIP_LEVEL = 1  # 5x faster than 6 for ~18% larger shards, which are read once


def build_steps(config) -> list[tuple[str, Step]]:
  """(name, step) for each name in config.steps, built from its settings."""
  return [(name, STEP_TYPES[name](**dict(config[name]))) for name in config["steps"]]


def separator(config) -> str | None:
  """config.separator with the escapes \\n and \\t typed on a command line decoded."""
  return config.separator.replace("\\n", "\n").replace("\\t", "\t") or None


def process_files(paths: Sequence[pathlib.Path], process_index: int,
                  process_count: int) -> list[pathlib.Path]:
  """This process's share of the files: every process_count-th, starting at process_index."""
  return list(paths[process_index::process_count])


@dataclasses.dataclass
class StepStats:
  """Counts for one step, summed over files; `examples` are the first dropped documents."""
  name: str
  docs_in: int = 0
  bytes_in: int = 0  # UTF-8 bytes of text (read: bytes of the input files on disk)
  kept: int = 0
  dropped: int = 0
  modified: int = 0  # kept documents whose text the step changed
  bytes_out: int = 0  # bytes of the kept documents' text after the step
  reasons: dict = dataclasses.field(default_factory=dict)  # reason key -> dropped documents
  examples: list = dataclasses.field(default_factory=list)  # {"id", "reason", "text"}

  def drop(self, doc_id: str, reason: str, text: str, max_examples: int) -> None:
    self.dropped += 1
    key = reason.split(" ", 1)[0]
    self.reasons[key] = self.reasons.get(key, 0) + 1
    if len(self.examples) < max_examples:
      self.examples.append({"id": doc_id, "reason": reason, "text": text[:EXAMPLE_CHARS]})

  def merge(self, other: "StepStats", max_examples: int) -> None:
    for name in ("docs_in", "bytes_in", "kept", "dropped", "modified", "bytes_out"):
      setattr(self, name, getattr(self, name) + getattr(other, name))
    for key, n in other.reasons.items():
      self.reasons[key] = self.reasons.get(key, 0) + n
    self.examples = (self.examples + other.examples)[:max_examples]


def _batches(docs: Iterable[readers.Document], max_docs: int,
             max_bytes: int) -> Iterator[list[tuple[readers.Document, int]]]:
  """Lists of (document, UTF-8 bytes), cut at max_docs documents or max_bytes bytes."""
  batch, total = [], 0
  for doc in docs:
    num_bytes = len(doc.text.encode())
    batch.append((doc, num_bytes))
    total += num_bytes
    if len(batch) == max_docs or total >= max_bytes:
      yield batch
      batch, total = [], 0
  if batch:
    yield batch


def clean_documents(docs: Iterable[readers.Document], steps: Sequence[tuple[str, Step]],
                    stats: Sequence[StepStats], max_examples: int,
                    batch_size: int = BATCH_SIZE) -> Iterator[tuple[readers.Document, int]]:
  """(document, UTF-8 bytes) for each document every step keeps; `stats` count each step.

  Each step runs over a batch of documents before the next step starts: the same result as one
  document at a time, but each step's data (the language model above all) stays in cache.
  """
  for batch in _batches(docs, batch_size, BATCH_BYTES):
    for (name, step), st in zip(steps, stats):
      st.docs_in += len(batch)
      st.bytes_in += sum(num_bytes for _, num_bytes in batch)
      kept = []
      for item in batch:
        doc = item[0]
        before = doc.text
        reason = step(doc)
        if doc.text is not before:  # the step changed the text: recount its bytes
          item = (doc, len(doc.text.encode()))
          if reason is None and not doc.text.strip():
            reason = f"empty (no text left after {name})"
          st.modified += reason is None and doc.text != before
        if reason is None:
          kept.append(item)
        else:
          st.drop(doc.id, reason, doc.text, max_examples)
      st.kept += len(kept)
      st.bytes_out += sum(num_bytes for _, num_bytes in kept)
      batch = kept
    filters.split_words.cache_clear()  # holds this batch's tokens only
    yield from batch


def to_record(doc: readers.Document) -> dict:
  """The output JSON object: text, id, and url / metadata when present."""
  record = {"text": doc.text, "id": doc.id}
  if doc.url:
    record["url"] = doc.url
  if doc.metadata:
    record["metadata"] = doc.metadata
  return record


@dataclasses.dataclass
class FileResult:
  """What a worker returns for one input file: counts, and keys of the documents it kept."""
  counts: readers.ReadCounts
  file_bytes: int
  stats: list[StepStats]
  kept_path: str  # temporary JSONL, one kept document per line
  ids: list[str]
  bytes_n: np.ndarray  # [n] int64 text bytes per kept document
  exact_n: np.ndarray  # [n] uint64 hashes of normalized text (empty if exact dedup is off)
  signatures_nk: np.ndarray  # [n, bands * rows] uint32 MinHash (empty if minhash is off)


_STEPS_CACHE: dict[str, list[tuple[str, Step]]] = {}


def _steps_for(config: dict) -> list[tuple[str, Step]]:
  """Steps built once per worker process (the language model loads once)."""
  key = json.dumps(config, sort_keys=True, default=list)
  if key not in _STEPS_CACHE:
    _STEPS_CACHE[key] = build_steps(config)
  return _STEPS_CACHE[key]


def clean_file(task: tuple[str, str, dict]) -> FileResult:
  """Worker: reads one file, applies the steps, writes kept documents, computes dedup keys."""
  path, kept_path, config = task
  steps = _steps_for(config)
  dd = config["dedup"]
  num_perm = dd["bands"] * dd["rows"]
  counts = readers.ReadCounts()
  stats = [StepStats(name) for name, _ in steps]
  ids, num_bytes, exact, signatures = [], [], [], []
  docs = readers.iter_documents(path, counts, text_field=config["text_field"],
                                separator=config["separator"] or None,
                                skip_malformed=config["skip_malformed"])
  with open(kept_path, "w", encoding="utf-8") as out:
    for doc, n in clean_documents(docs, steps, stats, config["examples_per_step"]):
      out.write(json.dumps(to_record(doc), ensure_ascii=False) + "\n")
      ids.append(doc.id)
      num_bytes.append(n)
      if dd["exact"] or dd["minhash"]:
        normalized = dedup.normalize(doc.text)
        if dd["exact"]:
          exact.append(dedup.exact_hash(normalized))
        if dd["minhash"]:
          signatures.append(dedup.minhash_signature(normalized, dd["ngram"], num_perm, dd["seed"]))
  return FileResult(counts, os.path.getsize(path), stats, kept_path, ids,
                    np.asarray(num_bytes, np.int64), np.asarray(exact, np.uint64),
                    np.asarray(signatures, np.uint32).reshape(len(signatures), num_perm))


def _read_step(results: Sequence[FileResult]) -> StepStats:
  counts = readers.ReadCounts()
  for r in results:
    counts.merge(r.counts)
  reasons = {k: v for k, v in (("empty", counts.empty), ("malformed_line", counts.malformed_lines))
             if v}
  return StepStats("read", docs_in=counts.records + counts.empty + counts.malformed_lines,
                   bytes_in=sum(r.file_bytes for r in results), kept=counts.records,
                   dropped=counts.empty + counts.malformed_lines, modified=counts.invalid_utf8,
                   bytes_out=counts.bytes, reasons=reasons)


def _nth_lines(path: str, wanted: Sequence[int]) -> dict[int, dict]:
  """Records at the given 0-based line numbers of a JSONL file."""
  wanted, found = set(wanted), {}
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f):
      if i in wanted:
        found[i] = json.loads(line)
        if len(found) == len(wanted):
          break
  return found


def _dedup_step(name: str, alive: np.ndarray, representative: np.ndarray, ids: list[str],
                bytes_n: np.ndarray, locate, reason: str, max_examples: int) -> StepStats:
  """Stats for a dedup pass over the `alive` documents; documents not their representative drop."""
  dropped = alive & (representative != np.arange(len(alive)))
  st = StepStats(name, docs_in=int(alive.sum()), bytes_in=int(bytes_n[alive].sum()),
                 kept=int((alive & ~dropped).sum()), dropped=int(dropped.sum()),
                 bytes_out=int(bytes_n[alive & ~dropped].sum()))
  if st.dropped:
    st.reasons[reason] = st.dropped
  for g in np.flatnonzero(dropped)[:max_examples]:
    path, line = locate(g)
    text = _nth_lines(path, [line])[line]["text"]
    st.examples.append({"id": ids[g], "reason": f"{reason} (of {ids[representative[g]]})",
                        "text": text[:EXAMPLE_CHARS]})
  return st


def deduplicate(results: Sequence[FileResult], dedup_config,
                max_examples: int) -> tuple[np.ndarray, list[StepStats]]:
  """[n] keep mask over all kept documents in input order, and one StepStats per dedup pass."""
  ids = [i for r in results for i in r.ids]
  n = len(ids)
  bytes_n = np.concatenate([r.bytes_n for r in results]) if results else np.zeros(0, np.int64)
  offsets = np.cumsum([0] + [len(r.ids) for r in results])

  def locate(g):
    f = int(np.searchsorted(offsets, g, side="right")) - 1
    return results[f].kept_path, int(g - offsets[f])

  alive = np.ones(n, bool)
  stats = []
  if n == 0:  # e.g. a process whose share of the files is empty
    names = [("exact_dedup", dedup_config.exact), ("minhash_dedup", dedup_config.minhash)]
    return alive, [StepStats(name) for name, on in names if on]
  if dedup_config.exact:
    first = dedup.first_occurrences(np.concatenate([r.exact_n for r in results]))
    st = _dedup_step("exact_dedup", alive, first, ids, bytes_n, locate, "exact_duplicate",
                     max_examples)
    alive &= first == np.arange(n)
    stats.append(st)
  if dedup_config.minhash:
    signatures = np.concatenate([r.signatures_nk for r in results])[alive]
    roots = dedup.near_duplicate_roots(signatures, dedup_config.bands, dedup_config.rows)
    alive_idx = np.flatnonzero(alive)
    representative = np.arange(n)
    representative[alive_idx] = alive_idx[roots]
    st = _dedup_step("minhash_dedup", alive, representative, ids, bytes_n, locate,
                     "near_duplicate", max_examples)
    alive &= representative == np.arange(n)
    stats.append(st)
  return alive, stats


def write_shard(task: tuple[str, list[tuple[str, list[int]]]]) -> int:
  """Worker: copies the chosen lines of temporary files into one gzip JSONL shard; bytes written."""
  out_path, sources = task
  with gzip.open(out_path, "wb", compresslevel=GZIP_LEVEL) as out:
    for path, lines in sources:
      wanted = set(lines)
      with open(path, "rb") as f:
        for i, line in enumerate(f):
          if i in wanted:
            out.write(line)
            if i == lines[-1]:
              break
  return os.path.getsize(out_path)


def _shard_tasks(results: Sequence[FileResult], keep: np.ndarray, out_dir: pathlib.Path,
                 docs_per_shard: int) -> list[tuple[str, list[tuple[str, list[int]]]]]:
  kept = [(r.kept_path, i) for r in results for i in range(len(r.ids))]
  kept = [k for k, alive in zip(kept, keep) if alive]
  num_shards = max(1, math.ceil(len(kept) / docs_per_shard))
  tasks = []
  for s in range(num_shards):
    sources: dict[str, list[int]] = {}
    for path, line in kept[s * docs_per_shard:(s + 1) * docs_per_shard]:
      sources.setdefault(path, []).append(line)
    tasks.append((str(out_dir / f"shard-{s:05d}-of-{num_shards:05d}.jsonl.gz"),
                  list(sources.items())))
  return tasks


def output_dir(workdir, config) -> pathlib.Path:
  """WORKDIR, or WORKDIR/process-0000i-of-0000P when the input is split across processes."""
  if config.process_count == 1:
    return pathlib.Path(workdir)
  return pathlib.Path(workdir) / f"process-{config.process_index:05d}-of-{config.process_count:05d}"


def run(config, workdir) -> dict:
  """Cleans this process's input files into shards under output_dir; returns (and writes) stats.

  `config` has the fields of jaxllm/recipes/prepare_data.py's default_config (checked there)."""
  start = time.perf_counter()
  build_steps(config)  # fail on a bad step setting before starting workers
  paths = process_files(readers.expand_inputs(config.input), config.process_index,
                        config.process_count)
  out_dir = output_dir(workdir, config)
  out_dir.mkdir(parents=True, exist_ok=True)
  for stale in out_dir.glob("shard-*-of-*.jsonl.gz"):
    stale.unlink()
  tmp_dir = out_dir / "tmp"
  shutil.rmtree(tmp_dir, ignore_errors=True)
  tmp_dir.mkdir()
  worker_config = config.to_dict()
  worker_config["separator"] = separator(config) or ""
  num_workers = config.num_workers or os.cpu_count() or 1
  tasks = [(str(p), str(tmp_dir / f"kept-{i:06d}.jsonl"), worker_config)
           for i, p in enumerate(paths)]

  workers = min(num_workers, len(tasks)) if len(tasks) > 1 else 1
  pool = None
  if workers > 1:
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
  mapper = pool.map if pool else map
  try:
    results = list(mapper(clean_file, tasks))
    steps = [_read_step(results)]
    for i, name in enumerate(config.steps):
      steps.append(StepStats(name))
      for r in results:
        steps[-1].merge(r.stats[i], config.examples_per_step)
    keep, dedup_stats = deduplicate(results, config.dedup, config.examples_per_step)
    steps += dedup_stats
    shard_tasks = _shard_tasks(results, keep, out_dir, config.docs_per_shard)
    shard_bytes = list(mapper(write_shard, shard_tasks))
  finally:
    if pool:
      pool.shutdown(cancel_futures=True)
    shutil.rmtree(tmp_dir, ignore_errors=True)

  seconds = time.perf_counter() - start
  read_counts = readers.ReadCounts()
  for r in results:
    read_counts.merge(r.counts)
  text_mb = read_counts.bytes / 1e6
  stats = {
      "files": len(paths),
      "read": read_counts.as_dict(),
      "steps": [dataclasses.asdict(s) for s in steps],
      "output": {"docs": int(keep.sum()), "text_bytes": steps[-1].bytes_out,
                 "shards": [pathlib.Path(t[0]).name for t in shard_tasks],
                 "shard_bytes": int(sum(shard_bytes))},
      "seconds": round(seconds, 3),
      "workers": workers,
      "input_text_mb_per_s": round(text_mb / seconds, 3),
      "input_text_mb_per_s_per_worker": round(text_mb / seconds / workers, 3),
  }
  rundir.write_text(out_dir / "stats.json", json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
  rundir.write_text(out_dir / "config.json",
                    json.dumps(config.to_dict(), indent=1, default=list) + "\n")
  return stats


def summary_table(stats: dict) -> str:
  """A short text table: one row per step, then totals and throughput."""
  header = (f"{'step':<18}{'docs in':>10}{'kept':>10}{'dropped':>10}{'modified':>10}"
            f"{'MB in':>10}{'MB out':>10}  top drop reason")
  rows = [header]
  for s in stats["steps"]:
    top = max(s["reasons"].items(), key=lambda kv: kv[1], default=("", 0))
    rows.append(f"{s['name']:<18}{s['docs_in']:>10}{s['kept']:>10}{s['dropped']:>10}"
                f"{s['modified']:>10}{s['bytes_in'] / 1e6:>10.2f}{s['bytes_out'] / 1e6:>10.2f}"
                f"  {top[0]}{f' ({top[1]})' if top[1] else ''}")
  out = stats["output"]
  rows.append(f"{out['docs']} documents in {len(out['shards'])} shard(s); {stats['files']} "
              f"file(s) in {stats['seconds']:.1f} s with {stats['workers']} worker(s), "
              f"{stats['input_text_mb_per_s']:.2f} MB/s of input text.")
  return "\n".join(rows)
