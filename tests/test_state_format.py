"""Layca's optimizer state is a checkpoint format: pinned here, leaf by leaf.

A checkpoint written today must restore after any internal refactor, so the state holds
what defines the algorithm (the step count and the initial norms, beside the base
optimizer's own state) and nothing that depends on how the step is computed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo

nnx = pytest.importorskip("flax.nnx")


class MLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(3, 4, rngs=rngs)
    self.out = nnx.Linear(4, 2, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def described(tree):
  return [
      (jax.tree_util.keystr(path), tuple(np.shape(leaf)), str(jnp.result_type(leaf)))
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


# The state of layca(base_optimizer=optax.trace(0.9)) for MLP, as nnx.Optimizer holds it. Changing
# this list breaks every checkpoint users have written: don't, unless on purpose.
PINNED = [
    ("[0].trace['hidden']['bias'].value", (4,), "float32"),
    ("[0].trace['hidden']['kernel'].value", (3, 4), "float32"),
    ("[0].trace['out']['bias'].value", (2,), "float32"),
    ("[0].trace['out']['kernel'].value", (4, 2), "float32"),
    ("[1].count", (), "int32"),
    ("[1].initial_norms['hidden']['bias']", (), "float32"),
    ("[1].initial_norms['hidden']['kernel']", (), "float32"),
    ("[1].initial_norms['out']['bias']", (), "float32"),
    ("[1].initial_norms['out']['kernel']", (), "float32"),
]


def test_the_state_of_a_flax_model_is_pinned():
  params = nnx.state(MLP(nnx.Rngs(0)), nnx.Param)
  state = lo.layca(0.1, base_optimizer=optax.trace(0.9)).init(params)
  assert described(state) == PINNED
  assert state[1]._fields == ("count", "initial_norms")
  kernel = params["hidden"]["kernel"].get_value()
  np.testing.assert_allclose(
      state[1].initial_norms["hidden"]["kernel"], np.linalg.norm(kernel), rtol=1e-6
  )
  assert float(state[1].initial_norms["hidden"]["bias"]) == 0.0  # not a layer


def test_a_saved_state_continues_after_restore(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  rng = np.random.default_rng(0)
  params = {f"l{i}": jnp.asarray(rng.normal(size=(8, 8)), jnp.float32) for i in range(4)}
  grads = jax.tree.map(lambda x: jnp.cos(3 * x), params)
  tx = lo.layca(0.1, base_optimizer=optax.trace(0.9))
  step = jax.jit(lambda p, s: tx.update(grads, s, p))
  state = tx.init(params)
  _, state = step(params, state)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "state", state)
  expected, _ = step(params, state)

  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(tmp_path / "state", tx.init(params))
  fresh = lo.layca(0.1, base_optimizer=optax.trace(0.9))  # a new optimizer object, as after a restart
  got, _ = jax.jit(lambda p, s: fresh.update(grads, s, p))(params, restored)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_per_vector_initial_norms_have_the_leaf_shape_without_the_rotation_axes():
  params = {"blocks": {"kernel": jnp.ones((3, 4, 5))}, "head": {"kernel": jnp.ones((5, 2))}}
  tx = lo.layca(
      0.1, rotation_axes=lambda p: {"blocks": lo.stacked_layer_axes(p["blocks"]), "head": None}
  )
  norms = tx.init(params)[1].initial_norms
  assert norms["blocks"]["kernel"].shape == (3,)
  assert norms["head"]["kernel"].shape == ()
