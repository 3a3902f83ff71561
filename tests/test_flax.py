"""Layca in Flax training loops: ``nnx.Optimizer`` (NNX) and ``TrainState`` (Linen)."""

from flax import linen as nn
from flax import nnx
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from tests import tolerances

LAYERS = ("stem", "mid", "head")  # forward order; sorted order is head, mid, stem
SMALLEST_LAYER = 48  # head: 16 x 3, for the bounds of tests/tolerances.py
NORM_RTOL = tolerances.norm_rtol(0.3, size=SMALLEST_LAYER)  # every step lands on the sphere


def ANGLE_RTOL(rate):  # noqa: N802  (a tolerance, named like the module constants)
  """A Layca step's angle measured between float32 params (tests/tolerances.py)."""
  return tolerances.applied_angle_rtol(rate, SMALLEST_LAYER)


def _dataset():
  """A fixed, separable 3-class problem: labels of a random linear teacher."""
  x = jax.random.normal(jax.random.key(0), (128, 4))
  teacher = jax.random.normal(jax.random.key(1), (4, 3))
  return x, jnp.argmax(x @ teacher, axis=-1)


X, LABELS = _dataset()


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ------------------------------------------------------------------------------------
# NNX


class Net(nnx.Module):
  """Linear -> BatchNorm (no scale, no offset, as in the paper) -> relu -> Linear -> Linear.

  The attribute names sort in the reverse of the forward order.
  """

  def __init__(self, rngs: nnx.Rngs):
    self.stem = nnx.Linear(4, 16, rngs=rngs)
    self.norm = nnx.BatchNorm(16, use_scale=False, use_bias=False, rngs=rngs)
    self.mid = nnx.Linear(16, 16, rngs=rngs)
    self.head = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.norm(self.stem(x)))
    x = nnx.relu(self.mid(x))
    return self.head(x)


def _nnx_kernels(model: Net) -> dict[str, jax.Array]:
  return {name: jnp.array(getattr(model, name).kernel[...]) for name in LAYERS}


def _angles(new, old) -> dict[str, float]:
  return {k: float(v) for k, v in lo.rotation_angle(new, old).items()}


@nnx.jit
def _nnx_train_step(model, optimizer, x, labels):
  def loss_fn(model):
    return _cross_entropy(model(x), labels)

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


def test_nnx_optimizer_trains_and_keeps_kernel_norms():
  lr = 0.05
  model = Net(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, lo.layca(lr), wrt=nnx.Param)
  kernels0 = _nnx_kernels(model)

  # The model and the optimizer are updated in place; cached_partial skips re-walking
  # their graphs at every call.
  train_step = nnx.cached_partial(_nnx_train_step, model, optimizer)
  first_loss = float(train_step(X, LABELS))
  for name, angle in _angles(_nnx_kernels(model), kernels0).items():
    np.testing.assert_allclose(angle, np.arctan(lr), rtol=ANGLE_RTOL(lr), err_msg=name)

  losses = [first_loss] + [float(train_step(X, LABELS)) for _ in range(48)]
  before = _nnx_kernels(model)
  losses.append(float(train_step(X, LABELS)))
  for name, angle in _angles(_nnx_kernels(model), before).items():
    np.testing.assert_allclose(angle, np.arctan(lr), rtol=ANGLE_RTOL(lr), err_msg=name)

  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.3 * first_loss  # the loss before the 50th update
  for name, kernel in _nnx_kernels(model).items():
    np.testing.assert_allclose(
        jnp.linalg.norm(kernel), jnp.linalg.norm(kernels0[name]), rtol=NORM_RTOL,
        err_msg=name,
    )


@pytest.mark.parametrize("alpha", [0.5, -0.5])
def test_nnx_forward_order_sets_the_layer_rates(alpha):
  lr = 0.3
  model = Net(nnx.Rngs(1))
  order = lo.forward_order(model, nnx.state(model, nnx.Param), X)
  assert [p for p in order if p.endswith("kernel")] == [f"{n}/kernel" for n in LAYERS]

  optimizer = nnx.Optimizer(
      model, lo.layca(lr, alpha=alpha, layer_order=order), wrt=nnx.Param
  )
  kernels0 = _nnx_kernels(model)
  _nnx_train_step(model, optimizer, X, LABELS)
  angles = _angles(_nnx_kernels(model), kernels0)

  multipliers = lo.alpha_multipliers(len(LAYERS), alpha)
  for name, m in zip(LAYERS, multipliers):
    np.testing.assert_allclose(angles[name], np.arctan(m * lr), rtol=ANGLE_RTOL(m * lr),
                               err_msg=name)
  if alpha > 0:
    assert angles["stem"] < angles["mid"] < angles["head"]
  else:
    assert angles["stem"] > angles["mid"] > angles["head"]


def test_nnx_default_order_is_the_sorted_paths():
  """Without layer_order the NNX attribute names decide: 'head' counts as layer 0."""
  lr, alpha = 0.3, 0.5
  model = Net(nnx.Rngs(1))
  optimizer = nnx.Optimizer(model, lo.layca(lr, alpha=alpha), wrt=nnx.Param)
  kernels0 = _nnx_kernels(model)
  _nnx_train_step(model, optimizer, X, LABELS)
  angles = _angles(_nnx_kernels(model), kernels0)

  multipliers = lo.alpha_multipliers(len(LAYERS), alpha)
  for name, m in zip(sorted(LAYERS), multipliers):
    np.testing.assert_allclose(angles[name], np.arctan(m * lr), rtol=ANGLE_RTOL(m * lr),
                               err_msg=name)


# ------------------------------------------------------------------------------------
# Linen


class MLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(16)(x))
    return nn.Dense(3)(x)


def _linen_kernels(params):
  return {name: layer["kernel"] for name, layer in params.items()}


def test_linen_train_state_trains_and_keeps_kernel_norms():
  lr = 0.05
  model = MLP()
  params = model.init(jax.random.key(2), X)["params"]
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=lo.layca(lr, base_optimizer=optax.trace(0.9))
  )

  def loss_fn(params):
    return _cross_entropy(state.apply_fn({"params": params}, X), LABELS)

  @jax.jit
  def train_step(state):
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  losses = []
  for _ in range(49):
    state, loss = train_step(state)
    losses.append(float(loss))
  previous = state.params
  state, loss = train_step(state)
  losses.append(float(loss))
  for name, angle in _angles(
      _linen_kernels(state.params), _linen_kernels(previous)
  ).items():
    np.testing.assert_allclose(angle, np.arctan(lr), rtol=ANGLE_RTOL(lr), err_msg=name)

  final_loss = float(loss_fn(state.params))
  assert int(state.step) == 50
  assert np.all(np.isfinite(losses))
  assert final_loss < 0.3 * losses[0]
  kernels0 = _linen_kernels(params)
  for name, kernel in _linen_kernels(state.params).items():
    np.testing.assert_allclose(
        jnp.linalg.norm(kernel), jnp.linalg.norm(kernels0[name]), rtol=NORM_RTOL,
        err_msg=name,
    )
  # Biases are not layers: they moved freely.
  assert not np.array_equal(state.params["Dense_1"]["bias"], params["Dense_1"]["bias"])


@pytest.mark.slow
def test_nnx_accepts_a_plain_dict_mask():
  # A dict prefix mask for an NNX State: only 'mid' is a layer; 'stem' and 'head' kernels
  # take plain -lr * gradient steps.
  model = Net(nnx.Rngs(0))
  mask = {"stem": False, "mid": {"kernel": True, "bias": False}, "head": False}
  optimizer = nnx.Optimizer(model, lo.layca(0.05, mask=mask), wrt=nnx.Param)
  before = _nnx_kernels(model)
  grads = nnx.grad(lambda m: _cross_entropy(m(X), LABELS))(model)
  optimizer.update(model, grads)
  after = _nnx_kernels(model)
  np.testing.assert_allclose(_angles(after, before)["mid"], np.arctan(0.05),
                             rtol=ANGLE_RTOL(0.05))
  tolerances.assert_close_in_norm(  # w - 0.05 g: a product and a sum in float32
      after["stem"], np.asarray(before["stem"], np.float64)
      - 0.05 * np.asarray(grads["stem"]["kernel"][...], np.float64),
      tolerances.ELEMENTWISE_RTOL,
  )
