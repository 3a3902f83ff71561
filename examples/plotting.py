"""Side-by-side layer rotation figures of several runs, in the paper's style.

Each panel is drawn by :func:`layca_optax.plot_layer_rotation_curves` (one line per layer,
viridis from the first layer to the last); this module only lays out the runs and adds
one shared colour bar. The figures are built with ``matplotlib.figure.Figure`` rather than
``pyplot``: saving then needs no display and never switches the global backend.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from matplotlib import cm, colors, ticker
from matplotlib.figure import Figure

import layca_optax

if TYPE_CHECKING:
  from examples.training import History

CMAP = "viridis"
PANEL_SIZE = (4.2, 3.4)  # inches per run


def history_curves(history: History) -> layca_optax.LayerRotationCurves:
  """A run's curves (recorded once per epoch) as ``LayerRotationCurves``, x in epochs."""
  values = {
      path: [row[layer] for row in history.cosine_distances]
      for layer, path in enumerate(history.layer_paths)
  }
  return layca_optax.LayerRotationCurves.from_values(history.record_epochs, values)


def add_depth_colour_bar(fig: Figure, axes, num_layers: int) -> None:
  """One colour bar labelled from the first to the last layer, shared by ``axes``."""
  norm = colors.Normalize(vmin=0, vmax=max(num_layers - 1, 1))
  bar = fig.colorbar(
      cm.ScalarMappable(norm=norm, cmap=CMAP), ax=axes, pad=0.02, fraction=0.04
  )
  bar.set_ticks([0, max(num_layers - 1, 1)])
  bar.set_ticklabels(["1", str(num_layers)])
  bar.set_label("first layer -> last layer")


def run_title(name: str, history: History) -> str:
  """Panel title: the run's name and final test accuracy."""
  return f"{name}: test accuracy {100 * history.final_test_accuracy:.1f}%"


def save_comparison_figure(
    path: str | pathlib.Path, runs: Mapping[str, History], *, columns: int | None = None
) -> Figure:
  """Saves the runs' layer rotation curves (one panel per run) to ``path``.

  Panels are laid out ``columns`` per row (default: all in one row). Returns the figure,
  e.g. to display it in a notebook.
  """
  if not runs:
    raise ValueError("save_comparison_figure needs at least one run.")
  columns = min(columns or len(runs), len(runs))
  rows = -(-len(runs) // columns)
  width, height = PANEL_SIZE
  fig = Figure(figsize=(width * columns + 0.8, height * rows), layout="constrained")
  grid = fig.subplots(rows, columns, sharey=True, squeeze=False)
  axes = grid.ravel()[: len(runs)]
  for ax in grid.ravel()[len(runs):]:
    ax.set_visible(False)
  for ax, (name, history) in zip(axes, runs.items()):
    # History records are whole epochs: one "step" per epoch puts x in epochs.
    layca_optax.plot_layer_rotation_curves(
        history_curves(history), ax, steps_per_epoch=1,
        title=run_title(name, history), colorbar=False,
    )
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  for ax in grid[:, 1:].ravel():
    ax.set_ylabel("")
  num_layers = max(len(history.layer_paths) for history in runs.values())
  add_depth_colour_bar(fig, list(grid.ravel()), num_layers)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=130)
  return fig
