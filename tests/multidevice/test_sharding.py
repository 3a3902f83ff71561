"""Multi-device: sharded params and batches under jit, and shard_map with ``axis_name``.

Runs on the 8 simulated CPU devices of ``conftest.py``. JAX's SPMD machinery does all the
communication: under ``jax.jit`` the library needs nothing, inside ``shard_map`` its
per-layer reductions are ``psum``-ed over ``axis_name``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import layca_optax as lo

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices (conftest sets jax_num_cpu_devices)"
)

LR = 0.1
AXES = ("x", "y")


def mesh_2d():
  return jax.make_mesh((2, 4), AXES, axis_types=(AxisType.Explicit,) * 2)


def make_tx(kind: str, axis_name=None):
  """Layca (momentum, alpha) or the chain of its composable parts."""
  if kind == "layca":
    return lo.layca(LR, base_optimizer=optax.trace(0.9), alpha=-0.4, axis_name=axis_name)
  return optax.chain(
      optax.trace(0.9),
      lo.project_orthogonal(axis_name=axis_name),
      lo.normalize_rotation(axis_name=axis_name),
      lo.scale_by_layer_rates(LR, alpha=-0.4, axis_name=axis_name),
      lo.project_to_sphere(axis_name=axis_name),
  )


KINDS = ["layca", "chain"]


def assert_trees_close(actual, expected, rtol=2e-5, atol=2e-6):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def random_tree(shapes, seed):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def run_steps(tx, params, grad_list):
  """A few jitted steps with gradients that depend on the params; returns all params."""
  update = jax.jit(tx.update)
  state = jax.jit(tx.init)(params)
  history = []
  for noise in grad_list:
    grads = jax.tree.map(lambda n, w: n + 0.3 * w * w, noise, params)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history, state


# -- data parallel: params replicated, batch sharded --------------------------------------


def mlp_params(seed=0):
  return random_tree({"dense_0": (16, 32), "bias_0": (32,), "dense_1": (32, 4)}, seed)


def mlp_loss(params, x, y):
  hidden = jnp.tanh(x @ params["dense_0"] + params["bias_0"][None, :])
  return jnp.mean((hidden @ params["dense_1"] - y) ** 2)


def train(tx, params, batches):
  @jax.jit
  def step(params, state, xb, yb):
    loss, grads = jax.value_and_grad(mlp_loss)(params, xb, yb)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  state = jax.jit(tx.init)(params)
  for xb, yb in batches:
    params, state, _ = step(params, state, xb, yb)
  return params


@pytest.mark.parametrize("kind", KINDS)
def test_replicated_params_and_sharded_batch_match_one_device(kind):
  rng = np.random.default_rng(1)
  batches = [
      (rng.normal(size=(32, 16)).astype(np.float32), rng.normal(size=(32, 4)).astype(np.float32))
      for _ in range(3)
  ]
  params = mlp_params()
  expected = train(make_tx(kind), params, batches)

  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
  replicated = jax.device_put(params, NamedSharding(mesh, P()))
  on_devices = jax.device_put(batches, NamedSharding(mesh, P("data")))
  assert on_devices[0][0].addressable_shards[0].data.shape == (4, 16)
  got = train(make_tx(kind), replicated, on_devices)

  assert_trees_close(got, expected)
  for leaf in jax.tree.leaves(got):
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
  distance = jax.jit(lo.cosine_distance)
  assert_trees_close(distance(got, replicated), distance(expected, params))


# -- model parallel: kernels sharded on a 2-D Explicit mesh under jit ----------------------

SHAPES = {"conv": (3, 3, 8, 16), "dense": (16, 8), "bias": (8,), "scale": ()}
SPECS = {"conv": P(None, None, "x", "y"), "dense": P("x", "y"), "bias": P("y"), "scale": P()}


def shard(tree, mesh, specs=SPECS):
  return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in tree.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_kernels_sharded_on_2d_explicit_mesh_match_unsharded(kind):
  mesh = mesh_2d()
  params = random_tree(SHAPES, 0)
  noises = [random_tree(SHAPES, 10 + i) for i in range(3)]
  expected, _ = run_steps(make_tx(kind), params, noises)

  sharded = shard(params, mesh)
  got, _ = run_steps(make_tx(kind), sharded, [shard(n, mesh) for n in noises])
  for new, old in zip(got, expected):
    assert_trees_close(new, old)
  for name, leaf in got[-1].items():  # the update keeps each leaf's sharding
    assert leaf.sharding.spec == sharded[name].sharding.spec, name
  # Under jit, as in training: eagerly, each op on these sharded values is its own
  # multi-device program, and once in CI (2 loaded cores running 8 simulated devices) one
  # of them aborted the process inside XLA; jitted, the measurement is one program.
  distance, angle = jax.jit(lo.cosine_distance), jax.jit(lo.rotation_angle)
  assert_trees_close(distance(got[-1], sharded), distance(expected[-1], params))
  assert_trees_close(angle(got[-1], got[-2]), angle(expected[-1], expected[-2]))


@pytest.mark.parametrize("jit", [True, False])
def test_init_on_sharded_params_keeps_the_params_sharding(jit):
  mesh = mesh_2d()
  sharded = shard(random_tree(SHAPES, 0), mesh)
  tx = lo.layca(LR, base_optimizer=optax.trace(0.9))
  base_state, layca_state = (jax.jit(tx.init) if jit else tx.init)(sharded)
  # The momentum buffers are sharded like the params: no leaf gathered on one device.
  for name, buffer in base_state.trace.items():
    assert buffer.sharding.spec == sharded[name].sharding.spec, name
  # The initial norms are scalars (float32, replicated) with the right values.
  for name, norm in layca_state.initial_norms.items():
    assert norm.shape == () and norm.dtype == jnp.float32
    expected = np.linalg.norm(np.asarray(sharded[name])) if len(SHAPES[name]) >= 2 else 0.0
    np.testing.assert_allclose(norm, expected, rtol=1e-6)


# -- shard_map: each device holds a slice of a leaf -----------------------------------------

# A kernel on both mesh axes, one on 'x' only, a replicated kernel and a bias on 'y': with
# axis_name=('x', 'y') each reduction is summed over exactly the axes its leaf is split on.
MIXED_SHAPES = {"conv": (3, 3, 4, 8), "dense": (8, 6), "head": (6, 5), "bias": (4,)}
MIXED_SPECS = {
    "conv": P(None, None, "x", "y"), "dense": P("x", None), "head": P(), "bias": P("y")
}
# For shard_map(check_vma=False), where JAX does not track replication: every leaf split
# over every named axis.
SPLIT_SHAPES = {"conv": (3, 3, 4, 8), "dense": (8, 8), "bias": (8,)}
SPLIT_SPECS = {"conv": P(None, None, "x", "y"), "dense": P("x", "y"), "bias": P(AXES)}


def train_and_measure(params, grads, kind, axis_name):
  """Steps through ``grads``; returns the params, their cosine distances and angles."""
  tx = make_tx(kind, axis_name)
  state, start = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  distances = lo.cosine_distance(params, start, axis_name=axis_name)
  angles = lo.rotation_angle(params, start, axis_name=axis_name)
  return params, distances, angles


def layca_in_shard_map(kind, shapes, specs, axis_name, check_vma=True, steps=2):
  """The global result of ``train_and_measure`` and the one computed inside shard_map."""
  mesh = mesh_2d()
  params = random_tree(shapes, 0)
  grads = [random_tree(shapes, 10 + i) for i in range(steps)]
  expected = jax.jit(lambda p, g: train_and_measure(p, g, kind, None))(params, grads)

  scalars = {k: P() for k in shapes}
  local = jax.shard_map(
      lambda p, g: train_and_measure(p, g, kind, axis_name),
      mesh=mesh,
      in_specs=(specs, [specs] * steps),
      out_specs=(specs, scalars, scalars),
      check_vma=check_vma,
  )
  got = jax.jit(local)(shard(params, mesh, specs), [shard(g, mesh, specs) for g in grads])
  return expected, got


@pytest.mark.parametrize("kind", KINDS)
def test_shard_map_with_axis_name_equals_the_global_result(kind):
  expected, got = layca_in_shard_map(kind, MIXED_SHAPES, MIXED_SPECS, AXES)
  assert_trees_close(got, expected)
  # ...and every kernel really rotated (alpha=-0.4 slows the last one to 0.6**5 * LR).
  assert all(float(a) > 1e-3 for k, a in expected[2].items() if k != "bias")


def test_shard_map_without_vma_checks_sums_every_named_axis():
  expected, got = layca_in_shard_map("layca", SPLIT_SHAPES, SPLIT_SPECS, AXES, check_vma=False)
  assert_trees_close(got, expected)


def test_shard_map_without_axis_name_gives_per_shard_results():
  # Each device then rotates its own slice by arctan(rate): not the global rotation.
  expected, got = layca_in_shard_map(
      "layca", SPLIT_SHAPES, SPLIT_SPECS, None, check_vma=False
  )
  for name in ("conv", "dense"):
    assert not np.allclose(got[0][name], expected[0][name], rtol=1e-3, atol=1e-4), name


# -- the example ---------------------------------------------------------------------------


def test_data_parallel_example_trains_on_8_devices_like_on_one():
  pytest.importorskip("flax")
  from examples import data_parallel

  result = data_parallel.main(["--steps", "6", "--batch-size", "32"])
  assert result["num_devices"] == 8
  assert result["losses"][-1] < result["losses"][0]
  assert result["relative_difference"] < 1e-5
  with pytest.raises(ValueError, match="multiple of the 8 devices"):
    data_parallel.train(None, data_parallel.data_mesh(), steps=1, batch_size=12)
