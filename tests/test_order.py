"""Tests of the depth orders: `natural_order` (paths) and `forward_order` (tracing)."""

from flax import linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layca_optax as lo
from layca_optax import _order
from layca_optax import _tree


def _dense(n_in, n_out):
  return {"kernel": jnp.ones((n_in, n_out)), "bias": jnp.zeros((n_out,))}


# ---------------------------------------------------------------------------------
# natural_order


def test_natural_order_compares_auto_names_as_numbers():
  params = {f"Dense_{i}": _dense(2, 2) for i in (10, 2, 1, 0)}
  assert _order.natural_order(params) == [
      "Dense_0/bias", "Dense_0/kernel",
      "Dense_1/bias", "Dense_1/kernel",
      "Dense_2/bias", "Dense_2/kernel",
      "Dense_10/bias", "Dense_10/kernel",
  ]


def test_natural_order_of_list_and_string_index_paths():
  as_list = {"layers": [{"kernel": jnp.ones(1)} for _ in range(11)]}
  as_dict = {"layers": {str(i): {"kernel": jnp.ones(1)} for i in range(11)}}
  expected = [f"layers/{i}/kernel" for i in range(11)]
  assert _order.natural_order(as_list) == expected
  # JAX itself sorts the string keys as '0', '1', '10', '2', ...
  assert _order.natural_order(as_dict) == expected


def test_natural_order_never_compares_text_with_numbers():
  # Digits and text at the same position: a naive key would compare int with str.
  params = {k: jnp.ones(1) for k in ("x1", "xa", "1x", "x", "x01", "x10", "x2y3")}
  assert _order.natural_order(params) == [
      "1x", "x", "x01", "x1", "x2y3", "x10", "xa"
  ]


# ---------------------------------------------------------------------------------
# forward_order on plain functions


def _three_layers(params, x):
  h = jnp.tanh(x @ params["z_first"])
  h = h @ params["m_middle"]
  return h @ params["a_last"]


_THREE_LAYERS = {
    "a_last": jnp.ones((4, 1)),
    "m_middle": jnp.ones((3, 4)),
    "z_first": jnp.ones((2, 3)),
}


def test_forward_order_follows_use_not_key_order():
  order = _order.forward_order(_three_layers, _THREE_LAYERS, jnp.ones((5, 2)))
  assert order == ["z_first", "m_middle", "a_last"]


def test_forward_order_enters_jit():
  # One `jit` equation reads all three leaves: only its body tells them apart.
  order = _order.forward_order(jax.jit(_three_layers), _THREE_LAYERS, jnp.ones((5, 2)))
  assert order == ["z_first", "m_middle", "a_last"]


def test_forward_order_enters_checkpoint_scan_cond_and_while():
  def fn(params, x):
    h = jax.checkpoint(lambda w, h: jnp.sin(h @ w))(params["e_remat"], x)
    h, _ = jax.lax.scan(lambda c, w: (c @ w, None), h, params["d_scan"])
    h = jax.lax.cond(
        h.sum() > 0, lambda h, w: h @ w, lambda h, w: -h, h, params["c_cond"]
    )
    h, _ = jax.lax.while_loop(
        lambda c: c[1] < params["b_while_cond"].sum(),
        lambda c: (c[0] @ params["a_while_body"], c[1] + 1.0),
        (h, 0.0),
    )
    return h

  eye = jnp.eye(3)
  params = {
      "a_while_body": eye,
      "b_while_cond": eye,
      "c_cond": eye,
      "d_scan": jnp.stack([eye, eye]),
      "e_remat": eye,
  }
  order = _order.forward_order(fn, params, jnp.ones((2, 3)))
  assert order == ["e_remat", "d_scan", "c_cond", "b_while_cond", "a_while_body"]


def test_forward_order_follows_params_passed_through_a_jit():
  def fn(params, x):
    same = jax.jit(lambda p: p)(params)  # New variables, same leaves.
    return x @ same["z"] @ same["a"]

  params = {"a": jnp.ones((3, 1)), "z": jnp.ones((2, 3))}
  assert _order.forward_order(fn, params, jnp.ones((1, 2))) == ["z", "a"]


def test_forward_order_puts_unused_params_last_in_natural_order():
  def fn(params, x):
    return x @ params["z_used"]

  params = {
      "a_unused_10": jnp.ones(1),
      "a_unused_2": jnp.ones(1),
      "z_used": jnp.ones((2, 2)),
  }
  order = _order.forward_order(fn, params, jnp.ones((1, 2)))
  assert order == ["z_used", "a_unused_2", "a_unused_10"]


def test_forward_order_breaks_ties_by_natural_order():
  def fn(params, x):
    return x * (params["w10"] + params["w2"]) + params["a"]  # w10, w2 read together.

  params = {"a": jnp.ones(()), "w10": jnp.ones(()), "w2": jnp.ones(())}
  assert _order.forward_order(fn, params, jnp.ones(())) == ["w2", "w10", "a"]


def test_forward_order_passes_keyword_arguments():
  def fn(params, x, *, reverse):
    keys = ("a", "z") if reverse else ("z", "a")
    return x * params[keys[0]] * 2 + params[keys[1]]

  params = {"a": jnp.ones(()), "z": jnp.ones(())}
  assert _order.forward_order(fn, params, 1.0, reverse=False) == ["z", "a"]
  assert _order.forward_order(fn, params, 1.0, reverse=True) == ["a", "z"]


def test_forward_order_rejects_empty_params():
  with pytest.raises(ValueError, match="no leaves"):
    _order.forward_order(lambda p, x: x, {}, jnp.ones(1))


def test_forward_order_rejects_swapped_arguments():
  def fn(params, x):
    return x @ params["w"]

  with pytest.raises(TypeError, match=r"forward_order\(fn, params"):
    _order.forward_order({"w": jnp.ones((2, 2))}, fn, jnp.ones((1, 2)))


# ---------------------------------------------------------------------------------
# Flax models


class _LinenBody(nn.Module):
  depth: int = 11

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):  # Auto-named Dense_0 ... Dense_10.
      x = nn.relu(nn.Dense(4)(x))
    return x


class _LinenNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(4, name="stem")(x))
    x = _LinenBody(name="body")(x)
    return nn.Dense(2, name="head")(x)


@pytest.mark.parametrize("jit", [False, True])
def test_forward_order_of_a_linen_model(jit):
  model, x = _LinenNet(), jnp.ones((3, 2))
  # Shapes are enough: tracing runs nothing.
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  apply = jax.jit(model.apply) if jit else model.apply
  order = _order.forward_order(lambda p, x: apply({"params": p}, x), params, x)
  kernels = [p for p in order if p.endswith("kernel")]
  assert kernels == (
      ["stem/kernel"]
      + [f"body/Dense_{i}/kernel" for i in range(11)]
      + ["head/kernel"]
  )
  assert sorted(order) == sorted(_tree.leaf_paths(params))
  # A layer's bias comes right after its kernel, before the next layer.
  for layer in ["stem", "body/Dense_2", "body/Dense_10", "head"]:
    assert order.index(f"{layer}/bias") == order.index(f"{layer}/kernel") + 1


class _NnxNet(nnx.Module):

  def __init__(self, rngs):
    self.stem = nnx.Linear(2, 4, rngs=rngs)
    self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(11)])
    self.head = nnx.Linear(4, 2, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.stem(x))
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return self.head(x)


def _layer_of(path):
  return path.rsplit("/", 1)[0]


class _NnxJitted(nnx.Module):
  """Calls the wrapped model through `nnx.jit`, which hands its whole state to a `jit`."""

  def __init__(self, net):
    self.net = net

  def __call__(self, x):
    return nnx.jit(lambda net, x: net(x))(self.net, x)


@pytest.mark.parametrize("jit", [False, True])
def test_forward_order_of_an_nnx_model(jit):
  # Shapes are enough (tracing runs nothing), and skip 13 eager initialisations.
  model = nnx.eval_shape(lambda: _NnxNet(nnx.Rngs(0)))
  if jit:
    model = _NnxJitted(model)
  params = nnx.state(model, nnx.Param)
  order = _order.forward_order(model, params, jnp.ones((3, 2)))
  if jit:
    assert all(p.startswith("net/") for p in order)
    order = [p.removeprefix("net/") for p in order]
  assert len(order) == 2 * 13
  assert "stem/kernel" in order  # Paths of the State, not '.../value'.
  layers = list(dict.fromkeys(_layer_of(p) for p in order))
  assert layers == ["stem"] + [f"layers/{i}" for i in range(11)] + ["head"]
  # Kernel and bias of one Linear are adjacent.
  for i in range(0, len(order), 2):
    assert _layer_of(order[i]) == _layer_of(order[i + 1])


class _NnxWithState(nnx.Module):

  def __init__(self, rngs):
    self.stem = nnx.Linear(2, 3, rngs=rngs)
    self.norm = nnx.BatchNorm(3, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)
    self.head = nnx.Linear(3, 1, rngs=rngs)
    self.unused = nnx.Linear(1, 1, rngs=rngs)

  def __call__(self, x):
    return self.head(self.drop(self.norm(self.stem(x))))


def _raw_values(tree):
  """Every leaf as a NumPy array (typed PRNG keys by their key data)."""
  def raw(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(x)  # Raises for a tracer leaked into the model.

  return [raw(x) for x in jax.tree.leaves(tree)]


def test_forward_order_leaves_the_nnx_model_untouched():
  model = _NnxWithState(nnx.Rngs(0))
  before = _raw_values(nnx.state(model))
  x = jnp.ones((4, 2))
  order = _order.forward_order(model, nnx.state(model, nnx.Param), x)
  assert [_layer_of(p) for p in order[::2]] == ["stem", "norm", "head", "unused"]
  after = _raw_values(nnx.state(model))
  # BatchNorm statistics and RNG counts were only updated in the traced copy.
  assert len(before) == len(after)
  assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_forward_order_runs_an_nnx_model_with_dropout_and_batchnorm_in_evaluation_mode():
  # The CNN of Flax's NNX MNIST tutorial: Conv -> BatchNorm -> Dropout -> Linear, whose
  # training-mode Dropout needs rngs and cannot be traced here.
  nnx = pytest.importorskip("flax.nnx")

  class CNN(nnx.Module):
    def __init__(self, *, rngs):
      self.conv1 = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
      self.batch_norm1 = nnx.BatchNorm(4, rngs=rngs)
      self.dropout1 = nnx.Dropout(rate=0.025, rngs=rngs)
      self.linear1 = nnx.Linear(4 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x, rngs=None):
      x = nnx.relu(self.batch_norm1(self.conv1(x)))
      x = self.dropout1(x, rngs=rngs)
      return self.linear1(x.reshape(x.shape[0], -1))

  model = CNN(rngs=nnx.Rngs(0))
  x = jnp.ones((2, 8, 8, 1))
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
  order = lo.forward_order(model, nnx.state(model, nnx.Param), x)
  assert order == [
      "conv1/kernel", "conv1/bias", "batch_norm1/scale", "batch_norm1/bias",
      "linear1/kernel", "linear1/bias",
  ]
  assert model.dropout1.deterministic is False  # the model itself is left in train mode
  for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.BatchStat)), jax.tree.leaves(before)):
    np.testing.assert_array_equal(a, b)


def test_forward_order_error_names_itself_and_shows_the_fix():
  nnx = pytest.importorskip("flax.nnx")

  class NeedsFlag(nnx.Module):
    def __init__(self, rngs):
      self.linear = nnx.Linear(2, 2, rngs=rngs)

    def __call__(self, x, *, train):
      return self.linear(x)

  model = NeedsFlag(nnx.Rngs(0))
  with pytest.raises(TypeError, match="(?s)forward_order: tracing NeedsFlag.*train=False"):
    lo.forward_order(model, nnx.state(model, nnx.Param), jnp.ones((1, 2)))
  assert lo.forward_order(model, nnx.state(model, nnx.Param), jnp.ones((1, 2)), train=False)


def test_forward_order_on_a_linen_model_with_dropout_and_batchnorm():
  nn = pytest.importorskip("flax.linen")

  class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
      x = nn.Conv(4, (3, 3), name="conv")(x)
      x = nn.BatchNorm(use_running_average=not train, name="norm")(x)
      x = nn.Dropout(0.1, deterministic=not train)(nn.relu(x))
      return nn.Dense(10, name="head")(x.reshape(x.shape[0], -1))

  model, x = CNN(), jnp.ones((2, 8, 8, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  order = lo.forward_order(
      lambda p, x: model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                               train=False),
      variables["params"], x,
  )
  assert order == [
      "conv/kernel", "conv/bias", "norm/scale", "norm/bias", "head/kernel", "head/bias"
  ]
