"""A training call's progress on the console: its log lines, elapsed time and ETA, and a tqdm
bar when the output is a terminal.

Where stdout is a file (a job's log, `| tee`), only plain lines are written, one per logged step,
each ending in elapsed time and the ETA. On a terminal the same lines scroll above a bar that
moves every step and shows the newest loss; `TQDM_DISABLE=1` turns the bar off. Only the main
process (process 0) prints.
"""

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

import tqdm


class Progress:
  """Lines and, on a terminal, a bar for the steps `start_step + 1 .. num_steps` of one call."""

  def __init__(self, num_steps: int, *, show: bool = True, stream: TextIO | None = None):
    self.num_steps, self.show = num_steps, show
    self.stream = stream if stream is not None else sys.stdout
    self.start_step = 0
    self.began = self.counted_from = time.perf_counter()
    self.bar: tqdm.tqdm | None = None

  def start(self, start_step: int) -> None:
    """The call begins at `start_step` (0, or the step a run resumed at)."""
    self.start_step = start_step
    self.began = self.counted_from = time.perf_counter()

  def compiled(self) -> None:
    """The step is compiled: the ETA counts from here, and on a terminal the bar appears."""
    self.counted_from = time.perf_counter()
    if (self.bar is None and self.show and _is_terminal(self.stream)
        and self.start_step < self.num_steps):
      self.bar = tqdm.tqdm(total=self.num_steps, initial=self.start_step, file=self.stream,
                           unit="step", dynamic_ncols=True, leave=False)

  def advance(self, step: int, loss: float | None = None) -> None:
    """Step `step` is done; its loss shown on the bar."""
    if self.bar is None:
      return
    if loss is not None:
      self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
    self.bar.update(step - self.bar.n)

  def log(self, message: str) -> None:
    """A whole line: above the bar on a terminal, plain in a file."""
    if not self.show:
      return
    if self.bar is None:
      print(message, file=self.stream, flush=True)
    else:
      self.bar.write(message, file=self.stream)

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Lifts the bar off the screen while other code prints (evaluation, rollouts), then draws
    it again."""
    if self.bar is None:
      yield
      return
    self.bar.clear()
    try:
      yield
    finally:
      self.bar.refresh()

  def line(self, step: int) -> str:
    """`| 0:40 elapsed, ETA 1:30`: the suffix of a logged step's line (no ETA at the last)."""
    now = time.perf_counter()
    done = step - self.start_step
    text = f" | {duration(now - self.began)} elapsed"
    if done > 0 and step < self.num_steps:
      text += f", ETA {duration((now - self.counted_from) / done * (self.num_steps - step))}"
    return text

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None


def duration(seconds: float) -> str:
  """`m:ss`, or `h:mm:ss` from an hour."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _is_terminal(stream: TextIO) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # no isatty, or a closed stream
    return False
