"""Mesh sizes from config."""

import pytest

from jaxllm.errors import ConfigError
from jaxllm.parallel.mesh import resolve_axis_sizes


def test_minus_one_takes_the_remaining_devices():
  assert resolve_axis_sizes({"data": -1, "fsdp": 4, "tensor": 2}, 16) == (2, 4, 2)
  assert resolve_axis_sizes({"data": 2, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)


@pytest.mark.parametrize("sizes,message", [
    ({"data": -1, "fsdp": -1, "tensor": 1}, "only one axis may be -1"),
    ({"data": -1, "fsdp": 3, "tensor": 1}, "not divisible"),
    ({"data": 2, "fsdp": 2, "tensor": 1}, "uses 4 devices but 8 are present"),
])
def test_bad_mesh_sizes_are_named(sizes, message):
  with pytest.raises(ConfigError, match=message):
    resolve_axis_sizes(sizes, 8)

