"""layca: against the NumPy transcription of Algorithm 1, and against its invariants."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from tests import reference, tolerances


def make_params(seed=0):
  """Conv and dense kernels, a bias and a scalar, with names that sort out of depth order."""
  rng = np.random.default_rng(seed)
  return {
      "conv_10": rng.normal(size=(3, 3, 4, 8)).astype(np.float32) * 0.2,
      "conv_2": rng.normal(size=(3, 3, 2, 4)).astype(np.float32) * 0.3,
      "dense": rng.normal(size=(8, 5)).astype(np.float32),
      "bias": rng.normal(size=(5,)).astype(np.float32),
      "scale": np.float32(1.5),
  }


DEPTH_ORDER = ["conv_2", "conv_10", "bias", "dense", "scale"]
KERNELS = ["conv_2", "conv_10", "dense"]
SIZE = 288  # the largest leaf of make_params, for the tolerances' bounds


def gradient_sequence(params, steps, seed=1):
  rng = np.random.default_rng(seed)
  return [
      {k: rng.normal(size=np.shape(v)).astype(np.float32) for k, v in params.items()}
      for _ in range(steps)
  ]


def grads_at(params, noise):
  """A gradient that depends on the params (as real ones do) plus fixed noise."""
  return {k: noise[k] + 0.3 * np.asarray(params[k]) ** 2 for k in params}


def run(tx, params, noises):
  """Runs jitted steps; yields the params after each one."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  for noise in noises:
    updates, state = update(grads_at(params, noise), state, params)
    params = optax.apply_updates(params, updates)
    yield params


@pytest.mark.parametrize(
    "base_name, base, alpha",
    [
        ("sgd", None, 0.0),
        ("momentum", optax.trace(0.9), -0.4),
        ("amom", optax.ema(0.9, debias=False), 0.6),
    ],
)
def test_matches_numpy_transcription(base_name, base, alpha):
  params = make_params()
  lr = lambda t: 0.2 if t < 4 else 0.04  # a step-decay schedule
  tx = lo.layca(
      optax.piecewise_constant_schedule(0.2, {4: 0.2}),
      base_optimizer=base, alpha=alpha, layer_order=DEPTH_ORDER,
  )
  ref = reference.ReferenceLayca(
      params, lr=lr, alpha=alpha, order=DEPTH_ORDER, base=base_name
  )
  ref_params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  noises = gradient_sequence(params, 8)
  for step, (got, noise) in enumerate(zip(run(tx, params, noises), noises)):
    ref_params = ref.step(ref_params, grads_at(ref_params, noise))
    assert jax.tree.structure(got) == jax.tree.structure(ref_params)
    for name in params:
      # Kernels: the float32 trajectory's bound; other leaves: -rho s, one rounding a step.
      rtol = tolerances.trajectory_rtol(0.2, step + 1, SIZE) if name in KERNELS else (
          (step + 1) * tolerances.ELEMENTWISE_RTOL * 10  # s from a base's state: a few more
      )
      tolerances.assert_close_in_norm(
          got[name], ref_params[name], rtol, err_msg=f"leaf {name} at step {step}"
      )


@pytest.mark.slow
def test_matches_composable_chain():
  params = make_params()
  for base in (None, optax.trace(0.9), optax.scale_by_adam()):
    fused = lo.layca(0.1, base_optimizer=base, alpha=0.3, layer_order=DEPTH_ORDER)
    chain = optax.chain(
        base or optax.identity(),
        lo.project_orthogonal(),
        lo.normalize_rotation(),
        lo.scale_by_layer_rates(0.1, alpha=0.3, layer_order=DEPTH_ORDER),
        lo.project_to_sphere(),
    )
    noises = gradient_sequence(params, 6)
    steps = zip(run(fused, params, noises), run(chain, params, noises))
    for step, (a, b) in enumerate(steps, start=1):
      for name in params:  # two float32 trajectories, each within its bound of the exact one
        tolerances.assert_close_in_norm(
            a[name], b[name], 2 * tolerances.trajectory_rtol(0.1, step, SIZE), name
        )


@pytest.mark.parametrize("rate", [3.0**-7, 3.0**-3, 0.5, 3.0**3])
def test_angle_is_arctan_rate_and_norm_is_kept(rate):
  params = make_params()
  norms0 = {k: np.linalg.norm(params[k]) for k in KERNELS}
  previous = params
  for new in run(lo.layca(rate), params, gradient_sequence(params, 4)):
    angles = lo.rotation_angle(new, previous)
    for name in KERNELS:
      np.testing.assert_allclose(
          angles[name], np.arctan(rate), rtol=tolerances.applied_angle_rtol(rate, SIZE)
      )
      np.testing.assert_allclose(
          np.linalg.norm(new[name]), norms0[name], rtol=tolerances.norm_rtol(rate, size=SIZE)
      )
    previous = new


def test_update_is_orthogonal_to_the_weights_for_small_rates():
  # w' - w = -rho s_hat + O(rho^2) w: the first-order step is tangent to the sphere.
  params = make_params()
  rate = 1e-3
  tx = lo.layca(rate)
  grads = gradient_sequence(params, 1)[0]
  updates, _ = tx.update(grads, tx.init(params), params)
  for name in KERNELS:
    u, w = np.asarray(updates[name], np.float64), np.asarray(params[name], np.float64)
    cos = np.sum(u * w) / (np.linalg.norm(u) * np.linalg.norm(w))
    assert abs(cos) < 2 * rate  # the O(rho^2) radial part is rho/2 of the step
    # ||u|| = ||w|| 2 sin(arctan(rho) / 2) = rho ||w|| (1 - 3 rho^2 / 8 + ...): 4e-7 off.
    np.testing.assert_allclose(np.linalg.norm(u), rate * np.linalg.norm(w), rtol=1e-6)


def test_layer_rates_follow_alpha_multipliers_in_the_given_order():
  params = make_params()
  rate, alpha = 0.1, -0.6
  new = next(run(lo.layca(rate, alpha=alpha, layer_order=DEPTH_ORDER), params,
                 gradient_sequence(params, 1)))
  multipliers = lo.alpha_multipliers(3, alpha)
  angles = lo.rotation_angle(new, params)
  for name, m in zip(["conv_2", "conv_10", "dense"], multipliers):
    np.testing.assert_allclose(
        angles[name], np.arctan(m * rate), rtol=tolerances.applied_angle_rtol(m * rate, SIZE)
    )


def test_non_layer_leaves_take_minus_rate_times_base_step():
  params = make_params()
  grads = gradient_sequence(params, 1)[0]
  tx = lo.layca(0.3, base_optimizer=optax.trace(0.5), alpha=0.8)
  updates, _ = tx.update(grads, tx.init(params), params)
  for name in ("bias", "scale"):  # one product in float32
    np.testing.assert_allclose(
        updates[name], -0.3 * grads[name], rtol=tolerances.ELEMENTWISE_RTOL
    )


def test_base_state_keeps_raw_direction():
  # The momentum buffer must hold the raw gradients, not Layca's processed steps.
  params = make_params()
  tx = lo.layca(0.1, base_optimizer=optax.trace(0.9))
  state = tx.init(params)
  grads = gradient_sequence(params, 2)
  _, state = tx.update(grads[0], state, params)
  _, state = tx.update(grads[1], state, params)
  trace = state[0].trace
  for name in params:  # a product and a sum in float32
    tolerances.assert_close_in_norm(
        trace[name], 0.9 * grads[0][name] + grads[1][name], tolerances.ELEMENTWISE_RTOL, name
    )


def test_long_run_keeps_norm_and_angle_under_scan():
  rng = np.random.default_rng(3)
  params = {"conv": jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32),
            "dense": jnp.asarray(rng.normal(size=(64, 10)), jnp.float32)}
  rate = 3.0**-3
  tx = lo.layca(rate, base_optimizer=optax.trace(0.9))
  noise = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)

  def step(carry, t):
    params, state = carry
    phase = jnp.sin(0.01 * t.astype(jnp.float32))
    grads = jax.tree.map(lambda n, w: n * phase + jnp.roll(w, 1), noise, params)
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    return (new, state), lo.rotation_angle(new, params)

  (final, _), angles = jax.jit(
      lambda p: jax.lax.scan(step, (p, tx.init(p)), jnp.arange(20_000))
  )(params)
  for name in params:
    # Every step lands on the sphere of ||w_0|| (stored at init), so the error does not
    # accumulate: after 20,000 steps it is still one step's bound.
    drift = abs(np.linalg.norm(final[name]) / np.linalg.norm(params[name]) - 1)
    assert drift < tolerances.norm_rtol(rate, size=1152), (name, drift)
    np.testing.assert_allclose(
        angles[name][-100:], np.arctan(rate), rtol=tolerances.applied_angle_rtol(rate, 640)
    )


@pytest.mark.parametrize("rate", [3.0**3, 1e-8])
def test_extreme_rates_stay_finite_and_on_the_sphere(rate):
  params = make_params()
  for new in run(lo.layca(rate), params, gradient_sequence(params, 3)):
    for name in KERNELS:
      assert np.all(np.isfinite(new[name]))
      np.testing.assert_allclose(np.linalg.norm(new[name]), np.linalg.norm(params[name]),
                                 rtol=tolerances.norm_rtol(rate, size=SIZE))


def _bits_equal(a, b):
  return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


@pytest.mark.parametrize("base", [None, optax.trace(0.9)])
def test_zero_gradient_leaves_params_bit_identical(base):
  params = make_params()
  zeros = jax.tree.map(np.zeros_like, params)
  tx = lo.layca(0.1, base_optimizer=base)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  assert _bits_equal(optax.apply_updates(params, updates), params)
  # The updates themselves are zero, not just too small to change float32 params.
  assert not any(np.any(np.asarray(u)) for u in jax.tree.leaves(updates))


def test_gradient_parallel_to_weights_leaves_kernels_bit_identical():
  # Pure L2 weight decay: the gradient is c * w; its tangent part is rounding noise.
  params = make_params()
  for c in (3.7, -1e-3, 1e4):
    grads = jax.tree.map(lambda w: np.float32(c) * w, params)
    tx = lo.layca(0.1)
    for fn in (tx.update, jax.jit(tx.update)):
      updates, _ = fn(grads, tx.init(params), params)
      new = optax.apply_updates(params, updates)
      for name in KERNELS:
        assert np.array_equal(new[name], params[name]), (name, c)
        assert not np.any(np.asarray(updates[name])), (name, c)


@pytest.mark.slow
def test_multisteps_zero_updates_leave_params_bit_identical():
  params = make_params()
  tx = optax.MultiSteps(lo.layca(0.1), every_k_schedule=3)
  state = tx.init(params)
  grads = gradient_sequence(params, 3)
  for i in range(2):
    updates, state = tx.update(grads[i], state, params)
    assert _bits_equal(optax.apply_updates(params, updates), params)
  updates, state = tx.update(grads[2], state, params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(lo.rotation_angle(new, params)["dense"], np.arctan(0.1),
                             rtol=tolerances.applied_angle_rtol(0.1, SIZE))


@pytest.mark.parametrize("shape", [(64, 32), (5, 2)])
@pytest.mark.parametrize("tangent_fraction", [1e-3, 1e-2, 5e-2, 0.3])
def test_nearly_parallel_gradient_still_rotates_by_arctan_rate(tangent_fraction, shape):
  # ||p|| / ||s|| = tangent_fraction: below 0.1 the tangent part is measured in a second
  # pass. Angle and norm, in float64, within the bounds of tests/tolerances.py on every
  # seed. (Far below 1e-3 the float32 gradient itself holds little of its tangent part.)
  size = int(np.prod(shape))
  for seed in range(4):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=shape).astype(np.float32)
    direction = rng.normal(size=w.shape)
    direction -= np.sum(direction * w) / np.sum(w * w) * w
    direction *= tangent_fraction * np.linalg.norm(w) / np.linalg.norm(direction)
    g = (w + direction).astype(np.float32)
    params = {"w": w}
    tx = lo.layca(0.2)
    updates, _ = jax.jit(tx.update)({"w": g}, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(
        reference.angle(new["w"], w), np.arctan(0.2),
        rtol=tolerances.applied_angle_rtol(0.2, size), err_msg=f"seed {seed}",
    )
    # ...and in the direction of -p (descent along the tangent part of g).
    moved = np.asarray(new["w"], np.float64) - w
    assert np.sum(moved * direction) < 0
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(new["w"], np.float64)), np.linalg.norm(w),
        rtol=tolerances.norm_rtol(0.2, tangent_fraction, size), err_msg=f"seed {seed}",
    )


def test_zero_norm_kernel_warns_and_takes_plain_steps():
  params = make_params()
  params["dense"] = np.zeros((8, 5), np.float32)
  tx = lo.layca(0.1, alpha=0.5)
  with pytest.warns(UserWarning, match=re.escape("['dense']")):
    state = tx.init(params)
  grads = gradient_sequence(params, 1)[0]
  updates, _ = tx.update(grads, state, params)
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
  np.testing.assert_allclose(
      updates["dense"], -0.1 * grads["dense"], rtol=tolerances.ELEMENTWISE_RTOL
  )


def test_no_warning_under_jit_or_eval_shape():
  params = make_params()
  params["dense"] = np.zeros((8, 5), np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    shapes = jax.eval_shape(lo.layca(0.1).init, params)
  assert shapes[1].initial_norms["dense"].dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.bfloat16, pytest.param(jnp.float16, marks=pytest.mark.slow)])
def test_low_precision_params_give_low_precision_updates(dtype):
  params = jax.tree.map(lambda x: jnp.asarray(x, dtype), make_params())
  grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), gradient_sequence(params, 1)[0])
  tx = lo.layca(0.1, base_optimizer=optax.trace(0.9))
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  for u in jax.tree.leaves(updates):
    assert u.dtype == dtype and bool(jnp.all(jnp.isfinite(u)))
  assert all(n.dtype == jnp.float32 for n in jax.tree.leaves(state[1].initial_norms))
  new = optax.apply_updates(params, updates)
  angle = float(lo.rotation_angle(new, params)["dense"])
  assert abs(angle - np.arctan(0.1)) < 0.02  # within bf16 resolution


# -- bad input ----------------------------------------------------------------------------


def test_params_none_is_a_clear_error():
  params = make_params()
  tx = lo.layca(0.1)
  with pytest.raises(ValueError, match="needs the current parameters"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize("alpha", [-1.5, 1.01, float("nan")])
def test_alpha_outside_range_is_an_error(alpha):
  with pytest.raises(ValueError, match=r"alpha must be in \[-1, 1\]"):
    lo.layca(0.1, alpha=alpha)


@pytest.mark.parametrize("rate", [-0.1, float("nan"), float("inf")])
def test_bad_learning_rate_is_an_error(rate):
  with pytest.raises(ValueError, match="learning_rate must be a finite number >= 0"):
    lo.layca(rate)


def test_unknown_path_in_layer_order_is_named():
  params = make_params()
  order = ["conv_2", "conv_1O", "conv_10", "dense"]
  with pytest.raises(ValueError, match=r"'conv_1O'.*Did you mean"):
    lo.layca(0.1, alpha=0.5, layer_order=order).init(params)


def test_layer_missing_from_layer_order_is_named():
  params = make_params()
  with pytest.raises(ValueError, match=r"\['conv_10'\] are missing"):
    lo.layca(0.1, layer_order=["conv_2", "dense"]).init(params)


def test_mismatched_structure_names_first_difference():
  params = make_params()
  tx = lo.layca(0.1)
  state = tx.init(params)
  grads = dict(params)
  grads["densE"] = grads.pop("dense")
  with pytest.raises(ValueError, match="updates have 'densE' where params have 'dense'"):
    tx.update(grads, state, params)


def test_integer_layer_leaf_is_a_clear_error():
  params = {"w": np.ones((3, 3), np.int32)}
  with pytest.raises(TypeError, match="'w' has dtype int32"):
    lo.layca(0.1).init(params)


def test_wrong_mask_structure_is_a_clear_error():
  params = make_params()
  with pytest.raises(ValueError, match="`mask` must be a pytree of bools"):
    lo.layca(0.1, mask={"dense": True}).init(params)


def test_empty_tree_is_fine():
  tx = lo.layca(0.1)
  state = tx.init({})
  updates, _ = tx.update({}, state, {})
  assert updates == {}


@pytest.mark.parametrize("make", ["layca", "chain"])
def test_params_return_to_the_initial_norm_not_the_current_one(make):
  # Algorithm 1, step 4: w' is put back on the sphere of ||w_0||, stored at init. Weights
  # rescaled outside the optimizer (weight decay, a manual rescale) must come back to it.
  rng = np.random.default_rng(0)
  init = {"w": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)}
  tx = lo.layca(0.1) if make == "layca" else optax.chain(
      lo.project_orthogonal(), lo.normalize_rotation(), lo.scale_by_layer_rates(0.1),
      lo.project_to_sphere(),
  )
  state = tx.init(init)
  params = {"w": init["w"] * 1.5}  # the norm changed since init
  grads = {"w": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)}
  updates, _ = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(
      np.linalg.norm(new["w"]), np.linalg.norm(init["w"]),
      rtol=tolerances.norm_rtol(0.1, size=30),
  )
