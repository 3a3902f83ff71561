"""One tree-wide cond guards the rare exact paths; small leaves are reduced in stacks.

Performance structure (BENCHMARKS.md): each executed ``lax.cond`` costs ~0.1 ms on XLA:CPU,
so a step with no leaf in the rare case must run one cond, not one per leaf; and trees of
many small leaves compile fast only when same-shaped leaves are reduced together. Both must
leave every value as it was leaf by leaf.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from layca_optax import _groups, _guard


def top_level_conds(fn, *args):
  return sum(e.primitive.name == "cond" for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns)


@pytest.mark.parametrize("n", [1, 3])
def test_rarely_exact_takes_the_exact_path_only_for_rare_items(n):
  fast = [jnp.float32(i) for i in range(n)]
  exact = [lambda o, f: o[0] + 0.5 for _ in range(n)]

  @jax.jit
  def run(flags):
    operands = [(jnp.float32(10 * i), flags[i]) for i in range(n)]
    return _guard.rarely_exact(
        jnp.any(flags), [lambda o: o[1]] * n, exact, operands, fast
    )

  for flags in ([False] * n, [True] * n, [i == n - 1 for i in range(n)]):
    got = [float(x) for x in run(jnp.array(flags))]
    assert got == [10 * i + 0.5 if f else float(i) for i, f in enumerate(flags)]


def test_rarely_exact_splits_and_joins_packed_values():
  packed = jnp.arange(5.0)  # item 0: [0, 1], item 1: [2, 3, 4]
  split = lambda v: [v[:2], v[2:]]  # noqa: E731
  out = _guard.rarely_exact(
      jnp.array(True), [lambda o: o] * 2, [lambda o, f: -f] * 2,
      [jnp.array(False), jnp.array(True)], packed, split, jnp.concatenate,
  )
  np.testing.assert_array_equal(out, [0.0, 1.0, -2.0, -3.0, -4.0])


def test_rarely_exact_has_one_top_level_cond_for_many_items():
  def fn(operands, fast):
    return _guard.rarely_exact(
        jnp.array(False), [lambda o: False] * 4, [lambda o, f: f] * 4, operands, fast
    )
  assert top_level_conds(fn, [jnp.ones(3)] * 4, [jnp.float32(0)] * 4) == 1


def many_small_leaves(seed=0):
  rng = np.random.default_rng(seed)
  tree = {f"b{i}": {"q": rng.normal(size=(8, 8)), "up": rng.normal(size=(8, 16))}
          for i in range(4)}
  tree["big"] = rng.normal(size=(300, 300))  # above the group size: on its own
  return jax.tree.map(lambda x: x.astype(np.float32), tree)


def test_layca_and_rotation_have_one_top_level_cond():
  params = many_small_leaves()
  tx = lo.layca(0.1)
  state = tx.init(params)
  assert top_level_conds(lambda g, s, p: tx.update(g, s, p), params, state, params) == 1
  assert top_level_conds(lo.cosine_distance, params, params) == 1
  monitor = lo.measure_rotation()
  m_state = monitor.init(params)
  assert top_level_conds(lambda u, s, p: monitor.update(u, s, p), params, m_state, params) == 1


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
  monkeypatch.setattr(_groups, "MAX_SIZE", 0)
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
  monkeypatch.setattr(_groups, "MAX_SIZE", 0)
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
  monkeypatch.setattr(_groups, "MAX_SIZE", 0)
  _, alone = measure()
  for u, o in zip(jax.tree.leaves(updates), jax.tree.leaves(out)):
    np.testing.assert_array_equal(np.asarray(o), np.asarray(u))
  new = optax.apply_updates(params, updates)
  for g, a, x, y in zip(*(jax.tree.leaves(t) for t in (grouped, alone, new, params))):
    np.testing.assert_allclose(float(g), float(a), rtol=1e-5)
    np.testing.assert_allclose(
        float(g), np.arccos(1 - numpy_distance(x, y)), rtol=2e-4, atol=2e-4
    )


def test_packer_round_trips_units_of_any_small_shape():
  shapes = [(), (1, 1), (3, 1), (2,)]
  packer = _groups.Packer(shapes)
  values = [jnp.float32(2.0), jnp.ones((1, 1)), jnp.arange(3.0).reshape(3, 1), 7.0]
  vector = packer.pack(values)
  assert vector.shape == (1 + 1 + 3 + 2,)
  for out, value, shape in zip(packer.unpack(vector), values, shapes):
    assert out.shape == shape
    np.testing.assert_array_equal(out, np.broadcast_to(value, shape))


def test_grouped_layers_read_their_slot_and_fall_back_when_groups_split(monkeypatch):
  # Slots index a group's coefficients only when the group is the whole class of
  # same-shaped small layers; gradients of mixed dtypes split a class, and then the
  # leaves take constant indices. Both must equal the leaf-by-leaf step.
  params = many_small_leaves(4)
  grads = jax.tree.map(lambda x: np.cos(3 * x), params)
  mixed = dict(grads, b1=jax.tree.map(lambda x: x.astype(jnp.bfloat16), grads["b1"]))
  tx = lo.layca(0.1)
  state = tx.init(params)
  slots = state[1].slots
  assert [int(slots[f"b{i}"]["q"]) for i in range(4)] == [0, 1, 2, 3]
  assert slots["big"] is None
  def run(g, s):  # a fresh jit each time: traced with the current MAX_SIZE
    return jax.jit(lambda g, s, p: tx.update(g, s, p)[0])(g, s, params)

  grouped = [run(g, state) for g in (grads, mixed)]
  monkeypatch.setattr(_groups, "MAX_SIZE", 0)
  alone = [run(g, tx.init(params)) for g in (grads, mixed)]
  for g, a in zip(grouped, alone):
    for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(a)):
      np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                                 rtol=1e-5, atol=1e-6)
