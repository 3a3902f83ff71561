"""Checkpoints: save (params, optimizer state) mid-training with orbax, restore, resume.

Everything that gives Layca's step its meaning is either a constructor argument (rate or
schedule, base, alpha, depth exponent, layer order, mask, axis name) or in the state (the
step count that drives the schedule, the initial norms that fix each layer's sphere, the
base optimizer's buffers). So a run restored with the same constructor continues
bit-identically, and nothing is recomputed from the params at restore time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo

ocp = pytest.importorskip("orbax.checkpoint")

STEPS, SAVE_AT = 8, 4


def make_tx():
  """Momentum base, layer-wise rates and a schedule that decays after the checkpoint."""
  schedule = optax.piecewise_constant_schedule(0.2, {6: 0.3})
  return lo.layca(schedule, base_optimizer=optax.trace(0.9), alpha=0.5)


def init_params():
  rng = np.random.default_rng(0)
  shapes = {"conv": (3, 3, 2, 4), "dense": (4, 4), "bias": (4,)}
  return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}


def loss(params, x):
  hidden = jax.nn.relu(jnp.einsum("nhwc,hwcd->nd", x, params["conv"]))
  return jnp.mean((hidden @ params["dense"] + params["bias"][None, :]) ** 2)


DATA = np.random.default_rng(1).normal(size=(STEPS, 5, 3, 3, 2)).astype(np.float32)


def make_step(tx):
  @jax.jit
  def step(params, state, x):
    updates, state = tx.update(jax.grad(loss)(params, x), state, params)
    return optax.apply_updates(params, updates), state

  return step


def run(tx, params, state, steps):
  step = make_step(tx)
  for i in steps:
    params, state = step(params, state, DATA[i])
  return params, state


def assert_bit_identical(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


def save(path, tree):
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, tree)
    checkpointer.wait_until_finished()


def restore(path, target):
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path, target)


@pytest.mark.slow
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
  tx = make_tx()
  params = init_params()
  uninterrupted = run(tx, params, tx.init(params), range(STEPS))

  # First job: train to SAVE_AT, checkpoint, exit.
  mid_params, mid_state = run(tx, params, tx.init(params), range(SAVE_AT))
  save(tmp_path / "ckpt", {"params": mid_params, "opt_state": mid_state})

  # Second job: a new optimizer from the same constructor; the restore target only gives
  # shapes, dtypes and the state's types (no values, nothing recomputed from params).
  tx = make_tx()
  target = jax.eval_shape(lambda: {"params": init_params(), "opt_state": tx.init(init_params())})
  restored = restore(tmp_path / "ckpt", target)
  assert_bit_identical(restored["opt_state"], mid_state)
  assert isinstance(restored["opt_state"][1], lo.ScaleByLaycaState)
  assert int(restored["opt_state"][1].count) == SAVE_AT
  resumed = run(tx, restored["params"], restored["opt_state"], range(SAVE_AT, STEPS))
  assert_bit_identical(resumed, uninterrupted)

  # The state is what carries the schedule's position, the momentum and the spheres:
  # resuming with a fresh state (a forgotten restore) gives another trajectory.
  fresh = run(tx, restored["params"], tx.init(restored["params"]), range(SAVE_AT, STEPS))
  assert not np.array_equal(fresh[0]["dense"], uninterrupted[0]["dense"])


def test_restoring_into_another_optimizer_structure_fails_loudly(tmp_path):
  tx = make_tx()
  params = init_params()
  save(tmp_path / "ckpt", tx.init(params))
  # Adam's state (mu, nu, count) is not momentum's (trace): the restore refuses it.
  other = lo.layca(0.1, base_optimizer=optax.scale_by_adam())
  with pytest.raises((ValueError, KeyError, TypeError)):
    restore(tmp_path / "ckpt", jax.eval_shape(other.init, params))
