"""plot_layer_rotation_curves and plot_rotation_rates: the paper's figure, headless."""

import importlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layca_optax as lo

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from layca_optax import _plotting  # noqa: E402

VIRIDIS = matplotlib.colormaps["viridis"]


def curves_of(num_layers=4, num_steps=5):
  steps = [10 * t for t in range(num_steps)]
  values = {
      f"layers/{i}/kernel": [min(1.0, 0.02 * (i + 1) * t) for t in range(num_steps)]
      for i in range(num_layers)
  }
  return lo.LayerRotationCurves.from_values(steps, values)


def test_one_line_per_layer_in_depth_order_from_dark_to_yellow():
  curves = curves_of(num_layers=5)
  ax = lo.plot_layer_rotation_curves(curves)
  assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
  assert len(ax.lines) == 5
  assert [line.get_label() for line in ax.lines] == curves.paths
  colours = [matplotlib.colors.to_rgba(line.get_color()) for line in ax.lines]
  np.testing.assert_allclose(colours[0], VIRIDIS(0.0))
  np.testing.assert_allclose(colours[-1], VIRIDIS(1.0))
  np.testing.assert_allclose(colours[2], VIRIDIS(0.5))
  for line, path in zip(ax.lines, curves.paths):
    np.testing.assert_array_equal(line.get_ydata(), curves.values[path])
    np.testing.assert_array_equal(line.get_xdata(), curves.steps)
  assert ax.get_ylim() == (0.0, 1.0)
  assert ax.get_xlabel() == "Step" and ax.get_ylabel() == "Cosine distance"
  colorbar_axes = [a for a in ax.figure.axes if a is not ax]
  assert len(colorbar_axes) == 1
  assert colorbar_axes[0].get_ylabel() == "first layer -> last layer"


def test_epochs_title_legend_and_given_axes():
  fig = Figure()
  ax = fig.subplots()
  out = lo.plot_layer_rotation_curves(
      curves_of(), ax, steps_per_epoch=10, title="run", colorbar=False, legend=True
  )
  assert out is ax and len(fig.axes) == 1
  assert ax.get_xlabel() == "Epoch" and ax.get_title() == "run"
  np.testing.assert_array_equal(ax.lines[0].get_xdata(), [0, 1, 2, 3, 4])
  assert [t.get_text() for t in ax.get_legend().get_texts()] == curves_of().paths


def test_recorded_curves_plot_and_save_a_png(tmp_path):
  init = {f"Dense_{i}": {"kernel": np.eye(3, dtype=np.float32) + i} for i in range(3)}
  curves = lo.LayerRotationCurves(init)
  curves.record(0, init)
  curves.record(1, jax.tree.map(lambda x: x + jnp.arange(9.0).reshape(3, 3), init))
  ax = lo.plot_layer_rotation_curves(curves)
  ax.figure.savefig(tmp_path / "curves.png")
  assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
  assert len(ax.lines) == 3


@pytest.mark.slow
def test_plotting_needs_no_pyplot():
  # Without pyplot no backend is ever selected or switched (matplotlib.get_backend() would
  # itself import pyplot, so the check is on sys.modules).
  code = (
      "import sys, numpy as np, layca_optax as lo\n"
      "c = lo.LayerRotationCurves.from_values([0, 1], {'a': [0.0, 0.5]})\n"
      "lo.plot_layer_rotation_curves(c).figure.savefig('/dev/null', format='png')\n"
      "lo.plot_rotation_rates({'a': np.array([0.1, 0.2])}, log_scale=True).figure.savefig("
      "'/dev/null', format='png')\n"
      "print('matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["True", "False"]


def test_rotation_rates_from_stacked_records():
  records = [
      {"stem": {"kernel": jnp.full((), 1e-3 * t), "bias": None},
       "head": {"kernel": jnp.full((), 2e-3 * t), "bias": None},
       "blocks": {"kernel": jnp.full((2,), 3e-3 * t), "bias": None}}
      for t in range(1, 6)
  ]
  rates = jax.tree.map(lambda *xs: jnp.stack(xs), *records)
  order = ["stem/kernel", "stem/bias", "blocks/kernel", "head/kernel"]
  ax = lo.plot_rotation_rates(rates, layer_order=order, log_scale=True, steps=range(1, 6))
  names = [line.get_label() for line in ax.lines]
  assert names == ["stem/kernel", "blocks/kernel[0]", "blocks/kernel[1]", "head/kernel"]
  np.testing.assert_allclose(ax.lines[0].get_ydata(), np.degrees(1e-3 * np.arange(1, 6)), rtol=1e-6)
  np.testing.assert_allclose(matplotlib.colors.to_rgba(ax.lines[-1].get_color()), VIRIDIS(1.0))
  assert ax.get_yscale() == "log" and ax.get_xlabel() == "Step"
  radians = lo.plot_rotation_rates(
      {"a": np.zeros(4), "b": np.ones(4)}, degrees=False, steps_per_epoch=2
  )
  assert radians.get_ylabel() == "Rotation per step (rad)" and radians.get_xlabel() == "Epoch"
  np.testing.assert_array_equal(radians.lines[1].get_xdata(), [0, 0.5, 1, 1.5])


def test_bad_input_errors_show_the_fix():
  with pytest.raises(TypeError, match="LayerRotationCurves.from_values"):
    lo.plot_layer_rotation_curves({"a": [0.0, 1.0]})
  with pytest.raises(ValueError, match="not list"):
    lo.plot_rotation_rates({"a": np.zeros(3), "b": np.zeros(3)}, layer_order=["a"])
  with pytest.raises(ValueError, match="single value.*jnp.stack"):
    lo.plot_rotation_rates({"a": np.float32(0.1)})
  with pytest.raises(ValueError, match="steps_per_epoch must be positive"):
    lo.plot_layer_rotation_curves(curves_of(), steps_per_epoch=0)


def test_missing_matplotlib_says_how_to_install(monkeypatch):
  real_import = importlib.import_module

  def no_matplotlib(name, *args):
    if name.startswith("matplotlib"):
      raise ImportError(f"No module named {name!r}")
    return real_import(name, *args)

  monkeypatch.setattr(_plotting.importlib, "import_module", no_matplotlib)
  with pytest.raises(ImportError, match=r'pip install "layca_optax\[plot\]"'):
    lo.plot_layer_rotation_curves(curves_of())
