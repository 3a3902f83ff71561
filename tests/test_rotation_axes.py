"""rotation_axes: stacked (scanned) layers and per-neuron rotation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from tests import reference, tolerances


def _rng_tree(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def _stack(tree):
  """The separate tree's s0, s1, s2 stacked into one (3, 8, 8) leaf."""
  return {"a": tree["a"], "stack": np.stack([tree[f"s{i}"] for i in range(3)]),
          "z": tree["z"]}


SEPARATE = {"a": (8, 8), "s0": (8, 8), "s1": (8, 8), "s2": (8, 8), "z": (8, 8)}
SEPARATE_ORDER = ["a", "s0", "s1", "s2", "z"]
STACKED_ORDER = ["a", "stack", "z"]
STACKED_AXES = {"a": None, "stack": (1, 2), "z": None}


def _run(tx, params, grads_seq):
  state = tx.init(params)
  update = jax.jit(tx.update)
  for grads in grads_seq:
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize("make", ["layca", pytest.param("chain", marks=pytest.mark.slow)])
def test_stacked_leaf_equals_separate_leaves(make):
  separate = _rng_tree(SEPARATE)
  grads = [_rng_tree(SEPARATE, seed=1 + t) for t in range(4)]
  kwargs = dict(alpha=0.6)

  def build(order, axes):
    if make == "layca":
      return lo.layca(0.2, base_optimizer=optax.trace(0.9), layer_order=order,
                      rotation_axes=axes, **kwargs)
    return optax.chain(
        optax.trace(0.9),
        lo.project_orthogonal(rotation_axes=axes),
        lo.normalize_rotation(rotation_axes=axes),
        lo.scale_by_layer_rates(0.2, layer_order=order, rotation_axes=axes, **kwargs),
        lo.project_to_sphere(rotation_axes=axes),
    )

  got_sep, state_sep = _run(build(SEPARATE_ORDER, None), separate, grads)
  got_stk, state_stk = _run(build(STACKED_ORDER, STACKED_AXES), _stack(separate),
                            [_stack(g) for g in grads])
  expected = _stack(got_sep)
  for name in expected:
    tolerances.assert_close_in_norm(  # two programs, each within its bound
        got_stk[name], expected[name], 2 * tolerances.trajectory_rtol(0.2, 3, 64), name
    )
  norms_sep = (state_sep[1] if make == "layca" else state_sep[-1]).initial_norms
  norms_stk = (state_stk[1] if make == "layca" else state_stk[-1]).initial_norms
  assert norms_stk["stack"].shape == (3,)
  np.testing.assert_allclose(norms_stk["stack"],
                             [norms_sep[f"s{i}"] for i in range(3)],
                             rtol=2 * tolerances.sum_error(64) * tolerances.EPS)
  d_sep = lo.cosine_distance(got_sep, separate)
  d_stk = lo.cosine_distance(got_stk, _stack(separate), rotation_axes=STACKED_AXES)
  assert d_stk["stack"].shape == (3,)
  np.testing.assert_allclose(d_stk["stack"], [d_sep[f"s{i}"] for i in range(3)],
                             rtol=2 * tolerances.distance_rtol(64))


def test_stacked_slices_get_their_own_alpha_multipliers():
  separate = _rng_tree(SEPARATE)
  params = _stack(separate)
  grads = _stack(_rng_tree(SEPARATE, seed=7))
  new, _ = _run(lo.layca(0.1, alpha=-0.5, layer_order=STACKED_ORDER,
                         rotation_axes=STACKED_AXES), params, [grads])
  angles = lo.rotation_angle(new, params, rotation_axes=STACKED_AXES)
  m = lo.alpha_multipliers(5, -0.5)
  rtol = tolerances.applied_angle_rtol(0.1 * min(m), 64)
  np.testing.assert_allclose(angles["a"], np.arctan(0.1 * m[0]), rtol=rtol)
  np.testing.assert_allclose(angles["stack"], np.arctan(0.1 * m[1:4]), rtol=rtol)
  np.testing.assert_allclose(angles["z"], np.arctan(0.1 * m[4]), rtol=rtol)


@pytest.mark.parametrize("shape", [(16, 5), (3, 3, 4, 6)])
def test_per_neuron_every_output_unit_rotates_by_arctan_rate(shape):
  params = _rng_tree({"k": shape})
  grads = _rng_tree({"k": shape}, seed=3)
  tx = lo.layca(0.3, alpha=0.5, rotation_axes=lo.output_unit_axes)
  new, state = _run(tx, params, [grads])
  w0 = params["k"].reshape(-1, shape[-1])
  w1 = np.asarray(new["k"]).reshape(-1, shape[-1])
  assert state[1].initial_norms["k"].shape == (shape[-1],)
  for unit in range(shape[-1]):
    size = w0.shape[0]
    np.testing.assert_allclose(reference.angle(w1[:, unit], w0[:, unit]), np.arctan(0.3),
                               rtol=tolerances.applied_angle_rtol(0.3, size))
    np.testing.assert_allclose(np.linalg.norm(w1[:, unit]), np.linalg.norm(w0[:, unit]),
                               rtol=tolerances.norm_rtol(0.3, size=size))
  # Per-neuron is not per-layer: the columns' norms were different and stay so.
  assert np.ptp(np.linalg.norm(w1, axis=0)) > 0.1


def test_zero_column_is_stepped_plainly_and_others_rotate():
  params = _rng_tree({"k": (6, 4)})
  params["k"][:, 2] = 0.0
  grads = _rng_tree({"k": (6, 4)}, seed=2)
  tx = lo.layca(0.2, rotation_axes=lo.output_unit_axes)
  with pytest.warns(UserWarning, match="zero norm"):
    state = tx.init(params)
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates["k"][:, 2], -0.2 * grads["k"][:, 2],
                             rtol=tolerances.ELEMENTWISE_RTOL)
  assert np.all(np.isfinite(updates["k"]))


def test_bad_rotation_axes_are_clear_errors():
  params = _rng_tree({"k": (4, 4)})
  with pytest.raises(ValueError, match=r"rotation axes \(2,\) do not fit leaf 'k'"):
    lo.layca(0.1, rotation_axes={"k": (2,)}).init(params)
  with pytest.raises(ValueError, match="`rotation_axes` must be a pytree"):
    lo.layca(0.1, rotation_axes={"other": (0,)}).init(params)


class _Block(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return nn.tanh(nn.Dense(8, use_bias=False)(x)), None


class _ScannedNet(nn.Module):
  """stem -> 3 scanned blocks (one (3, 8, 8) kernel) -> head; names sort head first."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(8, use_bias=False, name="stem")(x)
    blocks = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True},
                     length=3)
    x, _ = blocks(name="blocks")(x, None)
    return nn.Dense(3, use_bias=False, name="head")(x)


@pytest.mark.slow
def test_scanned_flax_model_trains_with_per_block_alpha():
  model = _ScannedNet()
  x = jax.random.normal(jax.random.key(0), (64, 4))
  labels = jnp.argmax(x @ jax.random.normal(jax.random.key(1), (4, 3)), axis=-1)
  params = model.init(jax.random.key(2), x)["params"]
  assert params["blocks"]["Dense_0"]["kernel"].shape == (3, 8, 8)
  apply = lambda p, x: model.apply({"params": p}, x)
  order = lo.forward_order(apply, params, x)
  assert [p for p in order if p.endswith("kernel")] == [
      "stem/kernel", "blocks/Dense_0/kernel", "head/kernel"]
  axes = lambda p: {"stem": None, "head": None,
                    "blocks": lo.stacked_layer_axes(p["blocks"])}
  tx = lo.layca(0.05, alpha=0.5, layer_order=order, rotation_axes=axes)
  loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      apply(p, x), labels).mean()

  @jax.jit
  def step(p, state):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  state = tx.init(params)
  recorder = lo.LayerRotationCurves(params, layer_order=order, rotation_axes=axes)
  recorder.record(0, params)
  first, state, loss0 = step(params, state)
  angles = lo.rotation_angle(first, params, rotation_axes=axes)
  m = lo.alpha_multipliers(5, 0.5)  # stem, block 0, 1, 2, head
  rtol = tolerances.applied_angle_rtol(0.05 * min(m), 16)
  np.testing.assert_allclose(angles["stem"]["kernel"], np.arctan(0.05 * m[0]), rtol=rtol)
  np.testing.assert_allclose(angles["blocks"]["Dense_0"]["kernel"],
                             np.arctan(0.05 * m[1:4]), rtol=rtol)
  np.testing.assert_allclose(angles["head"]["kernel"], np.arctan(0.05 * m[4]), rtol=rtol)
  p = first
  for t in range(60):
    p, state, loss = step(p, state)
    if t % 20 == 19:
      recorder.record(t + 2, p)
  assert float(loss) < 0.7 * float(loss0)
  curves = lo.cosine_distance(p, params, rotation_axes=axes)
  per_block = curves["blocks"]["Dense_0"]["kernel"]
  assert per_block.shape == (3,) and np.all(per_block > 0)  # one value per block
  # The layer rotation curves: one curve per block, in depth order between stem and head.
  assert recorder.paths == [
      "stem/kernel", "blocks/Dense_0/kernel[0]", "blocks/Dense_0/kernel[1]",
      "blocks/Dense_0/kernel[2]", "head/kernel"]
  assert all(values[0] == 0.0 for values in recorder.values.values())
  np.testing.assert_allclose(
      [recorder.values[f"blocks/Dense_0/kernel[{i}]"][-1] for i in range(3)], per_block,
      rtol=2 * tolerances.distance_rtol(16),  # two programs, each within its bound
  )
