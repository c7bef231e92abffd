"""Mesh, logical axis rules, multi-host initialisation, sharded placement."""

from jaxllm.parallel.mesh import MESH_AXES, make_mesh, maybe_initialize_distributed
from jaxllm.parallel.sharding import (
  DEFAULT_RULES,
  batch_sharding,
  global_batch,
  logical_to_sharding,
  rules_from_config,
)

__all__ = ["MESH_AXES", "make_mesh", "maybe_initialize_distributed", "DEFAULT_RULES",
           "batch_sharding", "global_batch", "logical_to_sharding", "rules_from_config"]
