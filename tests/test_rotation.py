"""cosine_distance and rotation_angle: exact for identical leaves, accurate for tiny angles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layca_optax as lo
from tests import tolerances


def rotated(w, angle, rng):
  """w rotated by ``angle`` (float64) in a random plane containing it."""
  w = np.asarray(w, np.float64)
  u = w / np.linalg.norm(w)
  v = rng.normal(size=w.shape)
  v -= np.sum(v * u) * u
  v /= np.linalg.norm(v)
  return np.linalg.norm(w) * (np.cos(angle) * u + np.sin(angle) * v)


@pytest.mark.parametrize("shape", [(3, 3, 1, 4), (64, 64), (3,), (3, 3, 32, 64)])
def test_identical_leaves_are_at_distance_exactly_zero(shape):
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=shape).astype(np.float32)}
  copy = jax.tree.map(np.copy, params)  # equal values, distinct buffers (as under jit)
  for fn in (lo.cosine_distance, lo.rotation_angle):
    for call in (fn, jax.jit(fn)):
      assert float(call(params, copy)["w"]) == 0.0, (fn.__name__, call)


@pytest.mark.parametrize("angle", [1e-4, 1e-3, 0.1, 1.0, 2.5])
def test_accurate_in_float32_down_to_small_angles(angle):
  rng = np.random.default_rng(1)
  w0 = rng.normal(size=(3, 3, 32, 64))
  w = rotated(w0, angle, rng) * 1.7  # the norm does not matter
  d = lo.cosine_distance({"w": w.astype(np.float32)}, {"w": w0.astype(np.float32)})["w"]
  assert d.dtype == jnp.float32
  # Against the float64 angle before the inputs were rounded to float32: the measure's
  # bound plus that rounding (applied_angle_rtol); a distance carries twice the error.
  rtol = tolerances.applied_angle_rtol(angle, w0.size)
  np.testing.assert_allclose(float(d), 1 - np.cos(angle), rtol=2 * rtol)
  a = lo.rotation_angle({"w": w.astype(np.float32)}, {"w": w0.astype(np.float32)})["w"]
  np.testing.assert_allclose(float(a), angle, rtol=rtol)


def test_zero_norm_leaves_are_defined():
  z, one = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
  d = lo.cosine_distance({"a": z, "b": z}, {"a": z, "b": one})
  assert float(d["a"]) == 0.0 and float(d["b"]) == 1.0
  a = lo.rotation_angle({"a": z, "b": z}, {"a": z, "b": one})
  assert float(a["a"]) == 0.0 and np.isclose(float(a["b"]), np.pi / 2)


def test_mask_leaves_unselected_leaves_none():
  params = {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}
  d = lo.cosine_distance(params, params, mask=lo.default_mask)
  assert d["b"] is None and float(d["w"]) == 0.0


def test_structure_mismatch_is_named():
  with pytest.raises(ValueError, match="params have 'w' where reference params have 'v'"):
    lo.cosine_distance({"w": np.ones(2)}, {"v": np.ones(2)})
