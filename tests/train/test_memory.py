"""The memory line of a compiled step adds up, and the guard checks that total (on CPU, XLA's
reported "peak" leaves the temporaries out)."""

import re

import jax
import jax.numpy as jnp
import pytest

from jaxllm.errors import UserError
from jaxllm.train import memory


def _compiled():
  def step(x):  # temporaries (two 512 x 512 matrices) far larger than the argument and output
    y = jnp.sin(jnp.outer(x, x))
    return jnp.sort(y @ y, axis=0)[0] + jnp.sort(y, axis=1)[:, 0]
  return jax.jit(step).lower(jnp.ones((512,), jnp.float32)).compile()


def test_the_memory_line_adds_up_and_the_guard_checks_its_total():
  compiled = _compiled()
  est = memory.estimate(compiled)
  assert est["temporaries"] > 10 * est["arguments"]
  assert est["total"] >= est["arguments"] + est["temporaries"]
  line = memory.check(compiled)
  total, state, temps, outputs = (float(x) for x in re.findall(r"([\d.]+) MiB", line)[:4])
  assert total == pytest.approx(state + temps + outputs, abs=0.02), line
  # A limit above the arguments but below the temporaries: the step does not fit.
  limit_gib = (est["arguments"] + est["temporaries"] / 2) / memory.GiB
  with pytest.raises(UserError, match="would run out of memory"):
    memory.check(compiled, override_gib=limit_gib)


@pytest.mark.parametrize("message, needs", [
    ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
     "temporaries (25.83G) exceeds available HBM (15.75G).", (25.83 * 2**30, 15.75 * 2**30)),
    ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space "
     "hbm. Used 20.5G of 15.75G hbm. Exceeded hbm capacity by 4.75G.",
     (20.5 * 2**30, 15.75 * 2**30)),
    ("INVALID_ARGUMENT: something else", None)])
def test_the_tpu_compilers_out_of_memory_messages_are_read(message, needs):
  assert memory.compiler_out_of_memory(message) == (pytest.approx(needs) if needs else None)


def test_a_step_the_compiler_cannot_place_stops_with_the_advice(tiny_config, tmp_path,
                                                               monkeypatch):
  """On TPU the compiler itself refuses a step that does not fit; the loop says it in one
  error with the advice, as for the guard's own check."""
  from jaxllm.recipes import pretrain

  def refuse(self, *args, **kwargs):
    raise RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                       "required for HLO temporaries (25.83G) exceeds available HBM (15.75G).")
  monkeypatch.setattr(jax.stages.Lowered, "compile", refuse)
  with pytest.raises(UserError, match=r"needs 25.83 GiB per device .*remat=full"):
    pretrain.run(tiny_config, tmp_path)
