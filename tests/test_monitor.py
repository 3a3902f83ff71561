"""measure_rotation, rotation_rates, PerLeafRates and replay_rates (AdaptCopy)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from layca_optax._tree import leaves_by_path
from tests import reference, tolerances

STEPS = 6


def _params(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
      "dense0": {"kernel": jax.random.normal(k1, (6, 5)), "bias": jnp.zeros(5)},
      "dense1": {"kernel": jax.random.normal(k2, (5, 3)), "bias": jnp.zeros(3)},
      "conv": {"kernel": jax.random.normal(k3, (3, 3, 2, 4))},
  }


def _loss(params, x):
  h = jnp.tanh(x @ params["dense0"]["kernel"] + params["dense0"]["bias"][None])
  y = h @ params["dense1"]["kernel"] + params["dense1"]["bias"][None]
  return jnp.sum(y**2) + jnp.sum(jnp.sin(params["conv"]["kernel"]))


def _angle64(a, b) -> float:
  """The angle between two arrays, in NumPy float64."""
  a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
  cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def _train(tx, params, steps=STEPS, key=jax.random.key(1), measured=True):
  """Runs ``steps`` jitted steps; returns the params after each step and the rates."""
  state = tx.init(params)

  @jax.jit
  def step(params, state, x):
    grads = jax.grad(_loss)(params, x)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  history, rates = [params], []
  for x in jax.random.normal(key, (steps, 4, 6)):
    params, state = step(params, state, x)
    history.append(params)
    if measured:
      rates.append(lo.rotation_rates(state))
  return history, rates, state


@pytest.mark.parametrize(
    "base",
    [pytest.param(optax.adam(1e-2), marks=pytest.mark.slow), optax.sgd(0.05, momentum=0.9),
     lo.layca(0.05)],
    ids=["adam", "sgd", "layca"],
)
def test_angles_equal_numpy_float64_angles_of_consecutive_params(base, key):
  history, rates, _ = _train(optax.chain(base, lo.measure_rotation()), _params(key))
  for before, after, angles in zip(history, history[1:], rates):
    assert angles["dense0"]["bias"] is None  # not a layer: not measured
    for name in ("dense0", "dense1", "conv"):
      expected = _angle64(after[name]["kernel"], before[name]["kernel"])
      got = float(angles[name]["kernel"])
      # The measured angle is the update's as proposed; the float32 params after the
      # step differ from it by their rounding: applied_angle_rtol of this step and leaf.
      size = after[name]["kernel"].size
      rel = tolerances.applied_angle_rtol(math.tan(expected), size)
      assert got == pytest.approx(expected, rel=rel), name


def test_layca_steps_measure_arctan_of_the_rate(key):
  _, rates, _ = _train(optax.chain(lo.layca(3**-3), lo.measure_rotation()), _params(key))
  for angles in rates:
    for value in jax.tree.leaves(angles):
      # Two computed angles (the step's and the measure's): twice the bound.
      assert float(value) == pytest.approx(math.atan(3**-3), rel=2 * tolerances.angle_rtol(72))


def test_updates_pass_through_unchanged_and_state_keeps_its_structure(key):
  params = _params(key)
  tx = lo.measure_rotation(mask=lambda p: jax.tree.map(lambda x: True, p))
  state = tx.init(params)
  grads = jax.grad(_loss)(params, jnp.ones((4, 6)))
  updates, new_state = tx.update(grads, state, params)
  assert jax.tree.map(lambda a, b: bool((a == b).all()), updates, grads) == jax.tree.map(
      lambda _: True, grads
  )
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  # Zero-filled at init, float32, one scalar per leaf (every leaf selected by the mask).
  assert all(float(a) == 0.0 and a.dtype == jnp.float32 for a in jax.tree.leaves(state))
  assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(params))


@pytest.mark.filterwarnings("ignore:.*have zero norm at init")
def test_the_monitor_never_changes_the_updates_it_passes_on():
  # NaN, inf and zero gradients, zero params: with and without the monitor, inside one
  # jitted step with donated params, the new params are bitwise the same.
  params = {
      "a_nan": jnp.ones((4, 3)), "inf": jnp.ones((4, 3)), "zero_params": jnp.zeros((4, 3)),
      "zero_grads": jnp.ones((4, 3)), "fine": jnp.arange(12.0).reshape(4, 3),
  }
  grads = {
      "a_nan": jnp.full((4, 3), jnp.nan), "inf": jnp.full((4, 3), jnp.inf).at[0, 0].set(-1.0),
      "zero_params": jnp.ones((4, 3)), "zero_grads": jnp.zeros((4, 3)),
      "fine": jnp.ones((4, 3)),
  }
  for base in (optax.sgd(0.1, momentum=0.9), lo.layca(0.1)):
    results = []
    for tx in (base, optax.chain(base, lo.measure_rotation())):
      step = jax.jit(
          lambda p, s, tx=tx: optax.apply_updates(p, tx.update(grads, s, p)[0]),
          donate_argnums=0,
      )
      copy = jax.tree.map(jnp.array, params)
      results.append(step(copy, tx.init(copy)))
    for name in params:
      np.testing.assert_array_equal(
          np.asarray(results[0][name]).view(np.uint32),
          np.asarray(results[1][name]).view(np.uint32), err_msg=name,
      )


def test_zero_update_measures_exactly_zero(key):
  params = _params(key)
  tx = lo.measure_rotation()
  zeros = jax.tree.map(jnp.zeros_like, params)
  _, state = jax.jit(tx.update)(zeros, tx.init(params), params)
  assert all(float(a) == 0.0 for a in jax.tree.leaves(lo.rotation_rates(state)))


def test_runs_inside_lax_scan(key):
  params = _params(key)
  tx = optax.chain(optax.adam(1e-2), lo.measure_rotation())

  def body(carry, x):
    params, state = carry
    updates, state = tx.update(jax.grad(_loss)(params, x), state, params)
    return (optax.apply_updates(params, updates), state), lo.rotation_rates(state)

  xs = jax.random.normal(jax.random.key(1), (STEPS, 4, 6))
  _, stacked = jax.lax.scan(body, (params, tx.init(params)), xs)
  _, rates, _ = _train(tx, params)
  expected = jax.tree.map(lambda *a: jnp.stack(a), *rates)
  assert stacked["conv"]["kernel"].shape == (STEPS,)
  np.testing.assert_allclose(
      stacked["dense1"]["kernel"], expected["dense1"]["kernel"],
      rtol=2 * tolerances.angle_rtol(72),  # two programs, each within the bound
  )


@pytest.mark.parametrize(
    "wrap",
    [
        lambda tx: optax.chain(optax.identity(), optax.chain(tx)),
        lambda tx: optax.MultiSteps(tx, every_k_schedule=1),
        lambda tx: optax.apply_if_finite(tx, max_consecutive_errors=2),
        lambda tx: optax.inject_hyperparams(
            lambda learning_rate: optax.chain(optax.sgd(learning_rate), tx)
        )(learning_rate=0.1),
    ],
    ids=["nested-chain", "multisteps", "apply_if_finite", "inject_hyperparams"],
)
def test_rotation_rates_finds_nested_states(wrap, key):
  params = _params(key)
  tx = wrap(optax.chain(optax.sgd(0.1), lo.measure_rotation()))
  state = tx.init(params)
  grads = jax.grad(_loss)(params, jnp.ones((4, 6)))
  updates, state = tx.update(grads, state, params)
  angles = lo.rotation_rates(state)
  new = optax.apply_updates(params, updates)
  expected = _angle64(new["dense0"]["kernel"], params["dense0"]["kernel"])
  assert float(angles["dense0"]["kernel"]) == pytest.approx(
      expected, rel=tolerances.applied_angle_rtol(math.tan(expected), 30)
  )


def test_rotation_rates_without_or_with_two_states_is_a_clear_error(key):
  params = _params(key)
  with pytest.raises(ValueError, match="no measure_rotation state.*measure_rotation\\(\\)"):
    lo.rotation_rates(optax.adam(1e-3).init(params))
  two = optax.chain(lo.measure_rotation(), lo.measure_rotation()).init(params)
  with pytest.raises(ValueError, match="2 of them"):
    lo.rotation_rates(two)


def test_measure_rotation_needs_params(key):
  params = _params(key)
  tx = lo.measure_rotation()
  with pytest.raises(ValueError, match="needs the current parameters"):
    tx.update(params, tx.init(params))


def test_stacked_leaf_gets_one_angle_per_block_equal_to_separate_leaves(key):
  stacked = {"blocks": jax.random.normal(key, (3, 8, 8))}
  separate = {f"b{i}": stacked["blocks"][i] for i in range(3)}
  grads = {"blocks": jax.random.normal(jax.random.key(2), (3, 8, 8))}
  tx_stacked = optax.chain(
      optax.sgd(0.3), lo.measure_rotation(rotation_axes=lo.stacked_layer_axes)
  )
  tx_separate = optax.chain(optax.sgd(0.3), lo.measure_rotation())
  _, s1 = tx_stacked.update(grads, tx_stacked.init(stacked), stacked)
  sep_grads = {f"b{i}": grads["blocks"][i] for i in range(3)}
  _, s2 = tx_separate.update(sep_grads, tx_separate.init(separate), separate)
  per_block = lo.rotation_rates(s1)["blocks"]
  assert per_block.shape == (3,)
  np.testing.assert_allclose(
      per_block, [lo.rotation_rates(s2)[f"b{i}"] for i in range(3)],
      rtol=2 * tolerances.angle_rtol(64),  # two programs, each within the bound
  )


def test_nnx_optimizer_state_is_read(key):
  nnx = pytest.importorskip("flax.nnx")
  model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(
      model, optax.chain(lo.layca(0.1), lo.measure_rotation()), wrt=nnx.Param
  )

  def loss(model):
    return jnp.sum(model(jnp.ones((2, 4))) ** 2)

  optimizer.update(model, nnx.grad(loss)(model))
  angles = leaves_by_path(lo.rotation_rates(optimizer.opt_state))
  assert set(angles) == {"kernel"}
  assert float(angles["kernel"]) == pytest.approx(math.atan(0.1), rel=2 * tolerances.angle_rtol())


# -- AdaptCopy ---------------------------------------------------------------------------


@pytest.mark.slow
def test_replaying_adam_rotates_every_kernel_by_the_recorded_angle(key):
  params = _params(key)
  _, adam_rates, _ = _train(optax.chain(optax.adam(3e-2), lo.measure_rotation()), params)
  recorded = jax.tree.map(lambda *a: jnp.stack(a), *adam_rates)
  copy = optax.chain(lo.layca(lo.replay_rates(recorded)), lo.measure_rotation())
  history, copy_rates, _ = _train(copy, params, key=jax.random.key(7))
  for t, (before, after) in enumerate(zip(history, history[1:])):
    for name in ("dense0", "dense1", "conv"):
      want = float(recorded[name]["kernel"][t])
      # Adam's recorded angle (one bound), Layca's step by it (another) and its measure.
      rel = tolerances.angle_rtol(72) + tolerances.applied_angle_rtol(float(want), 72)
      assert _angle64(after[name]["kernel"], before[name]["kernel"]) == pytest.approx(
          want, rel=rel
      ), (t, name)
      assert float(copy_rates[t][name]["kernel"]) == pytest.approx(
          want, rel=rel + tolerances.angle_rtol(72)
      )
    # The biases were not recorded: default rate 0 freezes them.
    np.testing.assert_array_equal(after["dense0"]["bias"], params["dense0"]["bias"])


def test_replay_holds_the_last_angle_after_the_recording():
  rates = lo.replay_rates({"w": jnp.array([0.1, 0.2])})
  schedule = rates.rates["w"]
  np.testing.assert_allclose(
      [schedule(t) for t in range(4)], np.tan([0.1, 0.2, 0.2, 0.2]),
      rtol=tolerances.ELEMENTWISE_RTOL,  # tan in float64, stored in float32
  )


def test_replay_per_block_angles_of_a_stacked_leaf(key):
  params = {"blocks": jax.random.normal(key, (3, 8, 8))}
  angles = {"blocks": jnp.array([[0.01, 0.02, 0.03], [0.03, 0.02, 0.01]])}
  tx = optax.chain(
      lo.layca(lo.replay_rates(angles), rotation_axes=lo.stacked_layer_axes),
      lo.measure_rotation(rotation_axes=lo.stacked_layer_axes),
  )
  state = tx.init(params)
  for t in range(2):
    grads = {"blocks": jax.random.normal(jax.random.key(10 + t), (3, 8, 8))}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(
        lo.rotation_rates(state)["blocks"], angles["blocks"][t],
        rtol=2 * tolerances.angle_rtol(64) + tolerances.applied_angle_rtol(0.01, 64)
    )


def test_per_leaf_rates_in_the_composable_chain_equal_the_fused_optimizer(key):
  params = _params(key)
  rates = lo.PerLeafRates(
      {"dense0": 0.1, "dense1": {"kernel": optax.linear_schedule(0.2, 0.05, 4), "bias": None},
       "conv": None},
      default=0.03,
  )
  chain = optax.chain(
      lo.project_orthogonal(), lo.normalize_rotation(),
      lo.scale_by_layer_rates(rates, alpha=-0.3), lo.project_to_sphere(),
  )
  fused = lo.layca(rates, alpha=-0.3)
  h_chain, _, _ = _train(chain, params, measured=False)
  h_fused, _, _ = _train(fused, params, measured=False)
  for a, b in zip(jax.tree.leaves(h_chain[-1]), jax.tree.leaves(h_fused[-1])):
    tolerances.assert_close_in_norm(a, b, 2 * tolerances.trajectory_rtol(0.2, STEPS, 72))
  # The bias of dense0 is stepped by its own rate: -0.1 * gradient.
  grads = jax.grad(_loss)(params, jax.random.normal(jax.random.key(1), (STEPS, 4, 6))[0])
  tolerances.assert_close_in_norm(  # w - 0.1 g: a product and a sum in float32
      h_fused[1]["dense0"]["bias"],
      np.asarray(params["dense0"]["bias"], np.float64)
      - 0.1 * np.asarray(grads["dense0"]["bias"], np.float64),
      tolerances.ELEMENTWISE_RTOL,
  )


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: lo.PerLeafRates({"w": -0.1}), ValueError, "finite numbers >= 0"),
        (lambda: lo.PerLeafRates({"w": float("nan")}), ValueError, "finite numbers >= 0"),
        (lambda: lo.replay_rates({"w": jnp.array([0.1, 2.0])}), ValueError,
         "in \\[0, pi/2\\).*at step 1"),
        (lambda: lo.replay_rates({"w": jnp.array([-0.1])}), ValueError, "\\[0, pi/2\\)"),
        (lambda: lo.replay_rates({"w": jnp.array(0.1)}), ValueError, "shape \\(T,\\)"),
        (lambda: lo.replay_rates({"w": jnp.zeros(0)}), ValueError, "T >= 1"),
    ],
)
def test_bad_rates_are_clear_errors(make, error, match):
  with pytest.raises(error, match=match):
    make()


def test_per_leaf_rates_that_do_not_fit_the_params_are_clear_errors(key):
  params = {"w": jnp.ones((3, 4)), "v": jnp.ones((2, 2))}
  tx = lo.layca(lo.PerLeafRates({"w": 0.1, "other": 0.2}))
  with pytest.raises(ValueError, match="PerLeafRates.rates must have the structure of the params"):
    tx.update(params, tx.init(params), params)
  tx = lo.layca(lo.PerLeafRates({"w": jnp.ones(5) * 0.1, "v": 0.1}))
  with pytest.raises(ValueError, match="'w' has shape \\(5,\\).*shape \\(\\)"):
    tx.update(params, tx.init(params), params)


@pytest.mark.parametrize("size", [10, 10_000])
@pytest.mark.parametrize("scale", [1.0, 1.01])
def test_small_step_angles_match_float64_as_documented(size, scale):
  # The angle of the update as proposed (w32 + u32 in float64, not rounded to float32).
  # Bound: the tangent part is measured from float32 sums; below NEARLY_PARALLEL it is
  # formed and measured directly, so ||p|| is good to ~2e-5 relative at worst
  # (_numerics.NEARLY_PARALLEL) and so is the angle (atan2 adds a few eps).
  rng = np.random.default_rng(size)
  tx = lo.measure_rotation()
  step = jax.jit(lambda u, p: lo.rotation_rates(tx.update(u, tx.init(p), p)[1]))
  for _ in range(3):
    w = rng.normal(size=(size, 1))
    v = rng.normal(size=w.shape)
    v -= np.sum(v * w) / np.sum(w * w) * w
    v *= np.linalg.norm(w) / np.linalg.norm(v)
    theta = 1e-4
    target = (np.cos(theta) * w + np.sin(theta) * v) * scale
    w32, u32 = w.astype(np.float32), (target - w).astype(np.float32)
    expected = reference.angle(w32.astype(np.float64) + u32.astype(np.float64), w32)
    got = float(step({"w": u32}, {"w": w32})["w"])
    assert got == pytest.approx(expected, rel=2e-5)
