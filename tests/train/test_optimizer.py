"""Learning-rate schedules and the weight-decay mask."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm import config as config_lib
from jaxllm.train import optimizer


def _opt(**kw):
  c = config_lib.pretrain_config().optimizer
  c.update(kw)
  return c


def test_warmup_then_cosine_to_min_ratio():
  s = optimizer.learning_rate_schedule(_opt(lr=1.0, warmup_steps=4, min_lr_ratio=0.1,
                                            schedule="cosine"), num_steps=104)
  np.testing.assert_allclose([s(i) for i in range(5)], [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(s(54), 0.55, rtol=1e-5)  # half way down the cosine
  np.testing.assert_allclose(s(104), 0.1, rtol=1e-5)


@pytest.mark.parametrize("schedule,mid,end", [("linear", 0.55, 0.1), ("constant", 1.0, 1.0)])
def test_linear_and_constant(schedule, mid, end):
  s = optimizer.learning_rate_schedule(_opt(lr=1.0, warmup_steps=0, min_lr_ratio=0.1,
                                            schedule=schedule), num_steps=100)
  np.testing.assert_allclose([s(0), s(50), s(100)], [1.0, mid, end], rtol=1e-5)


def test_weight_decay_only_on_matrices_and_embeddings():
  params = {"embed": {"embedding": jnp.ones((4, 2))},
            "layers": {"attn_norm": {"scale": jnp.ones((3, 2))},  # 2-D when layers are scanned
                       "mlp": {"up": {"kernel": jnp.ones((3, 2, 2)), "bias": jnp.ones((3, 2))}}}}
  mask = optimizer.decay_mask(params)
  assert mask == {"embed": {"embedding": True},
                  "layers": {"attn_norm": {"scale": False},
                             "mlp": {"up": {"kernel": True, "bias": False}}}}
