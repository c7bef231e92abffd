"""Learning-rate schedules and the weight-decay mask; the built optimizer against AdamW written
out in numpy: global-norm clipping rescales a gradient over the threshold to norm clip_norm and
leaves one below it alone, and weight decay shrinks exactly the matrices and embeddings of a
real model (not its biases or norm params) by lr * weight_decay * param."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxllm import config as config_lib
from jaxllm.models import Transformer, get_size
from jaxllm.models.params import unbox
from jaxllm.train import optimizer


def _opt(**kw):
  c = config_lib.base_config().optimizer
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


def _adamw_reference(params, grads_steps, lr, b1, b2, eps, weight_decay, decayed):
  """Params after AdamW (Loshchilov & Hutter; optax's form: decoupled decay added to the Adam
  direction, both times lr) on each gradient in turn, in numpy; `decayed`: name -> bool."""
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  mu = {k: np.zeros_like(v) for k, v in params.items()}
  nu = {k: np.zeros_like(v) for k, v in params.items()}
  for t, grads in enumerate(grads_steps, start=1):
    for k in params:
      g = np.asarray(grads[k], np.float64)
      mu[k] = b1 * mu[k] + (1 - b1) * g
      nu[k] = b2 * nu[k] + (1 - b2) * g * g
      direction = (mu[k] / (1 - b1 ** t)) / (np.sqrt(nu[k] / (1 - b2 ** t)) + eps)
      params[k] = params[k] - lr * (direction + weight_decay * decayed[k] * params[k])
  return params


def _run(tx, params, grads_steps):
  """Params after one optimizer update per gradient (compiled as one program)."""
  @jax.jit
  def run(params, grads_steps):
    state = tx.init(params)
    for grads in grads_steps:
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    return params
  return run(params, grads_steps)


def _clip_case():
  """Two leaves (kernel, bias) whose gradient norms are 8 and 6: global norm 10."""
  rng = np.random.default_rng(0)
  unit = lambda shape: (lambda x: x / np.linalg.norm(x))(rng.normal(size=shape))
  params = {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  big = {"kernel": jnp.asarray(8.0 * unit((3, 4)), jnp.float32),
         "bias": jnp.asarray(6.0 * unit((4,)), jnp.float32)}
  small = {"kernel": jnp.asarray(0.3 * unit((3, 4)), jnp.float32),
           "bias": jnp.asarray(0.4 * unit((4,)), jnp.float32)}  # global norm 0.5
  return params, big, small


def test_global_norm_clipping_rescales_a_gradient_over_the_threshold_to_clip_norm():
  params, big, small = _clip_case()
  norm = lambda g: float(np.sqrt(sum(np.sum(np.square(x)) for x in g.values())))
  assert norm(big) == pytest.approx(10.0, rel=1e-6) and norm(small) == pytest.approx(0.5)
  # eps = 1 makes Adam's step depend on the gradient's size (with eps ~ 0 its first step is
  # lr * sign(g) whatever the scale, and clipping would not show).
  kw = dict(lr=0.1, warmup_steps=0, schedule="constant", b1=0.9, b2=0.95, eps=1.0,
            weight_decay=0.0)
  clipped = optimizer.make_optimizer(_opt(clip_norm=1.0, **kw), 10)
  unclipped = optimizer.make_optimizer(_opt(clip_norm=0.0, **kw), 10)
  rescaled = {k: v / 10.0 for k, v in big.items()}  # the same direction at norm 1
  no_decay = {"kernel": False, "bias": False}
  ref = lambda steps: _adamw_reference(params, steps, 0.1, 0.9, 0.95, 1.0, 0.0, no_decay)
  # Norm 10, clipped to 1: the update of the gradient rescaled to norm 1 (over the whole tree,
  # not per leaf), then a second step below the threshold goes through unchanged.
  got = _run(clipped, params, [big, small])
  same = _run(clipped, params, [rescaled, small])
  want = ref([rescaled, small])
  for k in params:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
    np.testing.assert_allclose(got[k], same[k], rtol=1e-6, err_msg=k)
  # Without clipping the same gradients move the params elsewhere: the check above can fail.
  free = _run(unclipped, params, [big, small])
  np.testing.assert_allclose(free["kernel"], ref([big, small])["kernel"], rtol=1e-5)
  assert np.max(np.abs(free["kernel"] - got["kernel"])) > 1e-2
  # Below the threshold: the update is the unclipped one.
  below = _run(clipped, params, [small, small])
  for k in params:
    np.testing.assert_allclose(below[k], _run(unclipped, params, [small, small])[k], rtol=1e-6)
    np.testing.assert_allclose(below[k], ref([small, small])[k], rtol=1e-5, err_msg=k)


GPT2_TINY = dataclasses.replace(get_size("tiny"), norm="layer", mlp="gelu", position="learned",
                                use_bias=True, num_kv_heads=4, max_seq_len=64,
                                tie_embeddings=False)


def _decayed_paths(layers):
  """The params that weight decay shrinks, listed: the token and position embeddings, the
  output head and every attention and MLP matrix. Biases and norm params are not decayed."""
  matrices = ["attn/q", "attn/k", "attn/v", "attn/o", "mlp/up", "mlp/down"]
  return ({"embed/embedding", "pos_embed/embedding", "lm_head/kernel"}
          | {f"{layer}/{m}/kernel" for layer in layers for m in matrices})


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scanned"])
def test_weight_decay_shrinks_exactly_the_matrices_and_embeddings_of_a_model(scan):
  cfg = dataclasses.replace(GPT2_TINY, scan_layers=scan)
  shapes = jax.eval_shape(lambda: unbox(Transformer(cfg).init(
      jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  names = ["/".join(k.key for k in path) for path, _ in leaves]
  rng = np.random.default_rng(1)  # nonzero values everywhere (biases start at 0, scales at 1)
  params = treedef.unflatten([jnp.asarray(rng.normal(size=x.shape) + 2.0, jnp.float32)
                              for _, x in leaves])
  decayed = _decayed_paths(["layers"] if scan else ["layer_0", "layer_1"])
  assert decayed <= set(names)
  kept = set(names) - decayed
  assert {"final_norm/scale", "final_norm/bias"} <= kept and any("mlp/up/bias" in n for n in kept)
  assert any("attn_norm/scale" in n for n in kept) and any("attn/q/bias" in n for n in kept)
  lr, wd = 0.1, 0.5
  tx = optimizer.make_optimizer(_opt(lr=lr, warmup_steps=0, schedule="constant",
                                     weight_decay=wd, clip_norm=1.0), 10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  after = _run(tx, params, [zeros])  # zero gradient: Adam's direction is 0, only decay acts
  flat_before = dict(zip(names, jax.tree.leaves(params)))
  for name, new in zip(names, jax.tree.leaves(after)):
    old = np.asarray(flat_before[name])
    if name in decayed:
      np.testing.assert_allclose(new, old - lr * wd * old, rtol=1e-6, err_msg=name)
    else:
      np.testing.assert_array_equal(new, old, err_msg=name)
