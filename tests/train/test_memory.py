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
