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

import numpy as np
from matplotlib import cm, colors, patheffects, ticker
from matplotlib.figure import Figure

import layca_optax

if TYPE_CHECKING:
  from examples.training import History

CMAP = "viridis"
PANEL_SIZE = (4.2, 3.4)  # inches per run


def save_figure(fig: Figure, path: str | pathlib.Path) -> None:
  """Writes ``fig`` to ``path`` (a PNG at 130 dpi), creating the directory."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=130)


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


def label_line_ends(ax, min_gap: float = 0.05) -> None:
  """Writes each line's number (1 = first line drawn) at its right end, in its colour.

  Labels of lines that end close together are pushed apart to at least ``min_gap`` of
  the y range, so that every line can be told apart even where two of them overlap.
  """
  lines = [line for line in ax.get_lines() if len(line.get_xdata())]
  if not lines:
    return
  bottom, top = ax.get_ylim()
  gap = min_gap * (top - bottom)
  ends = sorted(
      (float(line.get_ydata()[-1]), number, line)
      for number, line in enumerate(lines, start=1)
  )
  positions = []
  for y, _, _ in ends:
    positions.append(max(y, positions[-1] + gap) if positions else y)
  overflow = positions[-1] - (top - gap / 2)
  if overflow > 0:  # shift the stack down to stay inside the axes
    positions = [p - overflow for p in positions]
  x_end = max(float(line.get_xdata()[-1]) for line in lines)
  left, right = ax.get_xlim()
  ax.set_xlim(left, right + 0.08 * (right - left))
  for (_, number, line), y in zip(ends, positions):
    # A dark outline keeps the light (last, yellow) layers' numbers legible on white; the
    # dark ones need none.
    red, green, blue = colors.to_rgb(line.get_color())
    light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.6
    ax.annotate(
        str(number), (x_end, y), xytext=(4, 0), textcoords="offset points",
        va="center", ha="left", fontsize="small", color=line.get_color(),
        fontweight="bold",
        path_effects=[patheffects.withStroke(linewidth=1.5, foreground="0.3")] if light else [],
    )


def zoom_limits(runs: Mapping[str, History]) -> tuple[float, float]:
  """A y range for the curves of short runs: 0 to 10 % above the largest value."""
  largest = max(
      (max(row) for h in runs.values() for row in h.cosine_distances if row), default=0.0
  )
  return 0.0, max(1.1 * largest, 1e-3)


def save_comparison_figure(
    path: str | pathlib.Path,
    runs: Mapping[str, History],
    *,
    columns: int | None = None,
    ylim: tuple[float, float] | None = None,
    zoom: bool = False,
) -> Figure:
  """Saves the runs' layer rotation curves (one panel per run) to ``path``.

  Panels are laid out ``columns`` per row (default: all in one row). The y axis goes from
  0 to 1 (the paper's style) unless ``ylim`` is given, e.g. to zoom on short runs.
  ``zoom=True`` adds, below the panels, the same panels, each with y from 0 to 10 % above
  the largest distance of its own run (:func:`zoom_limits`) and every line numbered at its
  end (1 = first layer, :func:`label_line_ends`), so that layers whose curves sit close
  together can be told apart. All panels of a column share the x axis. Returns the
  figure, e.g. to display it in a notebook.
  """
  if not runs:
    raise ValueError("save_comparison_figure needs at least one run.")
  columns = min(columns or len(runs), len(runs))
  rows = -(-len(runs) // columns)
  width, height = PANEL_SIZE
  copies = 2 if zoom else 1
  fig = Figure(figsize=(width * columns + 0.8, height * rows * copies), layout="constrained")
  grid = fig.subplots(rows * copies, columns, sharex="col", squeeze=False)
  for copy in range(copies):
    block = grid[copy * rows:(copy + 1) * rows]
    for ax in block.ravel()[len(runs):]:
      ax.set_visible(False)
    for ax, (name, history) in zip(block.ravel(), runs.items()):
      # History records are whole epochs: one "step" per epoch puts x in epochs.
      layca_optax.plot_layer_rotation_curves(
          history_curves(history), ax, steps_per_epoch=1,
          title=run_title(name, history) + (" (zoomed)" if copy else ""), colorbar=False,
      )
      ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
      if copy:  # each zoomed panel on its own run's range
        ax.set_ylim(*zoom_limits({name: history}))
        label_line_ends(ax)
      else:
        if ylim is not None:
          ax.set_ylim(*ylim)
        if zoom:  # the x axis is read on the zoomed row below, shared with this one
          ax.set_xlabel("")
  return _finish_run_grid(fig, grid, runs, path)


def _finish_run_grid(
    fig: Figure, grid: np.ndarray, runs: Mapping[str, History], path: str | pathlib.Path
) -> Figure:
  """One y label per row, one depth colour bar for the grid of per-run panels, saved."""
  for ax in grid[:, 1:].ravel():
    ax.set_ylabel("")
  num_layers = max(len(history.layer_paths) for history in runs.values())
  add_depth_colour_bar(fig, list(grid.ravel()), num_layers)
  save_figure(fig, path)
  return fig


#: History attributes that :func:`save_training_curves_figure` can draw, and their labels.
TRAINING_METRICS = {
    "train_loss": "Training loss",
    "train_accuracy": "Training accuracy",
    "test_accuracy": "Test accuracy",
}


def save_training_curves_figure(
    path: str | pathlib.Path,
    runs: Mapping[str, History],
    *,
    metrics: tuple[str, ...] = ("train_loss", "train_accuracy", "test_accuracy"),
    log_loss: bool = True,
) -> Figure:
  """Saves per-epoch training curves: one panel per metric, one line per run.

  ``metrics`` are names of :data:`TRAINING_METRICS` (per-epoch lists of a ``History``);
  epochs without a value (``None``: not evaluated) are skipped. Returns the figure.
  """
  if not runs:
    raise ValueError("save_training_curves_figure needs at least one run.")
  unknown = [m for m in metrics if m not in TRAINING_METRICS]
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; choose from {list(TRAINING_METRICS)}.")
  width, height = PANEL_SIZE
  fig = Figure(figsize=(width * len(metrics), height), layout="constrained")
  axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
  for ax, metric in zip(axes, metrics):
    for name, history in runs.items():
      points = [
          (epoch, value)
          for epoch, value in zip(history.epochs, getattr(history, metric))
          if value is not None
      ]
      if points:
        ax.plot(*zip(*points), marker="o", markersize=3, label=name)
    if metric == "train_loss" and log_loss:
      ax.set_yscale("log")
    ax.set_xlabel("Epoch")
    ax.set_ylabel(TRAINING_METRICS[metric])
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize="small")
  save_figure(fig, path)
  return fig


def save_rotation_rates_figure(
    path: str | pathlib.Path,
    runs: Mapping[str, History],
    *,
    columns: int | None = None,
    log_scale: bool = True,
) -> Figure:
  """Saves each run's per-step rotation of every layer (one panel per run, x in epochs).

  The runs must have been trained with ``record_rotation_rates=True``; each panel is
  :func:`layca_optax.plot_rotation_rates` of ``History.rotation_rates``, first layer dark.
  """
  missing = [name for name, history in runs.items() if not history.rotation_rates]
  if not runs or missing:
    raise ValueError(
        "save_rotation_rates_figure needs runs trained with record_rotation_rates=True; "
        f"no rates in {missing or 'an empty mapping'}."
    )
  columns = min(columns or len(runs), len(runs))
  rows = -(-len(runs) // columns)
  width, height = PANEL_SIZE
  fig = Figure(figsize=(width * columns + 0.8, height * rows), layout="constrained")
  grid = fig.subplots(rows, columns, sharey=True, squeeze=False)
  for ax in grid.ravel()[len(runs):]:
    ax.set_visible(False)
  for ax, (name, history) in zip(grid.ravel(), runs.items()):
    rates = {path: np.asarray(angles) for path, angles in history.rotation_rates.items()}
    num_steps = len(next(iter(rates.values())))
    layca_optax.plot_rotation_rates(
        rates, ax, layer_order=history.layer_paths,
        steps=range(1, num_steps + 1), steps_per_epoch=num_steps / len(history.epochs),
        log_scale=log_scale, title=name, colorbar=False,
    )
  return _finish_run_grid(fig, grid, runs, path)
