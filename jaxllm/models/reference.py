"""A model trained in full beside a frozen copy of params it also reads: the reference policy.

DPO and RL with a KL penalty compare the policy with a frozen reference (the model they started
from). `WithReference(model)` has the interface of a model with frozen params (as `LoraModel`):
the train step binds the reference params with `with_frozen(params)`, and `frozen_apply` runs
them. For a LoRA policy no copy is needed: its frozen base without the adapters is the
reference, so `frozen_apply` on a `LoraModel` runs the base alone.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class WithReference:
  """`model` whose frozen params (bound with `with_frozen`) are a reference copy."""

  model: nn.Module
  base: Any = None

  @property
  def cfg(self):
    return self.model.cfg

  @property
  def frozen_model(self) -> nn.Module:
    return self.model

  def with_frozen(self, base: Any) -> "WithReference":
    return dataclasses.replace(self, base=base)

  def init(self, *args, **kwargs):
    return self.model.init(*args, **kwargs)

  def apply(self, *args, **kwargs):
    return self.model.apply(*args, **kwargs)


def frozen_apply(model, *args, **kwargs):
  """The frozen params' model alone (the reference policy), outside the gradient:
  `WithReference`: the reference copy; `LoraModel`: the base without its adapters."""
  if getattr(model, "base", None) is None:
    raise ValueError("frozen_apply needs a model with frozen params bound (WithReference or "
                     "LoraModel after with_frozen); pass frozen params to the train loop.")
  out = model.frozen_model.apply({"params": model.base}, *args, **kwargs)
  return jax.lax.stop_gradient(out)
