"""End-to-end smoke tests of the rate-configuration and weight-decay experiments, and their
helpers, on a few random images."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from examples import plotting, training  # noqa: E402
from examples import rate_configurations as rc  # noqa: E402
from examples import weight_decay as wd  # noqa: E402
from tests.examples import PNG, TINY_RUN  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end runs: seconds to minutes each



def history(finals, accuracy=0.5):
  return training.History(
      layer_paths=[f"l{i}" for i in range(len(finals))], record_epochs=[0, 1],
      cosine_distances=[[0.0] * len(finals), list(finals)],
      final_test_accuracy=accuracy, final_train_accuracy=1.0,
  )


# rate_configurations ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def rates_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("rates")
  argv = [*TINY_RUN, "--rates", "3^-1,3^-3", "--alphas=-0.6,0,0.6", "--out", str(out)]
  return out, rc.main(argv)


def test_rate_configurations_writes_every_output(rates_run):
  out, histories = rates_run
  for name in ("layer_rotation", "rho_sweep", "alpha_sweep", "accuracy"):
    assert (out / f"{name}.png").read_bytes().startswith(PNG)
  results = json.loads((out / "results.json").read_text())
  # The two sweeps share rho(0) = 3^-3, alpha = 0: four runs, not five.
  assert set(results["runs"]) == set(histories) == {
      "rho(0)=3^-1, alpha=0", "rho(0)=3^-3, alpha=0",
      "rho(0)=3^-3, alpha=-0.6", "rho(0)=3^-3, alpha=0.6",
  }
  assert results["config"]["rates"] == ["3^-1", "3^-3"]
  sweeps = results["sweeps"]
  assert [e["rho"] for e in sweeps["rho"]] == pytest.approx([3.0**-1, 3.0**-3])
  assert [e["alpha"] for e in sweeps["alpha"]] == [-0.6, 0.0, 0.6]
  for entry in sweeps["rho"] + sweeps["alpha"]:
    assert set(entry) == {
        "rho", "alpha", "run", "test_accuracy", "min_cosine_distance",
        "mean_cosine_distance",
    }
  summary = (out / "summary.md").read_text()
  assert summary.startswith("# Layer rotation rate configurations")
  assert "Best test accuracy: **" in summary and "Rank correlation" in summary


def test_rate_configurations_rotation_follows_the_configuration(rates_run):
  _, histories = rates_run
  finals = {n: list(h.final_cosine_distances().values()) for n, h in histories.items()}
  # alpha = 0: a larger rho(0) rotates every layer further.
  assert all(
      a > b for a, b in zip(finals["rho(0)=3^-1, alpha=0"], finals["rho(0)=3^-3, alpha=0"])
  )
  # alpha < 0 slows the last layer, alpha > 0 the first (to 0.4**5 of rho(0)).
  assert finals["rho(0)=3^-3, alpha=-0.6"][-1] < 0.1 * finals["rho(0)=3^-3, alpha=0"][-1]
  assert finals["rho(0)=3^-3, alpha=0.6"][0] < 0.1 * finals["rho(0)=3^-3, alpha=0"][0]


def test_only_one_sweep_is_allowed(tmp_path):
  histories = rc.main([*TINY_RUN, "--rates", "0.1", "--alphas", "", "--out", str(tmp_path)])
  assert list(histories) == ["rho(0)=0.1, alpha=0"]
  assert not (tmp_path / "alpha_sweep.png").exists()
  assert (tmp_path / "rho_sweep.png").read_bytes().startswith(PNG)
  with pytest.raises(SystemExit):
    rc.parse_args(["--rates", "", "--alphas", ""])


@pytest.mark.parametrize(
    "text, value",
    [("3^-3", 3.0**-3), ("3**-2", 3.0**-2), ("0.25", 0.25), (" 2^3 ", 8.0), ("1e-2", 0.01)],
)
def test_parse_rate(text, value):
  assert rc.parse_rate(text) == pytest.approx(value)


def test_format_rate():
  assert rc.format_rate(3.0**-3) == "3^-3"
  assert rc.format_rate(1.0) == "3^0"
  assert rc.format_rate(0.1) == "0.1"
  assert rc.format_rate(rc.parse_rate("3^-5")) == "3^-5"


def test_sweeps_share_configurations_once():
  sweeps = rc.sweeps(rates=(3.0**-5, 3.0**-3), alphas=(0.3, 0.0), alpha_rate=3.0**-3)
  assert [c.rho for c in sweeps["rho"]] == [3.0**-3, 3.0**-5]  # largest first
  assert [c.alpha for c in sweeps["alpha"]] == [0.0, 0.3]
  configs = rc.configurations(sweeps)
  assert [c.name for c in configs] == [
      "rho(0)=3^-3, alpha=0", "rho(0)=3^-5, alpha=0", "rho(0)=3^-3, alpha=0.3",
  ]


def test_runs_use_the_alpha_multipliers():
  """A Layca step turns layer l by exactly arctan(m_l rho): the factories pass alpha on."""
  import jax.numpy as jnp
  import optax

  import layca_optax
  from examples import experiment

  order = ("a", "b", "c")
  context = experiment.RunContext(epochs=1, steps_per_epoch=1, layer_order=order)
  config = rc.Configuration(rho=0.1, alpha=0.6)
  tx = rc.runs([config])[config.name](context)
  params = {k: jnp.eye(3, dtype=jnp.float32) + i for i, k in enumerate(order)}
  grads = {k: jnp.arange(9.0, dtype=jnp.float32).reshape(3, 3) for k in order}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  expected = np.arctan(0.1 * np.asarray(layca_optax.alpha_multipliers(3, 0.6)))
  angles = [float(layca_optax.rotation_angle(params[k], new[k])) for k in order]
  np.testing.assert_allclose(angles, expected, rtol=2e-3)


def test_rank_correlation():
  assert rc.rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
  assert rc.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert np.isnan(rc.rank_correlation([1, 2], [1, 2]))
  assert np.isnan(rc.rank_correlation([1, 1, 1], [1, 2, 3]))
  assert rc.rank_correlation([1, 1, 2], [1, 1, 3]) == pytest.approx(1.0)


def test_claim_notes_name_the_best_run_and_check_the_rule():
  histories = {
      "far": history([0.5, 0.6], accuracy=0.9),
      "near": history([0.01, 0.4], accuracy=0.8),
      "nowhere": history([0.001, 0.002], accuracy=0.7),
  }
  notes = "\n".join(rc.claim_notes(histories))
  assert "Best test accuracy: **far** (90.0 %)" in notes
  assert "0.500, 0.600" in notes
  assert "as the paper's rule of thumb predicts" in notes
  assert "test accuracy: 1.00" in notes
  histories["near"] = history([0.01, 0.4], accuracy=0.95)
  assert "does not hold exactly" in "\n".join(rc.claim_notes(histories))


# weight_decay -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wd_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("weight_decay")
  argv = [*TINY_RUN, "--sgd-lrs", "3^-1,1", "--weight-decays", "0.03", "--out", str(out)]
  return out, wd.main(argv)


def test_weight_decay_writes_every_output(wd_run):
  out, histories = wd_run
  assert list(histories) == [
      "SGD, lr=3^-1", "SGD, lr=3^0", "SGD+wd 0.03, lr=3^-1", "Layca, rho(0)=3^-3",
  ]
  for name in ("layer_rotation", "layer_rotation_zoom", "training"):
    assert (out / f"{name}.png").read_bytes().startswith(PNG)
  results = json.loads((out / "results.json").read_text())
  assert set(results["runs"]) == set(histories)
  measured = results["weight_decay"]["SGD+wd 0.03, lr=3^-1"]
  assert measured["reference_sgd_run"] == "SGD, lr=3^-1"
  assert measured["num_layers"] == 3
  assert measured["best_sgd_run"] in histories
  summary = (out / "summary.md").read_text()
  assert summary.startswith("# SGD with and without weight decay")
  assert "points from Layca" in summary and "(no weight decay)" in summary


def test_weight_decay_without_sgd_runs(tmp_path):
  histories = wd.main([*TINY_RUN, "--sgd-lrs", "", "--out", str(tmp_path)])
  assert list(histories) == ["SGD+wd 0.03, lr=3^-1", "Layca, rho(0)=3^-3"]
  measured = json.loads((tmp_path / "results.json").read_text())["weight_decay"]
  assert measured["SGD+wd 0.03, lr=3^-1"]["reference_sgd_run"] is None


def test_weight_decay_run_is_sgd_on_the_decayed_gradient():
  """The weight-decay factory is w <- w - lr (g + wd w) on kernels, biases undecayed."""
  import jax.numpy as jnp

  from examples import experiment

  context = experiment.RunContext(epochs=1, steps_per_epoch=1, layer_order=("k",))
  tx = wd.runs(sgd_lrs=(), wd_lr=0.5, weight_decays=(0.1,))["SGD+wd 0.1, lr=0.5"](context)
  params = {"k": jnp.full((2, 2), 2.0), "b": jnp.full((2,), 2.0)}
  grads = {"k": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["k"], -0.5 * (1.0 + 0.1 * 2.0))
  np.testing.assert_allclose(updates["b"], -0.5)


def test_compare_rotation_and_closest_run():
  ours, theirs = history([0.2, 0.1, 0.5]), history([0.1, 0.2, 0.3])
  assert wd.compare_rotation(ours, theirs) == pytest.approx({
      "layers_further": 2, "num_layers": 3, "mean_cosine_distance": 0.8 / 3,
      "reference_mean_cosine_distance": 0.2, "min_cosine_distance": 0.1,
      "reference_min_cosine_distance": 0.1,
  })
  assert wd.closest_sgd_run([0.1, 1.0], 0.3) == "SGD, lr=0.1"
  assert wd.closest_sgd_run([3.0**-2, 3.0**-1, 1.0], 3.0**-1) == "SGD, lr=3^-1"
  assert wd.closest_sgd_run([], 0.3) is None


def test_zoom_limits():
  assert plotting.zoom_limits({"a": history([0.1, 0.2]), "b": history([0.05])}) == pytest.approx(
      (0.0, 0.22)
  )
  assert plotting.zoom_limits({"a": history([0.0])}) == (0.0, 1e-3)


def test_comparison_figure_ylim(tmp_path):
  from examples import plotting

  runs = {"a": history([0.01, 0.02]), "b": history([0.03, 0.01])}
  default = plotting.save_comparison_figure(tmp_path / "default.png", runs)
  assert default.axes[0].get_ylim() == pytest.approx((0.0, 1.0))
  zoomed = plotting.save_comparison_figure(tmp_path / "zoom.png", runs, ylim=(0.0, 0.05))
  for ax in zoomed.axes[:2]:
    assert ax.get_ylim() == pytest.approx((0.0, 0.05))
  assert (tmp_path / "zoom.png").read_bytes().startswith(PNG)
