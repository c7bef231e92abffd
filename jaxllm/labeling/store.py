"""Human preference labels on disk: items to rank, judgements appended with resume, and the
preference pairs they export.

A labeler sees one prompt and its sampled responses (an `Item`) and ranks them, best first, in
groups of ties: `[[2], [0, 1]]` says response 2 is best and responses 0 and 1 tie below it. A
judgement is one JSON line appended (flush + fsync) to RUN/labels/judgements.jsonl:

  {"prompt_id", "prompt", "responses", "ranking", "labeler", "note", "time"}     (a ranking)
  {"prompt_id", "prompt", "responses", "ranking": null, "skipped": true, ...}    (a skip)

The newest judgement of a labeler on a prompt is the one that counts (a labeler may relabel).
Resume: a new `JudgementStore` on the same file sees every line written before, so a labeler's
next item is the first one, in item order, they have neither judged nor skipped (skipped items
come back once the rest are done). A server killed while writing leaves at most a partial last
line (no newline): the store cuts it off the file, keeps it in judgements.jsonl.torn and counts
it; a malformed line anywhere else is an error naming file:line (someone edited the file).

`export_pairs` turns rankings into the {"prompt", "chosen", "rejected"} records the reward-model
and DPO stages read (jaxllm/data/preferences.py): a ranking of k responses gives k(k-1)/2 pairs.
Ties are dropped, or kept as both orders with margin 0 (a symmetric pull toward equal scores
under Bradley-Terry and DPO). Agreement between labelers: jaxllm/labeling/agreement.py.
"""

import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import pathlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from jaxllm.errors import UserError

MAX_LABELER_CHARS = 64
MAX_NOTE_CHARS = 2000
PAIR_LABELS = ("first", "second", "tie")  # response i better / response j better / tie (i < j)
TIES = ("drop", "keep")


class LabelError(UserError):
  """A request or record that is not a valid judgement; `field` names the bad field."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field


@dataclasses.dataclass(frozen=True)
class Item:
  """One prompt to rank: its id, the prompt (a string, or chat messages) and its responses."""
  id: str
  prompt: Any
  responses: tuple[str, ...]


def prompt_id(prompt) -> str:
  """A stable id from the prompt's content (so editing the prompts file keeps the ids)."""
  text = json.dumps(prompt, ensure_ascii=False, sort_keys=True)
  return "p" + hashlib.sha256(text.encode()).hexdigest()[:12]


def prompt_text(prompt) -> str:
  """The prompt as it is shown to a labeler: a string as is, messages as `role: content`."""
  if isinstance(prompt, str):
    return prompt
  return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def utc_now() -> str:
  return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Rankings


def normalize_ranking(ranking, num_responses: int) -> list[list[int]]:
  """A ranking as groups of response indices, best first, each group sorted.

  Accepts groups (`[[2], [0, 1]]`) or a flat permutation (`[2, 0, 1]`, no ties); it must place
  every response exactly once. Raises LabelError(field="ranking") saying what is wrong.
  """
  if not isinstance(ranking, list) or not ranking:
    raise LabelError("ranking", "must be a non-empty list of groups of response indices, best "
                     f"first, e.g. [[1], [0, 2]]; got {json.dumps(ranking)[:80]}.")
  groups = []
  for g in ranking:
    group = g if isinstance(g, list) else [g]
    if not group or not all(isinstance(i, int) and not isinstance(i, bool) for i in group):
      raise LabelError("ranking", f"group {json.dumps(g)[:40]} must be a response index or a "
                       "non-empty list of them.")
    groups.append(sorted(group))
  placed = [i for group in groups for i in group]
  if sorted(placed) != list(range(num_responses)):
    raise LabelError("ranking", f"must place each of the {num_responses} responses (indices "
                     f"0..{num_responses - 1}) exactly once; got {json.dumps(ranking)[:80]}.")
  return groups


def pair_labels(ranking: Sequence[Sequence[int]]) -> dict[tuple[int, int], str]:
  """{(i, j) for i < j: "first" | "second" | "tie"}: which of responses i and j the ranking
  prefers."""
  level = {i: rank for rank, group in enumerate(ranking) for i in group}
  out = {}
  for i, j in itertools.combinations(sorted(level), 2):
    out[(i, j)] = ("tie" if level[i] == level[j] else
                   "first" if level[i] < level[j] else "second")
  return out


def ranking_pairs(ranking: Sequence[Sequence[int]]
                  ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
  """(strict pairs (better, worse), tied pairs (i, j) with i < j) of a ranking."""
  strict, tied = [], []
  for r, group in enumerate(ranking):
    tied += list(itertools.combinations(sorted(group), 2))
    for lower in ranking[r + 1:]:
      strict += [(a, b) for a in group for b in lower]
  return strict, tied


# ---------------------------------------------------------------------------------------------
# JSONL files


def read_jsonl(path) -> tuple[list[dict], str]:
  """(objects, partial last line or '') of a JSONL file written by appends.

  A last line without its newline that is not valid JSON is a write cut short (the process was
  killed): it is returned apart. A malformed line elsewhere raises UserError naming file:line.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return [], ""
  data = path.read_bytes()
  lines = data.split(b"\n")
  torn = b""
  if not data.endswith(b"\n") and lines[-1].strip():
    try:
      json.loads(lines[-1])
    except ValueError:
      torn = lines.pop()
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except ValueError as e:
      raise UserError(f"{path}:{number}: not valid JSON ({e}); fix or delete that line.") from e
    if not isinstance(obj, dict):
      raise UserError(f"{path}:{number}: a line must be a JSON object; fix or delete it.")
    records.append(obj)
  return records, torn.decode("utf-8", "replace")


def append_jsonl(path, records: Iterable[dict]) -> None:
  """Appends one line per record in a single write, then flush + fsync: once this returns the
  lines are on disk."""
  data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
  with open(path, "ab") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def cut_torn_line(path) -> str:
  """Removes a partial last line from `path` (appending it to PATH.torn for inspection) so the
  next append starts on a line of its own; returns it ('' when there was none)."""
  path = pathlib.Path(path)
  _, torn = read_jsonl(path)
  if torn:
    with open(f"{path}.torn", "a", encoding="utf-8") as f:
      f.write(torn + "\n")
    keep = path.read_bytes().rfind(b"\n") + 1  # everything up to the last newline
    with open(path, "r+b") as f:
      f.truncate(keep)
      f.flush()
      os.fsync(f.fileno())
  return torn


# ---------------------------------------------------------------------------------------------
# Items (responses.jsonl)


def item_record(item: Item, sampling: dict) -> dict:
  return {"id": item.id, "prompt": item.prompt, "responses": list(item.responses),
          "sampling": sampling}


def read_items(path) -> list[Item]:
  """The items of a responses.jsonl file (a partial last line is left out: it is sampled
  again)."""
  records, _ = read_jsonl(path)
  items = []
  for number, r in enumerate(records, 1):
    if not isinstance(r.get("id"), str) or not isinstance(r.get("responses"), list):
      raise UserError(f"{path}: record {number} needs 'id' (string) and 'responses' (list); "
                      "delete the file to sample again.")
    items.append(Item(r["id"], r.get("prompt"), tuple(r["responses"])))
  return items


def read_prompts(path) -> list[tuple[str, Any]]:
  """[(prompt id, prompt)] from a JSONL file of {"prompt": str or messages, "id"?: str}.

  Ids default to a hash of the prompt. Raises UserError naming file:line for a bad line or a
  repeated id.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"--prompts={path} is not a file; give a JSONL file with one "
                    '{"prompt": "..."} object per line.')
  out, seen = [], {}
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    where = f"{path}:{number}"
    try:
      obj = json.loads(line)
    except ValueError as e:
      raise UserError(f"{where}: not valid JSON ({e}); write one JSON object per line.") from e
    if not isinstance(obj, dict):
      raise UserError(f'{where}: a line must be a JSON object like {{"prompt": "..."}}.')
    prompt = obj.get("prompt")
    ok_messages = (isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in prompt) and prompt[-1]["role"] == "user")
    if not (isinstance(prompt, str) and prompt.strip()) and not ok_messages:
      raise UserError(f"{where}: field 'prompt' must be a non-empty string or a list of "
                      "{role, content} messages ending with a user message.")
    pid = obj.get("id", prompt_id(prompt))
    if not isinstance(pid, str) or not pid:
      raise UserError(f"{where}: field 'id' must be a non-empty string (or absent).")
    if pid in seen:
      raise UserError(f"{where}: prompt id {pid!r} repeats line {seen[pid]}; give each prompt "
                      "its own id (or drop the duplicate).")
    seen[pid] = number
    out.append((pid, prompt))
  if not out:
    raise UserError(f"--prompts={path} holds no prompts; add one JSON object per line.")
  return out


# ---------------------------------------------------------------------------------------------
# Judgements


def make_judgement(item: Item, body: Any, *, skip: bool = False) -> dict:
  """A judgement record from a request body {"labeler", "ranking", "note"?} on `item`; raises
  LabelError naming the bad field."""
  if not isinstance(body, dict):
    raise LabelError("body", "must be a JSON object.")
  labeler = body.get("labeler")
  if not isinstance(labeler, str) or not labeler.strip():
    raise LabelError("labeler", "must be a non-empty string (type your labeler id).")
  if len(labeler.strip()) > MAX_LABELER_CHARS:
    raise LabelError("labeler", f"is longer than {MAX_LABELER_CHARS} characters.")
  note = body.get("note", "")
  if note is None:
    note = ""
  if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
    raise LabelError("note", f"must be a string of at most {MAX_NOTE_CHARS} characters.")
  ranking = None if skip else normalize_ranking(body.get("ranking"), len(item.responses))
  record = {"prompt_id": item.id, "prompt": item.prompt, "responses": list(item.responses),
            "ranking": ranking, "labeler": labeler.strip(), "note": note, "time": utc_now()}
  if skip:
    record["skipped"] = True
  return record


def latest(judgements: Iterable[dict]) -> dict[tuple[str, str], dict]:
  """{(labeler, prompt id): the newest ranking judgement} (skips left out)."""
  out = {}
  for j in judgements:
    if not j.get("skipped") and j.get("ranking") is not None:
      out[(j["labeler"], j["prompt_id"])] = j
  return out


class JudgementStore:
  """judgements.jsonl, appended one fsynced line per judgement, with each labeler's progress.

  Thread-safe (one lock around append + index). Opening it cuts a partial last line off the
  file (kept in PATH.torn; `torn` says whether there was one).
  """

  def __init__(self, path):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.torn = cut_torn_line(self.path)
    self.records, _ = read_jsonl(self.path)
    for number, r in enumerate(self.records, 1):
      if not isinstance(r.get("labeler"), str) or not isinstance(r.get("prompt_id"), str):
        raise UserError(f"{self.path}: judgement {number} has no 'labeler' or 'prompt_id'; "
                        "fix or delete it.")
    self._lock = threading.Lock()

  def append(self, record: dict) -> None:
    with self._lock:
      append_jsonl(self.path, [record])
      self.records.append(record)

  def snapshot(self) -> list[dict]:
    with self._lock:
      return list(self.records)

  def done_and_skipped(self, labeler: str) -> tuple[set[str], set[str]]:
    """(prompt ids the labeler ranked, prompt ids they skipped and have not ranked)."""
    done, skipped = set(), set()
    for r in self.snapshot():
      if r["labeler"] == labeler:
        (skipped if r.get("skipped") else done).add(r["prompt_id"])
    return done, skipped - done

  def next_item(self, items: Sequence[Item], labeler: str) -> Item | None:
    """The first item the labeler has neither ranked nor skipped; then the skipped ones."""
    done, skipped = self.done_and_skipped(labeler)
    for item in items:
      if item.id not in done and item.id not in skipped:
        return item
    return next((item for item in items if item.id not in done), None)

  def progress(self, items: Sequence[Item], labeler: str) -> dict:
    done, skipped = self.done_and_skipped(labeler)
    ids = {item.id for item in items}
    return {"labeler": labeler, "done": len(done & ids), "skipped": len(skipped & ids),
            "total": len(ids)}


# ---------------------------------------------------------------------------------------------
# Export


def export_pairs(judgements: Iterable[dict], ties: str = "drop") -> tuple[list[dict], dict]:
  """(preference records, counts) from the newest ranking of each (labeler, prompt).

  Each record: {"prompt", "chosen", "rejected", "id", "prompt_id", "labeler"} (+ "margin": 0 and
  "tie": true for a kept tie, one record per order). "id" is the prompt id, so a hash hold-out
  (config.data.eval_fraction) keeps all pairs of a prompt on the same side. Pairs of two
  identical responses teach nothing and are left out (counted as "identical").
  """
  if ties not in TIES:
    raise UserError(f"--ties={ties!r}: use one of {', '.join(TIES)}.")
  pairs = []
  counts = {"judgements": 0, "pairs": 0, "tied_pairs": 0, "ties_dropped": 0, "identical": 0}
  for j in latest(judgements).values():
    counts["judgements"] += 1
    responses = j["responses"]
    base = {"prompt": j["prompt"], "id": j["prompt_id"], "prompt_id": j["prompt_id"],
            "labeler": j["labeler"]}
    strict, tied = ranking_pairs(j["ranking"])
    for a, b in strict:
      if responses[a] == responses[b]:
        counts["identical"] += 1
        continue
      pairs.append({**base, "chosen": responses[a], "rejected": responses[b]})
      counts["pairs"] += 1
    for a, b in tied:
      if ties == "drop":
        counts["ties_dropped"] += 1
      elif responses[a] == responses[b]:
        counts["identical"] += 1
      else:
        for x, y in ((a, b), (b, a)):
          pairs.append({**base, "chosen": responses[x], "rejected": responses[y], "margin": 0,
                        "tie": True})
        counts["tied_pairs"] += 1
  return pairs, counts
