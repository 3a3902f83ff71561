"""Bad input: a clear error that says what to do, or a documented safe behaviour.

Complements the bad-input tests of ``test_layca.py`` (params None, alpha range, bad
rates, unknown or missing ``layer_order`` paths, mismatched structures, integer layers,
wrong mask structure, empty tree).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from tests import tolerances

RATE = 0.1


def kernel(seed=0, shape=(4, 3)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def chain(rate=RATE, **kwargs):
  return optax.chain(
      lo.project_orthogonal(**kwargs),
      lo.normalize_rotation(**kwargs),
      lo.scale_by_layer_rates(rate, **kwargs),
      lo.project_to_sphere(**kwargs),
  )


TRANSFORMS = {"layca": lo.layca, "chain": chain}


def step(tx, grads, params):
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


# -- non-float and degenerate leaves ------------------------------------------------------


@pytest.mark.parametrize("name", TRANSFORMS)
def test_complex_non_layer_leaf_gets_a_complex_step(name):
  # Complex leaves are never rotated, but a complex bias must keep its imaginary part.
  params = {"w": kernel(), "c": np.array([1 + 2j, 3 - 1j], np.complex64)}
  grads = {"w": kernel(1), "c": np.array([0.5 - 1j, 2j], np.complex64)}
  updates = step(TRANSFORMS[name](RATE), grads, params)
  assert updates["c"].dtype == np.complex64
  np.testing.assert_allclose(updates["c"], -RATE * grads["c"], rtol=tolerances.ELEMENTWISE_RTOL)


def test_complex_layer_is_a_clear_error():
  params = {"w": kernel().astype(np.complex64)}
  with pytest.raises(TypeError, match=r"'w' has dtype complex64.*mask="):
    lo.layca(RATE).init(params)


def test_rotation_measures_treat_complex_leaves_as_real_vectors():
  a = np.array([1 + 1j, 0], np.complex64)
  b = np.array([1 - 1j, 0], np.complex64)  # (1, 1) and (1, -1) in R^4: 90 degrees apart
  rel = tolerances.angle_rtol(4)
  assert float(lo.cosine_distance({"c": a}, {"c": b})["c"]) == pytest.approx(1.0, rel=rel)
  assert float(lo.rotation_angle({"c": a}, {"c": b})["c"]) == pytest.approx(np.pi / 2, rel=rel)


def test_integer_and_boolean_non_layer_leaves_keep_their_dtype():
  # They are not layers (ndim < 2): -rho * s in their own dtype, rounded toward zero, as
  # optax.apply_updates would do. Freeze them with optax.partition if they are buffers.
  params = {"w": kernel(), "steps": np.array(7, np.int32), "flag": np.array([True])}
  grads = {"w": kernel(1), "steps": np.array(30, np.int32), "flag": np.array([True])}
  updates = step(lo.layca(RATE), grads, params)
  assert updates["steps"].dtype == np.int32 and int(updates["steps"]) == -3
  assert updates["flag"].dtype == np.bool_


def test_float0_gradient_of_an_integer_leaf_is_a_clear_error():
  params = {"w": kernel(), "steps": np.array(7, np.int32)}
  grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2), allow_int=True)(params)
  tx = lo.layca(RATE)
  with pytest.raises(TypeError, match=r"float0 gradient.*optax.partition"):
    tx.update(grads, tx.init(params), params)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_scalar_leaves_are_not_layers_and_take_plain_steps(name):
  params = {"w": kernel(), "scale": np.float32(1.5), "temperature": 2.0}
  grads = {"w": kernel(1), "scale": np.float32(4.0), "temperature": 1.0}
  tx = TRANSFORMS[name](RATE)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["scale"], -RATE * 4.0, rtol=tolerances.ELEMENTWISE_RTOL)
  np.testing.assert_allclose(updates["temperature"], -RATE * 1.0,
                             rtol=tolerances.ELEMENTWISE_RTOL)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_single_element_layer_warns_and_stays_unchanged(shape):
  # A one-element vector has no direction to turn to: every step is parallel to it.
  params = {"w": kernel(), "tiny": np.full(shape, 2.0, np.float32)}
  grads = {"w": kernel(1), "tiny": np.full(shape, 5.0, np.float32)}
  tx = lo.layca(RATE, mask=True)
  with pytest.warns(UserWarning, match=re.escape("['tiny'] have a single element")):
    state = tx.init(params)
  updates, _ = tx.update(grads, state, params)
  assert np.all(np.asarray(updates["tiny"]) == 0)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_zero_norm_kernel_never_gives_nan(name):
  params = {"w": kernel(), "zero": np.zeros((3, 3), np.float32)}
  grads = {"w": kernel(1), "zero": kernel(2, (3, 3))}
  tx = TRANSFORMS[name](RATE)
  with pytest.warns(UserWarning, match="zero norm"):
    state = tx.init(params)
  updates, _ = tx.update(grads, state, params)
  for leaf in jax.tree.leaves(updates):
    assert np.all(np.isfinite(leaf))
  np.testing.assert_allclose(updates["zero"], -RATE * grads["zero"],
                             rtol=tolerances.ELEMENTWISE_RTOL)


# -- arguments -----------------------------------------------------------------------------


def test_layer_order_given_as_one_string_is_a_clear_error():
  with pytest.raises(TypeError, match="`layer_order` must be a list of path strings"):
    lo.layca(RATE, alpha=0.5, layer_order="w").init({"w": kernel()})


def test_mask_computed_from_values_is_a_clear_error_under_jit():
  params = {"w": kernel(), "v": kernel(1)}
  tx = lo.layca(RATE, mask=lambda p: jax.tree.map(lambda x: jnp.sum(x) > 0, p))
  with pytest.raises(ValueError, match="traced array; masks must be static"):
    jax.jit(tx.init)(params)


@pytest.mark.parametrize("bad", ["0.1", None, [0.1, 0.2]])
def test_learning_rate_of_the_wrong_type_is_a_clear_error(bad):
  with pytest.raises(TypeError, match="learning_rate must be a float or an optax schedule"):
    lo.layca(bad)


@pytest.mark.parametrize("bad", ["0.5", None, 1j])
def test_alpha_of_the_wrong_type_is_a_clear_error(bad):
  with pytest.raises(TypeError, match=r"alpha must be a number in \[-1, 1\]"):
    lo.layca(RATE, alpha=bad)


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_schedule_with_a_bad_value_is_a_clear_error_outside_jit(value):
  params = {"w": kernel()}
  tx = lo.layca(lambda count: jnp.where(count < 1, 0.1, value))
  state = tx.init(params)
  _, state = tx.update(params, state, params)  # step 0: 0.1, fine
  with pytest.raises(ValueError, match=r"schedule returned .* at step 1"):
    tx.update(params, state, params)


def test_base_that_is_not_a_transform_is_a_clear_error():
  with pytest.raises(TypeError, match=r"base_optimizer=optax.trace\(0.9\)"):
    lo.layca(RATE, base_optimizer=optax.sgd)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_grads_of_another_tree_name_the_first_differing_path(name):
  params = {"a": kernel(), "b": {"c": kernel(1), "d": kernel(2)}}
  grads = {"a": kernel(), "b": {"c": kernel(1), "e": kernel(2)}}
  tx = TRANSFORMS[name](RATE)
  with pytest.raises(ValueError, match="updates have 'b/e' where params have 'b/d'"):
    tx.update(grads, tx.init(params), params)


def test_cosine_distance_of_different_trees_names_the_first_difference():
  with pytest.raises(ValueError, match="params have 'x' where reference params have 'w'"):
    lo.cosine_distance({"x": kernel()}, {"w": kernel()})


def test_mask_callable_of_the_wrong_structure_is_a_clear_error():
  params = {"w": kernel(), "v": kernel(1)}
  with pytest.raises(ValueError, match="`mask` must be a pytree of bools"):
    lo.layca(RATE, mask=lambda p: [True, False]).init(params)


# -- NaN and Inf gradients -----------------------------------------------------------------


def nan_grads(params, value=np.nan):
  grads = {k: kernel(7, np.shape(v)) for k, v in params.items()}
  grads["w"][0, 0] = value
  grads["bias"][0] = value
  return grads


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_without_a_guard_a_non_finite_gradient_poisons_that_layer(value):
  # Documented behaviour: a NaN/Inf anywhere in a layer's gradient makes the layer's
  # norms NaN, so its whole update is NaN; other layers are untouched; a non-layer leaf
  # gets NaN only where its gradient is. Momentum keeps the NaN for the next steps.
  params = {"w": kernel(), "v": kernel(1), "bias": np.ones(3, np.float32)}
  tx = lo.layca(RATE, base_optimizer=optax.trace(0.9))
  updates, state = jax.jit(tx.update)(nan_grads(params, value), tx.init(params), params)
  assert np.all(np.isnan(updates["w"]))
  assert np.all(np.isfinite(updates["v"]))
  assert not np.isfinite(updates["bias"][0]) and np.all(np.isfinite(updates["bias"][1:]))
  assert not np.all(np.isfinite(state[0].trace["w"]))


@pytest.mark.slow
def test_apply_if_finite_skips_the_bad_step_and_training_goes_on():
  params = {"w": kernel(), "v": kernel(1), "bias": np.ones(3, np.float32)}
  tx = optax.apply_if_finite(lo.layca(RATE, base_optimizer=optax.trace(0.9)), max_consecutive_errors=3)
  update = jax.jit(tx.update)
  state = tx.init(params)
  updates, state = update(nan_grads(params), state, params)
  assert all(np.array_equal(optax.apply_updates(params, updates)[k], params[k]) for k in params)
  assert int(state.notfinite_count) == 1
  good = {k: kernel(8, np.shape(v)) for k, v in params.items()}
  updates, state = update(good, state, params)
  new = optax.apply_updates(params, updates)
  assert int(state.notfinite_count) == 0
  np.testing.assert_allclose(lo.rotation_angle(new, params)["w"], np.arctan(RATE),
                             rtol=tolerances.applied_angle_rtol(RATE, np.size(params["w"])))
