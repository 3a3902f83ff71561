"""Property-based tests (hypothesis): Layca's invariants over random shapes, dtypes and rates.

For every layer with a non-degenerate tangent step, one step keeps the norm, turns the
weights by exactly ``arctan(rate)`` and moves them (almost) orthogonally to themselves;
nothing is ever NaN; bf16 in gives bf16 out; the composable chain equals the fused
optimizer; cosine distances are symmetric, scale-free and in [0, 2]. Values are float64
NumPy measurements of the float32 results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import layca_optax as lo
from tests import tolerances

# Each example compiles a new shape (~0.3-1 s): few examples (the same ones every run), no
# example database on disk. 20 and 10 examples took 54 s of the suite; 10 and 5, about half.
SETTINGS = settings(max_examples=10, deadline=None, database=None, derandomize=True)
FEWER = settings(SETTINGS, max_examples=5)

# 1 to 4 dims of 1 to 9; at least two elements (a one-element layer cannot rotate: init
# warns and Layca leaves it alone, see test_bad_input.py).
shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).filter(
    lambda s: int(np.prod(s)) >= 2
).map(tuple)
trees = st.lists(shapes, min_size=1, max_size=3)
rates = st.floats(1e-6, 10.0)
seeds = st.integers(0, 2**31 - 1)
ALL_LAYERS = True  # mask: a prefix of the params selecting every leaf, 1-D ones too


def random_tree(leaf_shapes, seed, dtype=np.float32):
  rng = np.random.default_rng(seed)
  params = {f"w{i}": rng.normal(size=s).astype(dtype) for i, s in enumerate(leaf_shapes)}
  grads = {k: rng.normal(size=v.shape).astype(dtype) for k, v in params.items()}
  return params, grads


def f64(x):
  return np.asarray(jnp.asarray(x, jnp.float32), np.float64).ravel()


def tangent_fraction(g, w):
  g, w = f64(g), f64(w)
  perp = g - (g @ w) / (w @ w) * w
  return np.linalg.norm(perp) / np.linalg.norm(g)


def angle(a, b):
  a, b = f64(a), f64(b)
  a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
  return 2 * np.arctan2(np.linalg.norm(a - b), np.linalg.norm(a + b))


def one_step(tx, params, grads):
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  return updates, optax.apply_updates(params, updates)


@pytest.mark.slow
@SETTINGS
@given(trees, rates, seeds)
def test_one_step_keeps_the_norm_turns_by_arctan_rate_orthogonally(leaf_shapes, rate, seed):
  params, grads = random_tree(leaf_shapes, seed)
  # Away from gradients (nearly) parallel to w, whose tangent part float32 barely holds
  # (test_layca.py covers those); a parallel one leaves w alone.
  assume(all(tangent_fraction(grads[k], params[k]) > 0.1 for k in params))
  updates, new = one_step(lo.layca(rate, mask=ALL_LAYERS), params, grads)
  theta = np.arctan(rate)
  for k, w in params.items():
    size = w.size  # the bounds of tests/tolerances.py, for this leaf and rate
    assert np.all(np.isfinite(updates[k])) and updates[k].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f64(new[k])), np.linalg.norm(f64(w)),
                               rtol=tolerances.norm_rtol(rate, 0.1, size))
    # Storing w' in float32 moves it by up to ~eps ||w||: eps / rate relative to the angle.
    np.testing.assert_allclose(angle(new[k], w), theta,
                               rtol=tolerances.applied_angle_rtol(rate, size))
    # u is a chord of the sphere: |u| = 2 sin(theta/2) |w| and cos(u, w) = -sin(theta/2),
    # so small steps are orthogonal to w. float32 holds u's radial part only to about
    # eps |w|, i.e. eps / rate relative to |u|.
    u, w = f64(updates[k]), f64(w)
    u_rtol = tolerances.update_rtol(rate, 0.1, size)
    np.testing.assert_allclose(np.linalg.norm(u), 2 * np.sin(theta / 2) * np.linalg.norm(w),
                               rtol=u_rtol)
    cos = (u @ w) / (np.linalg.norm(u) * np.linalg.norm(w))
    np.testing.assert_allclose(cos, -np.sin(theta / 2), atol=u_rtol)


@pytest.mark.slow
@FEWER
@given(trees, rates, seeds)
def test_bfloat16_stays_bfloat16_finite_and_near_the_sphere(leaf_shapes, rate, seed):
  params, grads = random_tree(leaf_shapes, seed)
  params = {k: jnp.asarray(v, jnp.bfloat16) for k, v in params.items()}
  grads = {k: jnp.asarray(v, jnp.bfloat16) for k, v in grads.items()}
  updates, new = one_step(lo.layca(rate, base_optimizer=optax.trace(0.9), mask=ALL_LAYERS), params, grads)
  for k, w in params.items():
    assert updates[k].dtype == jnp.bfloat16 and new[k].dtype == jnp.bfloat16
    assert np.all(np.isfinite(f64(new[k])))
    # Within bfloat16 resolution (2^-8 relative per element, a few roundings).
    np.testing.assert_allclose(np.linalg.norm(f64(new[k])), np.linalg.norm(f64(w)),
                               rtol=4 * 2.0**-8)


@pytest.mark.slow
@FEWER
@given(trees, rates, st.floats(-1.0, 1.0), seeds)
def test_composable_chain_equals_layca(leaf_shapes, rate, alpha, seed):
  params, grads = random_tree(leaf_shapes, seed)
  assume(all(tangent_fraction(grads[k], params[k]) > 1e-2 for k in params))
  chain = optax.chain(
      lo.project_orthogonal(mask=ALL_LAYERS),
      lo.normalize_rotation(mask=ALL_LAYERS),
      lo.scale_by_layer_rates(rate, alpha=alpha, mask=ALL_LAYERS),
      lo.project_to_sphere(mask=ALL_LAYERS),
  )
  _, expected = one_step(chain, params, grads)
  _, got = one_step(lo.layca(rate, alpha=alpha, mask=ALL_LAYERS), params, grads)
  for k, w in params.items():  # two float32 computations of one step, each within its bound
    tolerances.assert_close_in_norm(
        got[k], expected[k], 2 * tolerances.trajectory_rtol(rate, 1, w.size, 1e-2), k
    )


@pytest.mark.slow
@FEWER
@given(trees, seeds, st.integers(-20, 20))
def test_cosine_distance_invariants(leaf_shapes, seed, exponent):
  a, b = random_tree(leaf_shapes, seed)
  d_ab = lo.cosine_distance(a, b)
  d_ba = lo.cosine_distance(b, a)
  d_aa = lo.cosine_distance(a, a)
  # Scaling by a power of two is exact in float32: the distance changes by rounding only
  # (the one-pass and the unit-difference forms may then be chosen differently).
  scaled = {k: v * np.float32(2.0**exponent) for k, v in a.items()}
  d_scaled = lo.cosine_distance(scaled, b)
  for k in a:
    rel = tolerances.distance_rtol(a[k].size)  # each computed distance's bound
    assert 0.0 <= float(d_ab[k]) <= 2.0
    assert float(d_aa[k]) == 0.0
    assert float(d_ab[k]) == pytest.approx(float(d_ba[k]), rel=2 * rel)
    assert float(d_scaled[k]) == pytest.approx(float(d_ab[k]), rel=2 * rel)
    expected = 1 - f64(a[k]) @ f64(b[k]) / (np.linalg.norm(f64(a[k])) * np.linalg.norm(f64(b[k])))
    assert float(d_ab[k]) == pytest.approx(expected, rel=rel)
