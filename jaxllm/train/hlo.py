"""What a compiled program does, read from its optimized HLO text: the collectives it runs (and
their bytes) and an estimate of its HBM traffic, each counted as many times as the loops around
it run (scanned layers and microbatches are `while` loops executed once per iteration).

Counting is per device (the SPMD program every device runs). A `while` loop's trip count is
XLA's `known_trip_count` when the backend writes it, else read off its condition (`counter <
N`, the form `jax.lax.scan` lowers to); a loop whose count cannot be read counts once.
"""

import dataclasses
import re

import numpy as np

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_SHAPE = re.compile(r"\b(pred|s4|u4|s8|u8|s16|u16|bf16|f16|s32|u32|f32|s64|u64|f64|c64|c128|"
                    r"f8e4m3fn|f8e5m2)\[([\d,]*)\](\{[^}]*\})?")
_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2,
          "f16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
          "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\((.*)$")
# Instructions that move no data of their own (names, views, control flow, bookkeeping).
_NO_TRAFFIC = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "while",
               "conditional", "call", "after-all", "partition-id", "replica-id", "opt-barrier",
               "add-dependency", "custom-call-done", "copy-done", "all-gather-done",
               "all-reduce-done", "collective-permute-done", "async-done", "async-update"}


def shape_bytes(text: str, hbm_only: bool = False) -> float:
  """Bytes of every array shape written in `text` (each element of a tuple shape); with
  `hbm_only`, not those the layout places in another memory space (`S(1)`: on-chip memory)."""
  total = 0.0
  for dtype, dims, layout in _SHAPE.findall(text):
    if hbm_only and re.search(r"S\([1-9]", layout):
      continue
    total += _BYTES[dtype] * float(np.prod([int(d) for d in dims.split(",") if d]))
  return total


@dataclasses.dataclass
class _Instruction:
  name: str
  shape: str  # the result's shape text
  op: str
  rest: str  # operands and attributes


def _parse(text: str) -> tuple[dict[str, list[_Instruction]], list[str]]:
  """(computation -> its instructions, the entry computations)."""
  computations: dict[str, list[_Instruction]] = {}
  entries: list[str] = []
  current = None
  for line in text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      header = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)", line)
      if header:
        current = header.group(2)
        computations[current] = []
        if header.group(1):
          entries.append(current)
      continue
    if current is None:
      continue
    match = _INSTRUCTION.match(line)
    if match:
      computations[current].append(_Instruction(*match.groups()))
  return computations, entries


def _trip_count(instruction: _Instruction, computations) -> int:
  known = re.search(r'known_trip_count"?\s*[:=]\s*\{\s*"?n"?\s*[:=]\s*"?(\d+)', instruction.rest)
  if known:
    return int(known.group(1))
  cond = re.search(r"condition=%?([\w.\-]+)", instruction.rest)
  body = computations.get(cond.group(1), []) if cond else []
  constants = [int(c.group(1)) for i in body if i.op == "constant"
               for c in [re.match(r"(-?\d+)\)", i.rest)] if c and i.shape.startswith("s32")]
  compares = [i for i in body if i.op == "compare" and "direction=LT" in i.rest]
  return constants[0] if len(constants) == 1 and len(compares) == 1 else 1


def executions(computations, entries) -> tuple[dict[str, float], dict[str, str]]:
  """(how many times each computation runs per run of the program, the control-flow computation
  each one runs inside: itself for the entry, loop bodies and conditions, branches and calls;
  the caller's for fusion bodies, async wrappers and reducers)."""
  times: dict[str, float] = {}
  owner: dict[str, str] = {}

  def visit(name: str, count: float, owned_by: str | None, depth: int) -> None:
    if depth > 64 or name not in computations:
      return
    times[name] = times.get(name, 0.0) + count
    owner.setdefault(name, owned_by or name)
    here = owner[name]
    for ins in computations[name]:
      if ins.op == "while":
        trips = _trip_count(ins, computations)
        for attr, n in (("body", trips), ("condition", trips + 1)):
          callee = re.search(rf"{attr}=%?([\w.\-]+)", ins.rest)
          if callee:
            visit(callee.group(1), count * n, None, depth + 1)
        continue
      branches = re.search(r"branch_computations=\{([^}]*)\}", ins.rest)
      callees = re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else []
      callees += re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", ins.rest)
      if ins.op == "call":
        callees += re.findall(r"to_apply=%?([\w.\-]+)", ins.rest)
      for callee in callees:
        visit(callee, count, None, depth + 1)
      if ins.op != "call":  # fusions, async wrappers, reducers: part of this computation
        for callee in re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", ins.rest):
          visit(callee, count, here, depth + 1)
  for entry in entries:
    visit(entry, 1.0, None, 0)
  return times, owner


def collectives(text: str) -> dict[str, dict[str, float]]:
  """{kind: {"count", "bytes"}} per device and run: each collective's result bytes (an
  all-reduce counted twice: a reduce-scatter then an all-gather), times its executions. A
  collective XLA split over several fusions (the same channel id within one control-flow
  computation: an asynchronous start, its steps, its end) counts once."""
  computations, entries = _parse(text)
  times, owner = executions(computations, entries)
  seen: dict[tuple, tuple[str, float, float]] = {}  # key -> (kind, bytes, runs)
  for name, instructions in computations.items():
    if name not in times:
      continue
    for ins in instructions:
      kind = ins.op.removesuffix("-start")
      if kind not in COLLECTIVES:
        continue
      shape = ins.shape
      if ins.op.endswith("-start"):  # an async start returns (operands, results[, context])
        parts = _top_level(shape)
        shape = parts[1] if len(parts) > 1 else shape
      size = shape_bytes(shape) * (2 if kind == "all-reduce" else 1)
      channel = re.search(r"channel_id=(\d+)", ins.rest)
      if channel:
        key, runs = (owner[name], kind, channel.group(1)), times[owner[name]]
      else:
        key, runs = (name, kind, ins.name), times[name]
      if key not in seen or size > seen[key][1]:
        seen[key] = (kind, size, runs)
  out: dict[str, dict[str, float]] = {}
  for kind, size, runs in seen.values():
    entry = out.setdefault(kind, {"count": 0.0, "bytes": 0.0})
    entry["count"] += runs
    entry["bytes"] += size * runs
  return out


def _operands(ins: _Instruction) -> list[str]:
  return re.findall(r"%([\w.\-]+)", ins.rest.split("), ", 1)[0])


def _fusion_traffic(fused: list[_Instruction], operand_sizes: list[float],
                    result_size: float) -> float:
  """Bytes a fusion moves: each operand read whole, except one it only slices (the slices are
  read) or updates in place (nothing read); the result written, except an in-place update (the
  update written). This is how XLA's own cost analysis treats dynamic slices."""
  params = {ins.name: int(re.match(r"(\d+)", ins.rest).group(1))
            for ins in fused if ins.op == "parameter"}
  sizes = {ins.name: shape_bytes(ins.shape, hbm_only=True) for ins in fused}
  users: dict[str, list[tuple[_Instruction, int]]] = {}
  for ins in fused:
    for position, name in enumerate(_operands(ins)):
      users.setdefault(name, []).append((ins, position))
  read = 0.0
  for name, index in params.items():
    size = operand_sizes[index] if index < len(operand_sizes) else sizes[name]
    uses = users.get(name, [])
    if uses and all(u.op == "dynamic-slice" and pos == 0 for u, pos in uses):
      read += sum(sizes[u.name] for u, _ in uses)
    elif uses and all(u.op == "dynamic-update-slice" and pos == 0 for u, pos in uses):
      continue  # updated in place: not read
    else:
      read += size
  by_name = {ins.name: ins for ins in fused}
  root = fused[-1] if fused else None  # HLO text prints the ROOT instruction last
  outputs = ([by_name[n] for n in _operands(root) if n in by_name]
             if root is not None and root.op == "tuple" else [root] if root is not None else [])
  written = result_size
  for out in outputs:
    if out.op == "dynamic-update-slice":  # in place: only the update is written
      update = _operands(out)[1]
      written += sizes.get(update, 0.0) - sizes[out.name]
  return read + written


def hbm_traffic(text: str) -> float:
  """Bytes read and written per run, estimated: each data-moving instruction of the control-flow
  computations (a fusion, a dot, a copy, a collective, a custom call) reads its operands and
  writes its result once, times its executions; a slice of a stacked array (scanned layers)
  reads only the slice, and an in-place update writes only the update. Fusion bodies are not
  counted (their intermediates stay on chip), nor buffers the compiler placed in on-chip memory
  (TPU layouts marked S(1)).

  Checked against XLA's own "bytes accessed" on loop-free programs (where XLA's count is
  whole): equal within 0.1% on CPU; on TPU lower (2.1 vs 3.6 GiB for 4 layers of llama-125m
  on v5e:2x4, batch 8 x 512), XLA's TPU count including the on-chip buffers."""
  computations, entries = _parse(text)
  times, owner = executions(computations, entries)
  total = 0.0
  for name in [c for c, o in owner.items() if c == o]:  # the control-flow computations
    sizes = {ins.name: shape_bytes(ins.shape, hbm_only=True) for ins in computations[name]}
    for ins in computations[name]:
      if ins.op in _NO_TRAFFIC:
        continue
      operand_sizes = [sizes.get(n, 0.0) for n in _operands(ins)]
      result = shape_bytes(ins.shape, hbm_only=True)
      fused = re.search(r"calls=%?([\w.\-]+)", ins.rest) if ins.op == "fusion" else None
      if fused and fused.group(1) in computations:
        moved = _fusion_traffic(computations[fused.group(1)], operand_sizes, result)
      elif ins.op == "dynamic-slice":
        moved = 2 * result
      elif ins.op == "dynamic-update-slice":
        moved = 2 * (operand_sizes[1] if len(operand_sizes) > 1 else result)
      else:
        moved = sum(operand_sizes) + result
      total += moved * times.get(name, 0.0)
  return total


def _top_level(shape: str) -> list[str]:
  """'(a, (b, c), d)' -> ['a', '(b, c)', 'd']."""
  shape = shape.strip()
  if not shape.startswith("("):
    return [shape]
  parts, depth, current = [], 0, ""
  for ch in shape[1:-1]:
    if ch == "," and depth == 0:
      parts.append(current.strip())
      current = ""
      continue
    depth += (ch in "([{") - (ch in ")]}")
    current += ch
  parts.append(current.strip())
  return parts
