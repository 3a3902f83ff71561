"""The optax contract: every Layca optimizer behaves like any other optax optimizer.

In the spirit of ``optax/contrib/_common_test.py``: each optimizer (``layca`` over every
base the docs name, with layer-wise rates over SGD and Adam, and the chain of the four
composable transforms) compiles once, keeps its state's types, converges, handles
bfloat16, and works inside the optax wrappers people put optimizers in
(``inject_hyperparams``, ``MultiSteps``, ``apply_if_finite``, ``chain``, ``partition``).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from tests import tolerances

LR = 0.1
SIZE = 64  # the largest kernel of STUDENT, for the bounds of tests/tolerances.py


def angle_rtol(rate):
  """A Layca step's angle measured between float32 params (tests/tolerances.py)."""
  return tolerances.applied_angle_rtol(rate, SIZE)


def assert_same_trajectory(a, b, steps):
  """Two float32 computations of the same steps: each within its bound of the exact one."""
  jax.tree.map(
      lambda x, y: tolerances.assert_close_in_norm(
          x, y, 2 * tolerances.trajectory_rtol(LR, steps, SIZE)
      ),
      a, b,
  )

BASES = {
    "sgd": lambda: None,
    "momentum": lambda: optax.trace(0.9),
    "amom": lambda: optax.ema(0.9, debias=False),
    "adam": optax.scale_by_adam,
    "rms": optax.scale_by_rms,
    "adagrad": optax.scale_by_rss,
}


class Case(NamedTuple):
  make: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation]
  base: Callable[[], optax.GradientTransformation | None]
  alpha: float


def _layca_case(base_name: str, alpha: float) -> Case:
  base = BASES[base_name]
  return Case(lambda lr: lo.layca(lr, base_optimizer=base(), alpha=alpha), base, alpha)


def _chain_case(base_name: str, alpha: float) -> Case:
  base = BASES[base_name]

  def make(lr):
    parts = [
        lo.project_orthogonal(),
        lo.normalize_rotation(),
        lo.scale_by_layer_rates(lr, alpha=alpha),
        lo.project_to_sphere(),
    ]
    if base() is not None:
      parts.insert(0, base())
    return optax.chain(*parts)

  return Case(make, base, alpha)


CASES = {
    # Every base without layer-wise rates; alpha (which scales each layer's rate, whatever
    # the base) with the plain and the adaptive base.
    **{f"layca-{b}-alpha0.0": _layca_case(b, 0.0) for b in BASES},
    **{f"layca-{b}-alpha0.5": _layca_case(b, 0.5) for b in ("sgd", "adam")},
    "chain-sgd-alpha0.0": _chain_case("sgd", 0.0),
    "chain-adam-alpha0.5": _chain_case("adam", 0.5),
}

# Each case compiles its own steps (1-2 s a test on 2 cores). The fast loop
# (``pytest -m "not slow"``) runs three: plain Layca, Layca over Adam with layer-wise rates,
# and the composable chain; CI runs every case.
FAST_CASES = ("layca-sgd-alpha0.0", "layca-adam-alpha0.5", "chain-adam-alpha0.5")


def _params(names, fast):
  return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


CASE_PARAMS = _params(CASES, FAST_CASES)

# ------------------------------------------------------------------------------------
# A small tanh network and a teacher with the same kernel norms: Layca keeps the norms
# of the student's kernels, so the teacher's function is reachable.


def _init(key: jax.Array) -> dict[str, Any]:
  k_hidden, k_out = jax.random.split(key)
  return {
      "hidden": {
          "kernel": jax.random.normal(k_hidden, (4, 16)) / 2.0,
          "bias": jnp.zeros(16),
      },
      "out": {
          "kernel": jax.random.normal(k_out, (16, 2)) / 4.0,
          "bias": jnp.zeros(2),
      },
  }


def _apply(params, x):
  h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"][None])
  return h @ params["out"]["kernel"] + params["out"]["bias"][None]


STUDENT = _init(jax.random.key(0))
X = jax.random.normal(jax.random.key(2), (64, 4))


def _teacher():
  raw = _init(jax.random.key(1))
  bias_key = jax.random.key(5)

  def fit(t, s):
    if t.ndim >= 2:
      return t * jnp.linalg.norm(s) / jnp.linalg.norm(t)
    return 0.3 * jax.random.normal(bias_key, t.shape)

  return jax.tree.map(fit, raw, STUDENT)


Y = _apply(_teacher(), X)


def _loss(params):
  return jnp.mean((_apply(params, X) - Y) ** 2)


def _random_like(params, seed: int, scale: float = 1.0):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
      treedef,
      [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)],
  )


def _kernels(tree):
  return {k: v["kernel"] for k, v in tree.items()}


_rotation_angle = jax.jit(lo.rotation_angle)


def _angles(new, old):
  return {k: float(v) for k, v in _rotation_angle(_kernels(new), _kernels(old)).items()}


def _layer_rates(lr: float, alpha: float) -> dict[str, float]:
  """rho_l per kernel of STUDENT: 'hidden' is layer 0, 'out' layer 1 (natural order)."""
  m = lo.alpha_multipliers(2, alpha)
  return {"hidden": m[0] * lr, "out": m[1] * lr}


def _shapes_dtypes(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def _step_fn(tx):
  """One jitted optimizer step: ``(params, state, grads) -> (params, state)``."""

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


# ------------------------------------------------------------------------------------
# The contract, for every optimizer.


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_compiles_once_and_state_types_are_stable(name):
  tx = CASES[name].make(LR)
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(None)
    grads = jax.grad(_loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state0 = tx.init(STUDENT)
  params1, state1 = step(STUDENT, state0)
  params2, state2 = step(params1, state1)
  step(params2, state2)

  assert len(traces) == 1
  assert jax.tree.structure(state1) == jax.tree.structure(state0)
  assert jax.tree.structure(state2) == jax.tree.structure(state0)
  assert _shapes_dtypes(state1) == _shapes_dtypes(state0)
  assert _shapes_dtypes(state2) == _shapes_dtypes(state0)
  assert _shapes_dtypes(params2) == _shapes_dtypes(STUDENT)


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_eval_shape_of_init_matches_init(name):
  tx = CASES[name].make(LR)
  abstract = jax.eval_shape(tx.init, STUDENT)
  concrete = tx.init(STUDENT)
  assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), abstract) == _shapes_dtypes(concrete)


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_one_step_on_a_mixed_tree(name):
  """Kernels rotate by arctan(rho_l) on their sphere; 1-D leaves get -lr * base step."""
  case = CASES[name]
  tx = case.make(LR)
  grads = jax.grad(_loss)(STUDENT)
  new, _ = _step_fn(tx)(STUDENT, tx.init(STUDENT), grads)

  rates = _layer_rates(LR, case.alpha)
  angles = _angles(new, STUDENT)
  for layer in ("hidden", "out"):
    np.testing.assert_allclose(
        angles[layer], np.arctan(rates[layer]), rtol=angle_rtol(rates[layer])
    )
    np.testing.assert_allclose(
        jnp.linalg.norm(new[layer]["kernel"]),
        jnp.linalg.norm(STUDENT[layer]["kernel"]),
        rtol=tolerances.norm_rtol(rates[layer], size=SIZE),
    )

  base = case.base() or optax.identity()
  base_step, _ = jax.jit(base.update)(grads, base.init(STUDENT), STUDENT)
  for layer in ("hidden", "out"):  # w - lr s: a product and a sum in float32
    expected = np.asarray(STUDENT[layer]["bias"], np.float64) - LR * np.asarray(
        base_step[layer]["bias"], np.float64
    )
    tolerances.assert_close_in_norm(new[layer]["bias"], expected, tolerances.ELEMENTWISE_RTOL)


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_converges_on_a_teacher_student_problem(name):
  steps = 300
  tx = CASES[name].make(optax.cosine_decay_schedule(LR, steps))

  @jax.jit
  def train(params):
    def body(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(_loss)(params)
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(
        body, (params, tx.init(params)), None, length=steps
    )
    return params, losses

  params, losses = train(STUDENT)
  final = float(_loss(params))
  assert np.all(np.isfinite(losses))
  assert final < 1e-2 * float(losses[0])
  for layer in ("hidden", "out"):  # each step lands on the sphere: no accumulation
    np.testing.assert_allclose(
        jnp.linalg.norm(params[layer]["kernel"]),
        jnp.linalg.norm(STUDENT[layer]["kernel"]),
        rtol=tolerances.norm_rtol(LR, size=SIZE),
    )


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_bfloat16_in_bfloat16_out(name):
  tx = CASES[name].make(LR)
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), STUDENT)
  state = tx.init(params)

  norms0 = [
      leaf
      for _, leaf in optax.tree.get_all_with_path(state, "initial_norms")
  ]
  assert norms0, "no initial_norms in the state"
  for tree in norms0:
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(tree))

  @jax.jit
  def step(params, state):
    grads = jax.grad(lambda p: _loss(p).astype(jnp.float32))(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((updates, params))]
    return params, updates, grads, state, jnp.all(jnp.stack(finite))

  for _ in range(5):
    params, updates, grads, state, finite = step(params, state)
    assert all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(grads))
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params))
    assert bool(finite)

  for layer in ("hidden", "out"):  # bfloat16 params: 2^-8 per element, a few roundings
    np.testing.assert_allclose(
        jnp.linalg.norm(params[layer]["kernel"].astype(jnp.float32)),
        jnp.linalg.norm(STUDENT[layer]["kernel"]),
        rtol=4 * 2.0**-8,
    )


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_multi_steps_accumulates_then_takes_one_step(name):
  case = CASES[name]
  tx = optax.MultiSteps(case.make(LR), every_k_schedule=3)
  step = _step_fn(tx)
  grads = [_random_like(STUDENT, seed) for seed in (10, 11, 12)]

  params, state = STUDENT, tx.init(STUDENT)
  for g in grads[:2]:
    params, state = step(params, state, g)
    for new, old in zip(jax.tree.leaves(params), jax.tree.leaves(STUDENT)):
      assert np.array_equal(new, old)
  params, state = step(params, state, grads[2])

  direct = case.make(LR)
  mean = jax.tree.map(lambda *g: sum(g) / 3, *grads)
  expected, _ = _step_fn(direct)(STUDENT, direct.init(STUDENT), mean)
  for new, old in zip(jax.tree.leaves(params), jax.tree.leaves(STUDENT)):
    assert not np.array_equal(new, old)
  assert_same_trajectory(params, expected, steps=1)  # the mean of 3 gradients: one step


# ------------------------------------------------------------------------------------
# inject_hyperparams


@pytest.mark.parametrize(
    "base_name, alpha",
    [pytest.param(b, a, marks=() if (b, a) in (("sgd", 0.0), ("adam", 0.5)) else pytest.mark.slow)
     for b in ("sgd", "momentum", "adam") for a in (0.0, 0.5)],
)
def test_inject_hyperparams_matches_the_direct_call(base_name, alpha):
  base = BASES[base_name]
  injected = optax.inject_hyperparams(lo.layca)(
      learning_rate=LR, alpha=alpha, base_optimizer=base()
  )
  direct = lo.layca(LR, alpha=alpha, base_optimizer=base())
  step_i, step_d = _step_fn(injected), _step_fn(direct)

  p_i, s_i = STUDENT, injected.init(STUDENT)
  p_d, s_d = STUDENT, direct.init(STUDENT)
  for _ in range(3):
    grads = jax.grad(_loss)(p_d)
    p_i, s_i = step_i(p_i, s_i, grads)
    p_d, s_d = step_d(p_d, s_d, grads)
  assert_same_trajectory(p_i, p_d, steps=3)
  assert not np.array_equal(p_d["out"]["kernel"], STUDENT["out"]["kernel"])


def test_inject_hyperparams_new_learning_rate_sets_the_angle():
  tx = optax.inject_hyperparams(lo.layca)(learning_rate=LR, base_optimizer=optax.trace(0.9))
  step = _step_fn(tx)
  grads = jax.grad(_loss)(STUDENT)

  params, state = step(STUDENT, tx.init(STUDENT), grads)
  for angle in _angles(params, STUDENT).values():
    np.testing.assert_allclose(angle, np.arctan(LR), rtol=angle_rtol(LR))

  new_lr = 0.3
  state.hyperparams["learning_rate"] = jnp.asarray(new_lr, jnp.float32)
  new_params, state = step(params, state, jax.grad(_loss)(params))
  for angle in _angles(new_params, params).values():
    np.testing.assert_allclose(angle, np.arctan(new_lr), rtol=angle_rtol(new_lr))
  np.testing.assert_allclose(state.hyperparams["learning_rate"], new_lr)


def test_inject_hyperparams_new_alpha_sets_the_layer_rates():
  tx = optax.inject_hyperparams(lo.layca)(learning_rate=LR, alpha=0.0)
  step = _step_fn(tx)
  state = tx.init(STUDENT)
  state.hyperparams["alpha"] = jnp.asarray(0.5, jnp.float32)
  params, _ = step(STUDENT, state, jax.grad(_loss)(STUDENT))
  angles = _angles(params, STUDENT)
  for layer, rate in _layer_rates(LR, 0.5).items():
    np.testing.assert_allclose(angles[layer], np.arctan(rate), rtol=angle_rtol(rate))


# ------------------------------------------------------------------------------------
# Schedules, apply_if_finite, chain, partition


def test_schedule_sets_the_angle_of_each_step():
  tx = lo.layca(optax.piecewise_constant_schedule(0.1, {2: 0.1}))
  step = _step_fn(tx)
  params, state = STUDENT, tx.init(STUDENT)
  expected = [0.1, 0.1, 0.01, 0.01]
  for rate in expected:
    new, state = step(params, state, jax.grad(_loss)(params))
    for angle in _angles(new, params).values():
      np.testing.assert_allclose(angle, np.arctan(rate), rtol=angle_rtol(rate))
    params = new


def test_apply_if_finite_skips_a_nan_step():
  tx = optax.apply_if_finite(
      lo.layca(LR, base_optimizer=optax.trace(0.9)), max_consecutive_errors=5
  )
  step = _step_fn(tx)
  nan_grads = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), STUDENT)

  params, state = step(STUDENT, tx.init(STUDENT), nan_grads)
  for new, old in zip(jax.tree.leaves(params), jax.tree.leaves(STUDENT)):
    assert np.array_equal(new, old)
  assert int(state.notfinite_count) == 1

  grads = jax.grad(_loss)(STUDENT)
  params, state = step(params, state, grads)
  assert int(state.notfinite_count) == 0
  # The NaN step left the inner state alone: this is layca's very first step.
  direct = lo.layca(LR, base_optimizer=optax.trace(0.9))
  expected, _ = _step_fn(direct)(STUDENT, direct.init(STUDENT), grads)
  assert_same_trajectory(params, expected, steps=1)
  for angle in _angles(params, STUDENT).values():
    np.testing.assert_allclose(angle, np.arctan(LR), rtol=angle_rtol(LR))


def test_chain_after_gradient_clipping():
  tx = optax.chain(optax.clip_by_global_norm(1.0), lo.layca(LR))
  grads = _random_like(STUDENT, seed=3, scale=100.0)
  params, _ = _step_fn(tx)(STUDENT, tx.init(STUDENT), grads)

  for angle in _angles(params, STUDENT).values():
    np.testing.assert_allclose(angle, np.arctan(LR), rtol=angle_rtol(LR))
  global_norm = optax.tree.norm(grads)
  assert global_norm > 1.0
  for layer in ("hidden", "out"):  # w - lr g / |g|: a few roundings in float32
    expected = np.asarray(STUDENT[layer]["bias"], np.float64) - LR * np.asarray(
        grads[layer]["bias"], np.float64
    ) / float(global_norm)
    tolerances.assert_close_in_norm(params[layer]["bias"], expected, tolerances.ELEMENTWISE_RTOL)


def test_partition_freezes_the_non_kernels():
  labels = jax.tree.map(lambda x: "layca" if x.ndim >= 2 else "frozen", STUDENT)
  tx = optax.partition(
      {"layca": lo.layca(LR), "frozen": optax.set_to_zero()}, labels
  )
  step = _step_fn(tx)
  params, state = STUDENT, tx.init(STUDENT)
  for _ in range(3):
    new, state = step(params, state, jax.grad(_loss)(params))
    for angle in _angles(new, params).values():
      np.testing.assert_allclose(angle, np.arctan(LR), rtol=angle_rtol(LR))
    params = new

  for layer in ("hidden", "out"):
    assert np.array_equal(params[layer]["bias"], STUDENT[layer]["bias"])
    np.testing.assert_allclose(
        jnp.linalg.norm(params[layer]["kernel"]),
        jnp.linalg.norm(STUDENT[layer]["kernel"]),
        rtol=tolerances.norm_rtol(LR, size=SIZE),
    )
