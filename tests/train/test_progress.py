"""The console of a training call: plain lines in a file, a bar over them on a terminal, and
the elapsed time and ETA on each line."""

import io

from jaxllm.train import progress


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def _session(stream, show=True):
  console = progress.Progress(num_steps=4, show=show, stream=stream)
  console.start(0)
  console.log("compiled")
  console.compiled()
  for step in (1, 2):
    console.advance(step, loss=2.5 / step)
  console.log("step 2/4")
  with console.paused():
    stream.write("eval: qa (1/1)\n")  # what an eval suite prints meanwhile
  console.advance(3, loss=0.75)
  console.close()
  return stream.getvalue()


def test_a_file_gets_exactly_the_lines():
  assert _session(io.StringIO()) == "compiled\nstep 2/4\neval: qa (1/1)\n"


def test_a_terminal_gets_the_same_lines_above_a_bar_that_follows_the_steps():
  shown = _session(_Terminal())
  # Redrawn with each line written above it (tqdm throttles the redraws between them).
  assert "\r 50%" in shown and "| 2/4 [" in shown and "loss 1.2500" in shown
  visible = [ln.split("\r")[-1].strip() for ln in shown.split("\n")]
  for line in ("compiled", "step 2/4", "eval: qa (1/1)"):
    assert line in visible  # each on a line of its own, not inside the bar


def test_only_the_main_process_prints():
  assert _session(_Terminal(), show=False) == "eval: qa (1/1)\n"


def test_the_clock_gives_elapsed_time_and_an_eta_from_the_steps_after_the_compile(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
  console = progress.Progress(num_steps=120, stream=io.StringIO())
  console.start(20)  # a run resumed at step 20
  now[0] = 130.0  # 30 s of compiling
  console.compiled()
  now[0] = 140.0  # then 10 steps in 10 s: 1 s a step, 90 steps to go
  assert console.line(30) == " | 0:40 elapsed, ETA 1:30"
  now[0] = 100.0 + 3 * 3600 + 230
  assert console.line(120) == " | 3:03:50 elapsed"  # the last step: no ETA
