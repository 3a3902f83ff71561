"""The MLP-features (Linen) and LARS experiments end to end, and the LARS transforms."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from flax import nnx  # noqa: E402

from examples import data as data_lib  # noqa: E402
from examples import experiment, lars, linen, mlp_features, models, optimizers  # noqa: E402
from tests.examples import PNG, TINY_CNN, TINY_DATA  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end runs: seconds to minutes each



def _norm(x) -> float:
  return float(np.linalg.norm(np.asarray(x, np.float64)))


# -- examples/mlp_features.py (Flax Linen) -----------------------------------------------


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("mlp_features")
  histories = mlp_features.main([
      *TINY_DATA, "--epochs", "2", "--hidden", "16", "--rates", "3^-2,3**-4",
      "--out", str(out),
  ])
  return out, histories


def test_mlp_features_writes_its_outputs(mlp_run):
  out, histories = mlp_run
  assert list(histories) == ["Layca, rho(0) = 3^-2", "Layca, rho(0) = 3^-4"]
  for name in ("features.png", "layer_rotation.png"):
    assert (out / name).read_bytes().startswith(PNG)
  results = json.loads((out / "results.json").read_text())
  assert set(results) >= {"config", "runs", "neurons", "hidden_cosine_distance"}
  assert len(results["neurons"]) == mlp_features.NEURONS
  assert results["config"]["rates"] == pytest.approx([3.0**-2, 3.0**-4])
  for run in results["runs"].values():
    assert run["layer_paths"] == ["hidden/kernel", "classifier/kernel"]
    assert run["record_epochs"] == [0, 1, 2]
    assert run["cosine_distances"][0] == [0.0, 0.0]
  summary = (out / "summary.md").read_text()
  assert summary.startswith("# Layer rotation and the features")
  assert "hidden layer's final cosine distance" in summary


def test_mlp_features_larger_rate_rotates_the_hidden_layer_more(mlp_run):
  _, histories = mlp_run
  large, small = (h.final_cosine_distances()["hidden/kernel"] for h in histories.values())
  assert large > small > 0.0


def test_mlp_features_run_starts_every_rate_from_one_initialisation():
  data = data_lib.synthetic_dataset()
  histories, features, neurons = mlp_features.run(
      data, rates=(0.1, 0.01), epochs=1, batch_size=16, hidden=8, neurons=3,
      progress=False,
  )
  assert list(features) == [mlp_features.INITIAL_ROW, *histories]
  assert neurons == mlp_features.choose_neurons(8, 3, seed=0)
  model = linen.MLP(hidden=8)
  init = linen.init_variables(model, data.x_train, seed=0)["params"]
  kernel = np.asarray(init["hidden"]["kernel"])
  for i, neuron in enumerate(neurons):
    np.testing.assert_array_equal(
        features[mlp_features.INITIAL_ROW][i], kernel[:, neuron].reshape(8, 8, 1)
    )
  for name in histories:
    assert features[name].shape == (3, 8, 8, 1)
    assert not np.array_equal(features[name], features[mlp_features.INITIAL_ROW])


def test_choose_neurons_is_seeded_distinct_and_sorted():
  chosen = mlp_features.choose_neurons(784, 5, seed=3)
  assert chosen == mlp_features.choose_neurons(784, 5, seed=3)
  assert chosen == sorted(set(chosen)) and len(chosen) == 5
  assert mlp_features.choose_neurons(3, 5) == [0, 1, 2]


@pytest.mark.parametrize(
    "text, value", [("3^-2.5", 3.0**-2.5), ("3**-3", 3.0**-3), ("0.05", 0.05)]
)
def test_parse_rate(text, value):
  assert experiment.parse_rate(text) == pytest.approx(value)


def test_run_names_show_powers_of_three():
  assert mlp_features.run_name(3.0**-2.5) == "Layca, rho(0) = 3^-2.5"
  assert mlp_features.run_name(0.05) == "Layca, rho(0) = 0.05"


def test_linen_loop_without_batch_norm_and_with_plain_sgd():
  data = data_lib.synthetic_dataset()
  model = linen.MLP(hidden=8, batch_norm=False)
  variables = linen.init_variables(model, data.x_train)
  assert set(variables) == {"params"}
  state = linen.create_state(model, variables, optax.sgd(0.1))
  state, history = linen.train_state_loop(
      state, data, epochs=2, batch_size=16, progress=False
  )
  assert int(state.step) == 2 * data_lib.num_batches(len(data.x_train), 16)
  assert history.layer_paths == ["hidden/kernel", "classifier/kernel"]
  assert history.train_loss[1] < history.train_loss[0]
  assert 0.0 <= history.final_test_accuracy <= 1.0


def test_linen_loop_updates_the_batch_norm_statistics():
  data = data_lib.synthetic_dataset()
  model = linen.MLP(hidden=8)
  variables = linen.init_variables(model, data.x_train)
  state = linen.create_state(model, variables, optax.sgd(0.1))
  state, _ = linen.train_state_loop(state, data, epochs=1, batch_size=16, progress=False)
  before = variables["batch_stats"]["norm"]["mean"]
  assert not np.allclose(state.batch_stats["norm"]["mean"], before)


# -- examples/lars.py --------------------------------------------------------------------


@pytest.fixture(scope="module")
def lars_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("lars")
  histories = lars.main([
      *TINY_DATA, "--epochs", "2", *TINY_CNN,
      "--out", str(out),
  ])
  return out, histories


def test_lars_writes_its_outputs(lars_run):
  out, histories = lars_run
  assert list(histories) == [lars.LAYCA_RUN, lars.LARS_RUN]
  for name in ("layer_rotation.png", "weight_norms.png"):
    assert (out / name).read_bytes().startswith(PNG)
  results = json.loads((out / "results.json").read_text())
  assert set(results) >= {"config", "runs", "weight_norms", "comparison"}
  assert results["config"]["init_scale"] == lars.INIT_SCALE
  assert set(results["weight_norms"]) == set(histories)
  for run_name, norms in results["weight_norms"].items():
    assert list(norms) == sorted(histories[run_name].layer_paths)
    assert all(len(values) == 3 for values in norms.values())
  summary = (out / "summary.md").read_text()
  assert summary.startswith("# LARS / NG_adap vs Layca")
  assert "LARS minus Layca" in summary


def test_lars_norms_grow_at_most_by_the_cap_and_layca_norms_stay(lars_run):
  out, _ = lars_run
  results = json.loads((out / "results.json").read_text())
  steps = 2 * data_lib.num_batches(64, 16)
  for values in results["weight_norms"][lars.LAYCA_RUN].values():
    np.testing.assert_allclose(values, values[0], rtol=1e-5)
  for values in results["weight_norms"][lars.LARS_RUN].values():
    assert values[-1] <= values[0] * (1 + steps * lars.MAX_GROWTH) * (1 + 1e-5)


def test_scale_kernels_returns_a_scaled_copy():
  model = models.VGGNet((4,), 1, rngs=nnx.Rngs(0))
  kernel = np.asarray(model.classifier.kernel[...])
  scaled = lars.scale_kernels(model, 0.25)
  np.testing.assert_allclose(scaled.classifier.kernel[...], 0.25 * kernel, rtol=1e-6)
  np.testing.assert_array_equal(model.classifier.kernel[...], kernel)


def test_norm_recorder_starts_a_run_at_epoch_zero():
  model = models.VGGNet((4,), 1, rngs=nnx.Rngs(0))
  recorder = lars.NormRecorder()
  for epoch in (0, 1, 0, 1, 2):
    recorder(epoch, model)
  assert [len(run["classifier/kernel"]) for run in recorder.runs] == [2, 3]
  assert recorder.runs[0]["classifier/kernel"][0] == pytest.approx(
      _norm(model.classifier.kernel[...]), rel=1e-6
  )


# -- optimizers.cap_norm_growth and optimizers.lars_ng_adap ------------------------------


def _params(seed: int = 0):
  rng = np.random.default_rng(seed)
  return {
      "kernel": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
      "bias": jnp.asarray(rng.normal(size=5), jnp.float32),
  }


def test_cap_norm_growth_caps_an_increase_at_exactly_the_limit():
  w0 = _params()
  tx = optimizers.cap_norm_growth(1e-4)
  state = tx.init(w0)
  w = {k: 2.0 * v for k, v in w0.items()}  # a later step: ||w|| != ||w_0||
  u = {k: 0.3 * v + 0.1 for k, v in w.items()}  # grows the norm by far more than the cap
  capped, _ = tx.update(u, state, w)
  new = np.asarray(w["kernel"] + capped["kernel"], np.float64)
  limit = _norm(w["kernel"]) + 1e-4 * _norm(w0["kernel"])
  assert _norm(new) == pytest.approx(limit, rel=1e-6)
  # Scaled back along w + u: same direction.
  uncapped = np.asarray(w["kernel"] + u["kernel"], np.float64)
  cosine = np.sum(new * uncapped) / (_norm(new) * _norm(uncapped))
  assert cosine == pytest.approx(1.0, abs=1e-6)
  # Not a kernel: not capped.
  np.testing.assert_array_equal(capped["bias"], u["bias"])


@pytest.mark.parametrize("factor", [-0.5, 1e-6])
def test_cap_norm_growth_passes_decreases_and_small_increases(factor):
  w = _params()
  tx = optimizers.cap_norm_growth(1e-4)
  u = {k: factor * v for k, v in w.items()}  # norm x0.5, or x(1 + 1e-6) < 1 + 1e-4
  out, _ = tx.update(u, tx.init(w), w)
  np.testing.assert_array_equal(out["kernel"], u["kernel"])


def test_cap_norm_growth_keeps_zero_updates_zero():
  w = _params()
  tx = optimizers.cap_norm_growth()
  zeros = {k: jnp.zeros_like(v) for k, v in w.items()}
  out, _ = tx.update(zeros, tx.init(w), w)
  np.testing.assert_array_equal(out["kernel"], 0.0)


def test_lars_ng_adap_step_is_the_normalised_gradient_without_projection():
  w = _params()
  rng = np.random.default_rng(1)
  # A gradient with a large component along w: Layca would remove it, LARS keeps it.
  g = {k: jnp.asarray(0.5 * v + rng.normal(size=v.shape), jnp.float32) for k, v in w.items()}
  rho = 0.05
  tx = optimizers.lars_ng_adap(rho, max_growth=1.0)  # a cap that never binds here
  u, _ = tx.update(g, tx.init(w), w)
  expected = -rho * np.asarray(g["kernel"]) * _norm(w["kernel"]) / _norm(g["kernel"])
  np.testing.assert_allclose(u["kernel"], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(u["bias"], -rho * np.asarray(g["bias"]), rtol=1e-6)
  assert abs(np.sum(np.asarray(u["kernel"]) * np.asarray(w["kernel"]))) > 1e-3


def test_lars_ng_adap_caps_the_norm_growth_of_each_step():
  w = _params()
  g = {k: -v for k, v in w.items()}  # descent along +w: the norm would grow by rho ||w||
  rho = 0.05
  tx = optimizers.lars_ng_adap(rho)
  state = tx.init(w)
  for _ in range(3):
    u, state = tx.update(g, state, w)
    new = optax.apply_updates(w, u)
    limit = _norm(w["kernel"]) + 1e-4 * _norm(_params()["kernel"])
    assert _norm(new["kernel"]) == pytest.approx(limit, rel=1e-6)
    w = new


def test_lars_ng_adap_shrinking_step_is_not_capped():
  w = _params()
  rho = 0.05
  tx = optimizers.lars_ng_adap(rho)
  u, _ = tx.update(w, tx.init(w), w)  # gradient along w: the norm shrinks by rho ||w||
  np.testing.assert_allclose(u["kernel"], -rho * np.asarray(w["kernel"]), rtol=1e-5)
