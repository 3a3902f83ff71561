"""Every prefix argument (mask, rotation_axes, per-leaf rates) on Flax NNX and Linen params.

A prefix is a pytree whose structure is a prefix of the params' (one value for a whole
subtree). Users write them as plain dicts, also for an ``nnx.State`` of params, and the
helpers (``stacked_layer_axes``) return a ``State`` when given one: every combination must
work the same way in ``layca``, the transforms, ``nnx.Optimizer`` and the measures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from tests import tolerances

nnx = pytest.importorskip("flax.nnx")
linen = pytest.importorskip("flax.linen")

BLOCKS = 3


class Block(nnx.Module):
  def __init__(self, rngs):
    self.linear = nnx.Linear(4, 4, rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.linear(x))


class Stacked(nnx.Module):
  """Blocks created with ``nnx.vmap``: each kernel is one ``(blocks, 4, 4)`` leaf."""

  def __init__(self, rngs):
    @nnx.split_rngs(splits=BLOCKS)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
      return Block(rngs)

    self.blocks = make(rngs)
    self.head = nnx.Linear(4, 2, rngs=rngs)

  def __call__(self, x):
    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
    def run(block, x):
      return block(x)

    return self.head(run(self.blocks, x))


def per_block_axes(p):
  return {"blocks": lo.stacked_layer_axes(p["blocks"]), "head": None}


# The default mask (ndim >= 2) would take the stacked (blocks, 4) biases for layers.
KERNELS = {"blocks": {"linear": {"bias": False, "kernel": True}}, "head": {"bias": False,
                                                                        "kernel": True}}


@pytest.mark.slow
def test_stacked_layer_axes_in_a_dict_prefix_of_an_nnx_state():
  model = Stacked(nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  tx = lo.layca(0.1, mask=KERNELS, rotation_axes=per_block_axes)
  state = tx.init(params)
  assert state[1].initial_norms["blocks"]["linear"]["kernel"].shape == (BLOCKS,)
  assert state[1].initial_norms["head"]["kernel"].shape == ()
  distances = lo.cosine_distance(params, params, rotation_axes=per_block_axes)
  assert distances["blocks"]["linear"]["kernel"].shape == (BLOCKS,)


def test_nnx_optimizer_with_per_block_layca_rotates_each_block_by_the_rate():
  model = Stacked(nnx.Rngs(0))
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(
      model, lo.layca(0.1, mask=KERNELS, rotation_axes=per_block_axes), wrt=nnx.Param
  )
  x = jnp.ones((5, 4))

  @nnx.jit
  def train_step(model, optimizer):
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    optimizer.update(model, grads)

  train_step(model, optimizer)
  angles = lo.rotation_angle(
      nnx.state(model, nnx.Param), before, rotation_axes=per_block_axes
  )
  np.testing.assert_allclose(
      angles["blocks"]["linear"]["kernel"], [np.arctan(0.1)] * BLOCKS,
      rtol=tolerances.applied_angle_rtol(0.1, 16),
  )


@pytest.mark.parametrize("framework", ["nnx", "linen"])
def test_mask_axes_and_rates_prefixes_agree_on_nnx_and_linen_params(framework):
  if framework == "nnx":  # a State of arrays, as nnx.Optimizer's update sees it
    params = jax.tree.map(
        lambda v: v.get_value(), nnx.state(Stacked(nnx.Rngs(0)), nnx.Param),
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    assert isinstance(params, nnx.State)
  else:
    init = Stacked(nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(init, nnx.Param))  # the same tree as plain dicts
  mask = {"blocks": {"linear": {"bias": False, "kernel": True}}, "head": {"kernel": True,
                                                                          "bias": False}}
  rates = lo.PerLeafRates({"blocks": 0.1, "head": 0.2})
  tx = lo.layca(rates, mask=mask, rotation_axes=per_block_axes)
  state = tx.init(params)
  grads = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=jnp.float32)).reshape(
      x.shape), params)
  updates, _ = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  angles = lo.rotation_angle(new, params, rotation_axes=per_block_axes)
  np.testing.assert_allclose(
      angles["blocks"]["linear"]["kernel"], [np.arctan(0.1)] * BLOCKS,
      rtol=tolerances.applied_angle_rtol(0.1, 16),
  )
  np.testing.assert_allclose(
      updates["blocks"]["linear"]["bias"], -0.1 * np.asarray(grads["blocks"]["linear"]["bias"]),
      rtol=tolerances.ELEMENTWISE_RTOL,
  )
  np.testing.assert_allclose(angles["head"]["kernel"], np.arctan(0.2),
                             rtol=tolerances.applied_angle_rtol(0.2, 16))
  # The head's bias is not a layer: it takes -rate * step.
  np.testing.assert_allclose(
      updates["head"]["bias"], -0.2 * np.asarray(grads["head"]["bias"]),
      rtol=tolerances.ELEMENTWISE_RTOL,
  )


def test_linen_scan_params_with_a_dict_prefix():
  class Body(linen.Module):
    @linen.compact
    def __call__(self, x, _):
      return jax.nn.relu(linen.Dense(4)(x)), None

  class Net(linen.Module):
    @linen.compact
    def __call__(self, x):
      scan = linen.scan(
          Body, variable_axes={"params": 0}, split_rngs={"params": True}, length=BLOCKS
      )
      x, _ = scan()(x, None)
      return linen.Dense(2)(x)

  params = Net().init(jax.random.key(0), jnp.ones((1, 4)))["params"]
  axes = {"ScanBody_0": lo.stacked_layer_axes(params["ScanBody_0"]), "Dense_0": None}
  kernel_only = {"kernel": True, "bias": False}
  kernels = {"ScanBody_0": {"Dense_0": kernel_only}, "Dense_0": kernel_only}
  tx = lo.layca(0.1, rotation_axes=axes, mask=kernels)
  norms = tx.init(params)[1].initial_norms
  assert norms["ScanBody_0"]["Dense_0"]["kernel"].shape == (BLOCKS,)
  monitor = lo.measure_rotation(rotation_axes=axes, mask=kernels)
  assert lo.rotation_rates(monitor.init(params))["ScanBody_0"]["Dense_0"]["kernel"].shape == (
      BLOCKS,
  )
