"""A trained model that also reads frozen params: one wrapper for the LoRA base, the DPO
reference and the distillation teacher.

The training loop takes such a model's frozen params as `frozen_params`: it places them on the
mesh as `frozen_model`'s params, passes them to every step unchanged, gives them no optimizer
state and does not checkpoint them. Inside the compiled step, `model.with_frozen(frozen)` binds
them (jaxllm/train/step.py), and `frozen_apply` runs `frozen_model` on them outside the gradient.

  WithFrozen(policy)                            DPO with the reference in the step: the frozen
                                                params are a copy of the policy's starting params
  WithFrozen(student, frozen_module=teacher)    distillation: the frozen params are the teacher's
  LoraModel(transformer_with_lora)              LoRA (jaxllm/models/lora.py): the frozen params
                                                are the base, the trained ones its adapters; its
                                                frozen_apply runs the base alone, which is the
                                                reference of a LoRA policy
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class WithFrozen:
  """`model` trains; `frozen_module` (default: `model` itself) runs the frozen params."""

  model: nn.Module  # the trained model: init, apply and cfg are its
  frozen_module: nn.Module | None = None  # None: the frozen params are `model`'s (a reference)
  frozen: Any = None  # the frozen params, bound by with_frozen inside the step

  @property
  def cfg(self):
    return self.model.cfg

  @property
  def frozen_model(self) -> nn.Module:
    """The module the frozen params belong to (their shapes and shardings)."""
    return self.model if self.frozen_module is None else self.frozen_module

  def with_frozen(self, frozen: Any) -> "WithFrozen":
    return dataclasses.replace(self, frozen=frozen)

  def bound_frozen(self) -> Any:
    """The bound frozen params; ValueError naming the fix when none are bound."""
    if self.frozen is None:
      raise ValueError(f"{type(self).__name__} needs its frozen params bound: with_frozen(params) "
                       "(the train loop does it when given frozen_params).")
    return self.frozen

  def init(self, *args, **kwargs):
    return self.model.init(*args, **kwargs)

  def apply(self, *args, **kwargs):
    return self.model.apply(*args, **kwargs)

  def frozen_apply(self, *args, module: nn.Module | None = None, **kwargs):
    """`frozen_model` (or its clone `module`, e.g. one that outputs hidden states) on the
    frozen params, outside the gradient."""
    out = (module or self.frozen_model).apply({"params": self.bound_frozen()}, *args, **kwargs)
    return jax.lax.stop_gradient(out)
