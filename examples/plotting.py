"""Layer rotation curves drawn as in the paper: one line per layer, viridis by depth.

The figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``: saving
then needs no display and never switches the global backend, so the same functions work
in a headless script and in a notebook.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib import cm, colors, ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:  # plotting saved results must not need JAX
  from examples.training import History

CMAP = "viridis"
PANEL_SIZE = (4.2, 3.4)  # inches per run


def layer_colours(num_layers: int) -> np.ndarray:
  """RGBA colours from the first layer (dark) to the last (yellow)."""
  return matplotlib.colormaps[CMAP](np.linspace(0.0, 1.0, max(num_layers, 1)))


def depth_mappable(num_layers: int) -> cm.ScalarMappable:
  """What a colour bar needs to show the layer-depth colour scale."""
  norm = colors.Normalize(vmin=0, vmax=max(num_layers - 1, 1))
  return cm.ScalarMappable(norm=norm, cmap=CMAP)


def plot_layer_rotation_curves(
    ax: Axes,
    x: Sequence[float],
    curves: Sequence[Sequence[float]] | np.ndarray,
    *,
    title: str | None = None,
) -> None:
  """Draws one cosine-distance curve per layer on ``ax``.

  Args:
    ax: matplotlib axes.
    x: the record points, in epochs (e.g. ``History.record_epochs``).
    curves: ``(len(x), num_layers)`` cosine distances, input layer first (e.g.
      ``History.cosine_distances``).
    title: optional axes title.
  """
  curves = np.asarray(curves, dtype=float)
  if curves.ndim != 2 or curves.shape[0] != len(x):
    raise ValueError(
        f"curves must have shape (len(x), num_layers) = ({len(x)}, L); got {curves.shape}."
    )
  for layer, colour in enumerate(layer_colours(curves.shape[1])):
    ax.plot(x, curves[:, layer], color=colour, linewidth=1.2)
  ax.set_ylim(0.0, 1.0)
  ax.set_xlim(min(x), max(x))
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # records are whole epochs
  ax.set_xlabel("Epoch")
  ax.set_ylabel("Cosine distance")
  if title is not None:
    ax.set_title(title)


def add_depth_colour_bar(fig: Figure, axes, num_layers: int) -> None:
  """A colour bar labelled from the first to the last layer, next to ``axes``."""
  bar = fig.colorbar(depth_mappable(num_layers), ax=axes, pad=0.02, fraction=0.04)
  bar.set_ticks([0, max(num_layers - 1, 1)])
  bar.set_ticklabels(["1", str(num_layers)])
  bar.set_label("first layer -> last layer")


def run_title(name: str, history: History) -> str:
  """Panel title: the run's name and final test accuracy."""
  return f"{name}: test accuracy {100 * history.final_test_accuracy:.1f}%"


def save_comparison_figure(path: str | pathlib.Path, runs: Mapping[str, History]) -> Figure:
  """Saves the runs' layer rotation curves side by side (one panel per run) to ``path``.

  Returns the figure, e.g. to display it in a notebook.
  """
  if not runs:
    raise ValueError("save_comparison_figure needs at least one run.")
  width, height = PANEL_SIZE
  fig = Figure(figsize=(width * len(runs) + 0.8, height), layout="constrained")
  axes = fig.subplots(1, len(runs), sharey=True, squeeze=False)[0]
  for ax, (name, history) in zip(axes, runs.items()):
    plot_layer_rotation_curves(
        ax, history.record_epochs, history.cosine_distances, title=run_title(name, history)
    )
  for ax in axes[1:]:
    ax.set_ylabel("")
  num_layers = max(len(history.layer_paths) for history in runs.values())
  add_depth_colour_bar(fig, axes, num_layers)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=130)
  return fig
