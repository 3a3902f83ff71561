"""``layca`` against the composable chain on trees of many equal-shaped small layers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from tests import tolerances


def chain(rate, alpha=0.0, rotation_axes=None):
  kw = dict(rotation_axes=rotation_axes)
  return optax.chain(
      lo.project_orthogonal(**kw),
      lo.normalize_rotation(**kw),
      lo.scale_by_layer_rates(rate, alpha=alpha, **kw),
      lo.project_to_sphere(**kw),
  )


def many_layers(seed=0, blocks=5):
  rng = np.random.default_rng(seed)
  tree = {}
  for i in range(blocks):
    tree[f"b{i}"] = {
        "q": rng.normal(size=(8, 8)).astype(np.float32),
        "k": rng.normal(size=(8, 8)).astype(np.float32),
        "up": rng.normal(size=(8, 16)).astype(np.float32),
        "bias": rng.normal(size=(16,)).astype(np.float32),
    }
  tree["big"] = rng.normal(size=(300, 300)).astype(np.float32)  # above the group size
  return tree


def step(tx, params, grads):
  state = tx.init(params)
  updates, _ = jax.jit(tx.update)(grads, state, params)
  return optax.apply_updates(params, updates)


def assert_close(actual, expected, rate=0.2):
  # Two float32 computations of one step, each within its bound (tests/tolerances.py).
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    tolerances.assert_close_in_norm(a, e, 2 * tolerances.trajectory_rtol(rate, 1, 128, 0.1))


@pytest.mark.parametrize(
    "alpha",
    [pytest.param(0.0, marks=pytest.mark.slow), -0.5, pytest.param(0.7, marks=pytest.mark.slow)],
)
def test_many_small_leaves_match_the_chain(alpha):
  params = many_layers()
  grads = jax.tree.map(lambda x: np.float32(0.1) * x[::-1] + 0.3, params)
  assert_close(step(lo.layca(0.1, alpha=alpha), params, grads),
               step(chain(0.1, alpha), params, grads))


def test_one_nearly_parallel_leaf_among_many_still_rotates_by_arctan_rate():
  params = many_layers(2)
  grads = jax.tree.map(lambda x: np.sin(x), params)
  w = params["b3"]["q"]
  tangent = np.random.default_rng(3).normal(size=w.shape).astype(np.float32)
  tangent -= (tangent * w).sum() / (w * w).sum() * w
  tangent *= 1e-3 * np.linalg.norm(w) / np.linalg.norm(tangent)
  grads["b3"]["q"] = w + tangent  # ||p|| / ||s|| = 1e-3: nearly parallel
  new = step(lo.layca(0.1), params, grads)
  for path, (old, moved) in [("b3/q", (w, new["b3"]["q"])),
                             ("b0/k", (params["b0"]["k"], new["b0"]["k"]))]:
    old64, new64 = np.asarray(old, np.float64), np.asarray(moved, np.float64)
    cos = (old64 * new64).sum() / np.linalg.norm(old64) / np.linalg.norm(new64)
    angle = np.arctan2(np.sqrt(max(1 - cos * cos, 0.0)), cos)
    np.testing.assert_allclose(
        angle, np.arctan(0.1), rtol=tolerances.applied_angle_rtol(0.1, 64), err_msg=path
    )
    np.testing.assert_allclose(np.linalg.norm(new64), np.linalg.norm(old64),
                               rtol=tolerances.norm_rtol(0.1, 1e-3, 64))


@pytest.mark.parametrize("axes_fn", [lo.output_unit_axes, lo.stacked_layer_axes])
def test_per_vector_rotation_axes_match_the_chain(axes_fn):
  rng = np.random.default_rng(4)
  params = {f"l{i}": rng.normal(size=(3, 6, 5)).astype(np.float32) for i in range(4)}
  grads = jax.tree.map(lambda x: np.tanh(x[:, ::-1]) + 0.1, params)
  assert_close(step(lo.layca(0.2, alpha=-0.3, rotation_axes=axes_fn), params, grads),
               step(chain(0.2, -0.3, rotation_axes=axes_fn), params, grads))


def test_zero_gradient_leaves_of_a_tree_stay_bit_identical():
  params = many_layers(5)
  grads = jax.tree.map(jnp.zeros_like, params)
  grads["b1"]["q"] = jnp.ones((8, 8))
  new = step(lo.layca(0.1), params, grads)
  for name in ("q", "k", "up"):
    np.testing.assert_array_equal(new["b0"][name], params["b0"][name])
  assert not np.array_equal(new["b1"]["q"], params["b1"]["q"])
