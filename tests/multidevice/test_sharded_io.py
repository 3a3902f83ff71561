"""Sharded params in checkpoints and curves, on the 8 simulated devices of this folder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import layca_optax as lo
from tests.test_checkpoint import (
    SAVE_AT,
    STEPS,
    assert_bit_identical,
    init_params,
    make_tx,
    restore,
    run,
    save,
)
from tests.test_checkpoint_report import (
    RestoreSpy,
    assert_curves_match,
    random_walk,
    save_steps,
)

pytest.importorskip("orbax.checkpoint")


def test_sharded_checkpoint_restores_onto_the_mesh_and_resumes_bit_identically(tmp_path):
  # Auto axes: the compiler inserts whatever communication the toy loss needs.
  mesh = jax.make_mesh((2, 4), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
  specs = {"conv": P(None, None, "x", "y"), "dense": P("x", "y"), "bias": P("y")}
  params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in init_params().items()}
  tx = make_tx()
  uninterrupted = run(tx, params, tx.init(params), range(STEPS))
  mid = run(tx, params, tx.init(params), range(SAVE_AT))
  save(tmp_path / "ckpt", mid)

  # The restore target carries each leaf's sharding: orbax puts every shard in place.
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), mid
  )
  restored = restore(tmp_path / "ckpt", target)
  for new, old in zip(jax.tree.leaves(restored), jax.tree.leaves(mid)):
    assert new.sharding == old.sharding
  assert_bit_identical(run(tx, *restored, range(SAVE_AT, STEPS)), uninterrupted)


def test_params_sharded_over_eight_devices_are_read_whole_on_the_host(tmp_path, monkeypatch):
  assert jax.device_count() == 8
  mesh = jax.make_mesh((4, 2), ("a", "b"), axis_types=(AxisType.Explicit,) * 2)
  specs = {"conv": P(None, None, "a", "b"), "dense": P("a", "b"), "bias": P("a")}
  rng = np.random.default_rng(0)
  init = {
      "conv": rng.normal(size=(3, 3, 4, 8)).astype(np.float32),
      "dense": rng.normal(size=(8, 16)).astype(np.float32),
      "bias": rng.normal(size=(8,)).astype(np.float32),
  }
  host = random_walk(init)
  sharded = {
      t: {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in tree.items()}
      for t, tree in host.items()
  }
  assert len(sharded[0]["dense"].sharding.device_set) == 8
  save_steps(tmp_path / "ck", {t: {"params": tree} for t, tree in sharded.items()})
  spy = RestoreSpy(monkeypatch)
  curves = lo.curves_from_checkpoints(tmp_path / "ck")
  assert_curves_match(curves, host)
  # Restored as whole host arrays, no sharding needed.
  assert spy.leaf_types == {np.ndarray}
  assert spy.leaf_shapes == {(3, 3, 4, 8), (8, 16), (8,)}


def test_device_reference_keeps_the_params_sharding():
  mesh = jax.make_mesh((4,), ("x",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
  init = {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4), sharding)}
  curves = lo.LayerRotationCurves(init, reference_dtype=jnp.bfloat16)
  assert curves._reference[0].sharding.is_equivalent_to(sharding, 2)
  curves.record(0, {"w": init["w"] * 2.0})
  assert curves.latest() == {"w": pytest.approx(0.0, abs=1e-5)}
