"""End-to-end runs of the adaptive, AdaptCopy and warm-up experiments on tiny settings,
and unit tests of their helpers."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import layca_optax  # noqa: E402
from layca_optax._tree import leaves_by_path  # noqa: E402
from examples import adaptcopy, adaptive, experiment, training, warmup  # noqa: E402
from tests.examples import TINY_CNN, TINY_DATA  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end runs: seconds to minutes each

TINY_RUN = [*TINY_DATA, "--epochs", "2", *TINY_CNN]
LAYERS = ["convs/0/kernel", "convs/1/kernel", "classifier/kernel"]
STEPS = 2 * 4  # 2 epochs of 64 images in batches of 16


def check_outputs(out, figures, runs):
  """The figures are PNGs; results.json has the runs; summary.md names them."""
  for name in figures:
    assert (out / name).read_bytes().startswith(b"\x89PNG"), name
  results = json.loads((out / "results.json").read_text())
  assert list(results["runs"]) == list(runs)
  assert results["config"]["epochs"] == 2
  for run in results["runs"].values():
    assert run["layer_paths"] == LAYERS
    assert run["record_epochs"] == [0, 1, 2]
  summary = (out / "summary.md").read_text()
  assert all(f"| {name} |" in summary for name in runs)
  return results


def one_step_angle(tx, grads_scale=1.0):
  """The angle by which one update of ``tx`` turns a 3x3 kernel."""
  params = {"w": jnp.eye(3)}
  grads = {"w": grads_scale * jnp.arange(9.0).reshape(3, 3)}
  updates, _ = tx.update(grads, tx.init(params), params)
  return float(layca_optax.rotation_angle(optax.apply_updates(params, updates), params)["w"])


CONTEXT = experiment.RunContext(epochs=10, steps_per_epoch=5, layer_order=("w",))


# ---------------------------------------------------------------- adaptive (Figure 6)


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("adaptive")
  histories = adaptive.main([*TINY_RUN, "--methods", "adam,RMSProp", "--out", str(out)])
  return out, histories


def test_adaptive_writes_outputs(adaptive_run):
  out, histories = adaptive_run
  runs = ["Adam", "RMSProp", "Adam + Layca", "RMSProp + Layca"]
  assert list(histories) == runs
  results = check_outputs(out, ["layer_rotation.png"], runs)
  spread = results["rotation_spread"]["Adam + Layca"]
  assert 0.0 <= spread["min"] <= spread["max"] and spread["min_over_max"] <= 1.0


def test_adaptive_layca_runs_rotate_every_layer(adaptive_run):
  _, histories = adaptive_run
  for name in ("Adam + Layca", "RMSProp + Layca"):
    assert all(d > 0.0 for d in histories[name].cosine_distances[-1])


def test_method_names_accept_any_case_and_reject_unknown():
  assert adaptive.method_names("adam,RMSPROP, adagrad") == ("Adam", "RMSProp", "Adagrad")
  with pytest.raises(argparse.ArgumentTypeError, match="unknown method"):
    adaptive.method_names("adam,sgd")


def test_adaptive_runs_and_rates():
  runs = adaptive.runs(
      ("Adam", "Adagrad"), {"Adam": 0.01, "Adagrad": 0.1}, 3.0**-5, sgd_reference_lr=0.1
  )
  assert list(runs) == [
      "Adam", "Adagrad", "Adam + Layca", "Adagrad + Layca", adaptive.SGD_REFERENCE
  ]
  # With Layca every step turns the kernel by arctan(rho), whatever the base's scale.
  for scale in (1e-3, 1e3):
    assert one_step_angle(runs["Adagrad + Layca"](CONTEXT), scale) == pytest.approx(
        math.atan(3.0**-5), rel=1e-4
    )
  assert one_step_angle(runs[adaptive.SGD_REFERENCE](CONTEXT)) == pytest.approx(
      math.atan(0.1), rel=1e-4
  )
  # Plain Adam's first step is lr * g / |g| per entry: no control of the rotation.
  tx = runs["Adam"](CONTEXT)
  params, grads = {"w": jnp.ones(2)}, {"w": jnp.array([2.0, -0.5])}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.01, 0.01], rtol=1e-4)


# ---------------------------------------------------------------- AdaptCopy (Figure 7)


@pytest.fixture(scope="module")
def adaptcopy_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("adaptcopy")
  return out, adaptcopy.main([*TINY_RUN, "--out", str(out)])


def test_adaptcopy_writes_outputs(adaptcopy_run):
  out, _ = adaptcopy_run
  results = check_outputs(
      out, ["layer_rotation.png", "rotation_rates.png", "training.png"],
      [adaptcopy.ADAM, adaptcopy.COPY, adaptcopy.REFERENCE],
  )
  assert set(results["replay_error_degrees"]) == set(LAYERS)


def test_adaptcopy_rotates_each_layer_by_adams_angle_at_each_step(adaptcopy_run):
  _, histories = adaptcopy_run
  adam, copy = histories[adaptcopy.ADAM], histories[adaptcopy.COPY]
  for path in LAYERS:
    assert len(adam.rotation_rates[path]) == len(copy.rotation_rates[path]) == STEPS
    assert min(adam.rotation_rates[path]) > 0.0
    np.testing.assert_allclose(
        copy.rotation_rates[path], adam.rotation_rates[path], rtol=1e-3, atol=1e-6
    )
  reference = histories[adaptcopy.REFERENCE].rotation_rates[LAYERS[0]]
  np.testing.assert_allclose(reference, math.atan(3.0**-3), rtol=1e-4)


def test_sgd_amom_is_adams_first_moment_without_debiasing():
  params = {"w": jnp.zeros(2)}
  for momentum in (0.9, 0.0):
    tx = adaptcopy.sgd_amom(momentum)
    state, v = tx.init(params), np.zeros(2)
    for g in ([1.0, 2.0], [3.0, -1.0], [0.5, 0.5]):
      updates, state = tx.update({"w": jnp.array(g)}, state, params)
      v = momentum * v + (1 - momentum) * np.array(g)  # Supplementary B.4
      np.testing.assert_allclose(updates["w"], v, rtol=1e-6)


class _WithBias(nnx.Module):
  def __init__(self, rngs):
    self.layers = nnx.List([nnx.Linear(3, 3, rngs=rngs), nnx.Linear(3, 2, rngs=rngs)])

  def __call__(self, x):
    return self.layers[1](self.layers[0](x))


def test_replayed_angles_match_an_nnx_state_with_none_for_unrecorded_leaves():
  model = _WithBias(nnx.Rngs(0))
  params = training.params_of(model)
  recorded = {"layers/0/kernel": [0.1, 0.2], "layers/1/kernel": [0.3, 0.4]}
  angles = adaptcopy.replayed_angles(params, recorded)
  assert angles["layers"][0]["bias"] is None and angles["layers"][1]["bias"] is None
  np.testing.assert_array_equal(angles["layers"][1]["kernel"], [0.3, 0.4])
  # Through nnx.Optimizer: kernels turn by the recorded angles, biases stay (default 0).
  before = nnx.to_pure_dict(params)
  optimizer = nnx.Optimizer(model, adaptcopy.adaptcopy(params, recorded), wrt=nnx.Param)
  grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((4, 3))) ** 2))(model)
  optimizer.update(model, grads)
  after = nnx.to_pure_dict(training.params_of(model))
  angle = leaves_by_path(layca_optax.rotation_angle(after, before))
  assert angle["layers/0/kernel"] == pytest.approx(0.1, rel=1e-4)
  assert angle["layers/1/kernel"] == pytest.approx(0.3, rel=1e-4)
  for layer in (0, 1):
    np.testing.assert_array_equal(
        after["layers"][layer]["bias"], before["layers"][layer]["bias"]
    )


def test_replayed_angles_reject_unknown_paths():
  params = {"a": {"kernel": jnp.ones((2, 2))}}
  with pytest.raises(ValueError, match="not leaves of the params"):
    adaptcopy.replayed_angles(params, {"b/kernel": [0.1]})


# ---------------------------------------------------------------- warm-up (Figure 4)


@pytest.fixture(scope="module")
def warmup_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("warmup")
  histories = warmup.main([*TINY_RUN, "--warmup-epochs", "1", "--out", str(out)])
  return out, histories


def test_warmup_writes_outputs(warmup_run):
  out, _ = warmup_run
  runs = ["SGD, no warm-up", "SGD, 1-epoch warm-up", warmup.LAYCA_RUN]
  results = check_outputs(
      out, ["layer_rotation.png", "rotation_rates.png", "training.png"], runs
  )
  early = results["early_rotation"][warmup.LAYCA_RUN]
  assert set(early) == set(LAYERS)
  # Layca turns every layer by arctan(rho(0)) per step: 2.12 degrees at 3**-3.
  assert early[LAYERS[0]]["max_step_degrees"] == pytest.approx(
      math.degrees(math.atan(3.0**-3)), rel=1e-4
  )


def test_warmup_sgd_starts_at_a_tenth_of_the_rate():
  runs = warmup.runs(sgd_lr=9.0, warmup_epochs=(2,), layca_lr=0.1)
  assert list(runs) == ["SGD, no warm-up", "SGD, 2-epoch warm-up", warmup.LAYCA_RUN]
  params, grads = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}

  def first_updates(tx, steps):
    state, out = tx.init(params), []
    for _ in range(steps):
      updates, state = tx.update(grads, state, params)
      out.append(float(updates["w"][0]))
    return out

  warm = first_updates(runs["SGD, 2-epoch warm-up"](CONTEXT), 11)
  np.testing.assert_allclose(warm[0], -0.9, rtol=1e-5)  # lr / 10 at step 0
  np.testing.assert_allclose(warm[10], -9.0, rtol=1e-5)  # full rate after 2 epochs
  assert all(a > b for a, b in zip(warm[:10], warm[1:11]))  # a linear ramp
  np.testing.assert_allclose(first_updates(runs["SGD, no warm-up"](CONTEXT), 1), [-9.0])
