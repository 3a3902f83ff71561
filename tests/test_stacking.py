"""Small same-shaped leaves are reduced in stacks, rare exact paths run behind one cond.

Both are implementation choices for speed (``layca_optax/_stacking.py``); they must leave
every value as it was leaf by leaf.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from layca_optax import _stacking


@pytest.mark.parametrize("n", [1, 3])
def test_values_per_leaf_takes_the_exact_path_only_for_rare_leaves(n):
  @jax.jit
  def run(flags):
    groups = _stacking.group_leaves(
        [(jnp.ones(10 + i),) for i in range(n)], [(0,)] * n  # shapes differ: n groups
    )
    return _stacking.values_per_leaf(
        groups,
        common=[jnp.float32(i) for i in range(n)],
        rare=[flags[i] for i in range(n)],
        exact=[lambda i=i: jnp.float32(10 * i + 0.5) for i in range(n)],
    )

  for flags in ([False] * n, [True] * n, [i == n - 1 for i in range(n)]):
    got = [float(x) for x in run(jnp.array(flags))]
    assert got == [10 * i + 0.5 if f else float(i) for i, f in enumerate(flags)]


def test_values_per_leaf_unstacks_groups_and_replaces_only_rare_vectors():
  leaves = [(jnp.ones((2, 3)),), (jnp.ones((5,)),), (jnp.ones((2, 3)),)]
  groups = _stacking.group_leaves(leaves, [(1,), (0,), (1,)])
  assert [g.members for g in groups] == [(0, 2), (1,)]
  stacked = jnp.arange(4.0).reshape(2, 2, 1)  # (members, vectors, size-1 vector axis)
  out = _stacking.values_per_leaf(
      groups,
      common=[stacked, jnp.float32(7.0)],
      rare=[jnp.array([[[False], [True]], [[False], [False]]]), jnp.array(False)],
      exact=[lambda: -stacked, lambda: jnp.float32(-7.0)],
  )
  np.testing.assert_array_equal(out[0], [[0.0], [-1.0]])
  np.testing.assert_array_equal(out[2], [[2.0], [3.0]])
  assert float(out[1]) == 7.0


def many_small_leaves(seed=0):
  rng = np.random.default_rng(seed)
  tree = {f"b{i}": {"q": rng.normal(size=(8, 8)), "up": rng.normal(size=(8, 16))}
          for i in range(4)}
  tree["big"] = rng.normal(size=(300, 300))  # above the group size: on its own
  return jax.tree.map(lambda x: x.astype(np.float32), tree)


def moved(params):
  """Each leaf rotated a little; b1/q changed only in norm (the exact path)."""
  out = jax.tree.map(lambda x: x + 0.05 * np.cos(7 * x), params)
  out["b1"]["q"] = params["b1"]["q"] * np.float32(1.3)
  return out


def numpy_distance(a, b):
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  return 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def test_grouped_cosine_distance_equals_leaf_by_leaf_and_float64(monkeypatch):
  params = many_small_leaves(1)
  other = moved(params)
  grouped = jax.jit(lo.cosine_distance)(other, params)
  angles = jax.jit(lo.rotation_angle)(other, params)
  monkeypatch.setattr(_stacking, "MAX_STACKED_SIZE", 0)
  alone = jax.jit(lo.cosine_distance)(other, params)
  for g, a, x, y in zip(*(jax.tree.leaves(t) for t in (grouped, alone, other, params))):
    np.testing.assert_allclose(float(g), float(a), rtol=1e-6)
    np.testing.assert_allclose(float(g), numpy_distance(x, y), rtol=2e-4, atol=1e-9)
  assert float(grouped["b1"]["q"]) < 1e-6  # a change of norm only: no rotation
  assert float(angles["b1"]["q"]) < 2e-3


def test_grouped_per_block_distances_equal_leaf_by_leaf(monkeypatch):
  rng = np.random.default_rng(2)
  params = {f"l{i}": rng.normal(size=(3, 8, 8)).astype(np.float32) for i in range(3)}
  other = jax.tree.map(lambda x: x + 0.1 * np.sin(5 * x), params)
  axes = lambda p: jax.tree.map(lambda _: (1, 2), p)  # noqa: E731
  grouped = lo.cosine_distance(other, params, rotation_axes=axes)
  monkeypatch.setattr(_stacking, "MAX_STACKED_SIZE", 0)
  alone = lo.cosine_distance(other, params, rotation_axes=axes)
  for key in params:
    assert grouped[key].shape == (3,)
    np.testing.assert_allclose(grouped[key], alone[key], rtol=1e-6)
    expected = [numpy_distance(other[key][i], params[key][i]) for i in range(3)]
    np.testing.assert_allclose(grouped[key], expected, rtol=2e-4)


def test_grouped_measure_rotation_equals_leaf_by_leaf_and_keeps_the_updates(monkeypatch):
  params = many_small_leaves(3)
  updates = jax.tree.map(lambda a, b: a - b, moved(params), params)
  tx = lo.measure_rotation(mask=lambda p: jax.tree.map(lambda _: True, p))

  def measure():
    @jax.jit
    def step(u, p):
      out, state = tx.update(u, tx.init(p), p)
      return out, lo.rotation_rates(state)
    return step(updates, params)

  out, grouped = measure()
  monkeypatch.setattr(_stacking, "MAX_STACKED_SIZE", 0)
  _, alone = measure()
  for u, o in zip(jax.tree.leaves(updates), jax.tree.leaves(out)):
    np.testing.assert_array_equal(np.asarray(o), np.asarray(u))
  new = optax.apply_updates(params, updates)
  for g, a, x, y in zip(*(jax.tree.leaves(t) for t in (grouped, alone, new, params))):
    np.testing.assert_allclose(float(g), float(a), rtol=1e-5)
    np.testing.assert_allclose(
        float(g), np.arccos(1 - numpy_distance(x, y)), rtol=2e-4, atol=2e-4
    )


@pytest.mark.slow
def test_grouped_layers_equal_leaf_by_leaf_also_when_dtypes_split_a_group(monkeypatch):
  # Gradients of mixed dtypes split a class of same-shaped layers into two groups.
  params = many_small_leaves(4)
  grads = jax.tree.map(lambda x: np.cos(3 * x), params)
  mixed = dict(grads, b1=jax.tree.map(lambda x: x.astype(jnp.bfloat16), grads["b1"]))
  tx = lo.layca(0.1)
  state = tx.init(params)

  def run(g, s):  # a fresh jit each time: traced with the current MAX_STACKED_SIZE
    return jax.jit(lambda g, s, p: tx.update(g, s, p)[0])(g, s, params)

  grouped = [run(g, state) for g in (grads, mixed)]
  monkeypatch.setattr(_stacking, "MAX_STACKED_SIZE", 0)
  alone = [run(g, tx.init(params)) for g in (grads, mixed)]
  for g, a in zip(grouped, alone):
    for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(a)):
      np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                                 rtol=1e-5, atol=1e-6)
