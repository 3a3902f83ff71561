"""The paper's layer rotation figures, drawn with matplotlib (an optional dependency).

One line per layer, coloured with viridis from the first layer (dark) to the last
(yellow). matplotlib is imported inside the functions, so ``import layca_optax`` needs
only jax, optax and numpy. Without an ``ax`` the functions draw on a new
``matplotlib.figure.Figure`` (not ``pyplot``): no display is needed and the global
backend is never changed, so they work headless and in notebooks alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from layca_optax import _plan, _tree

__all__ = ["plot_layer_rotation_curves", "plot_rotation_rates"]

CMAP = "viridis"
FIGURE_SIZE = (5.0, 3.6)  # inches


def _matplotlib(caller: str) -> Any:
  try:
    mpl = importlib.import_module("matplotlib")
    for name in ("matplotlib.cm", "matplotlib.colors", "matplotlib.figure"):
      importlib.import_module(name)
    return mpl
  except ImportError as e:
    raise ImportError(
        f"{caller} needs matplotlib, an optional dependency of layca_optax. Install it "
        'with `pip install "layca_optax[plot]"` (or `pip install matplotlib`).'
    ) from e


def _new_axes(mpl: Any) -> Any:
  fig = mpl.figure.Figure(figsize=FIGURE_SIZE, layout="constrained")
  return fig.subplots()


def _draw_lines(
    mpl: Any,
    ax: Any,
    x: np.ndarray,
    columns: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    colorbar: bool,
    legend: bool,
) -> None:
  """One line per column, viridis by depth, with a depth colour bar and/or a legend."""
  colours = mpl.colormaps[CMAP](np.linspace(0.0, 1.0, max(len(columns), 1)))
  for column, colour, name in zip(columns, colours, names):
    ax.plot(x, column, color=colour, linewidth=1.2, label=name)
  if len(x) > 1:
    ax.set_xlim(float(np.min(x)), float(np.max(x)))
  if legend and columns:
    ax.legend(fontsize="small")
  if colorbar and columns:
    num = len(columns)
    norm = mpl.colors.Normalize(vmin=0, vmax=max(num - 1, 1))
    mappable = mpl.cm.ScalarMappable(norm=norm, cmap=CMAP)
    bar = ax.figure.colorbar(mappable, ax=ax, pad=0.02, fraction=0.05)
    bar.set_ticks([0, max(num - 1, 1)])
    bar.set_ticklabels(["1", str(num)])
    bar.set_label("first layer -> last layer")


def _x_axis(steps: np.ndarray, steps_per_epoch: float | None) -> tuple[np.ndarray, str]:
  if steps_per_epoch is None:
    return steps, "Step"
  if not steps_per_epoch > 0:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch!r}.")
  return steps / steps_per_epoch, "Epoch"


def plot_layer_rotation_curves(
    curves: Any,
    ax: Any = None,
    *,
    steps_per_epoch: float | None = None,
    title: str | None = None,
    colorbar: bool = True,
    legend: bool = False,
) -> Any:
  """Draws layer rotation curves as in the paper: one cosine-distance line per layer.

  Lines go from the first layer (viridis, dark) to the last (yellow), in the curves'
  depth order; y runs from 0 to 1 (further if a layer goes past 1). Needs matplotlib
  (``pip install "layca_optax[plot]"``).

  Args:
    curves: a :class:`layca_optax.LayerRotationCurves` (recorded, loaded, or built with
      ``LayerRotationCurves.from_values(steps, {path: values})`` from other records);
      anything with ``.steps`` and a ``.values`` mapping works.
    ax: matplotlib Axes to draw on; ``None`` makes a new ``matplotlib.figure.Figure``
      (reach it as ``ax.figure``, e.g. ``ax.figure.savefig('curves.png')``).
    steps_per_epoch: if given, x is in epochs (``step / steps_per_epoch``, label
      "Epoch"); otherwise in steps (label "Step").
    title: axes title.
    colorbar: add a colour bar labelled "first layer -> last layer".
    legend: add a legend with the layer paths (for a few layers).

  Returns:
    The matplotlib Axes.

  Examples:
    >>> from layca_optax import LayerRotationCurves, plot_layer_rotation_curves
    >>> curves = LayerRotationCurves.from_values(
    ...     [0, 100, 200], {'conv/kernel': [0.0, 0.3, 0.5], 'head/kernel': [0.0, 0.1, 0.2]})
    >>> ax = plot_layer_rotation_curves(curves, steps_per_epoch=100)
    >>> len(ax.lines), ax.get_xlabel(), ax.get_ylabel()
    (2, 'Epoch', 'Cosine distance')
  """
  caller = "plot_layer_rotation_curves"
  mpl = _matplotlib(caller)
  values = getattr(curves, "values", None)
  if not isinstance(values, Mapping) or not hasattr(curves, "steps"):
    raise TypeError(
        f"{caller}: expected a LayerRotationCurves, got {type(curves).__name__}. For "
        "plain lists, build one with LayerRotationCurves.from_values(steps, "
        "{path: values})."
    )
  steps = np.asarray(curves.steps, dtype=np.float64)
  columns = [np.asarray(v, dtype=np.float64) for v in values.values()]
  for name, column in zip(values, columns):
    if column.shape != steps.shape:
      raise ValueError(
          f"{caller}: curve {name!r} has {column.size} values for {steps.size} steps."
      )
  x, xlabel = _x_axis(steps, steps_per_epoch)
  if ax is None:
    ax = _new_axes(mpl)
  _draw_lines(mpl, ax, x, columns, list(values), colorbar=colorbar, legend=legend)
  top = max([1.0] + [float(np.max(c)) * 1.02 for c in columns if c.size])
  ax.set_ylim(0.0, top)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("Cosine distance")
  if title is not None:
    ax.set_title(title)
  return ax


def _rate_columns(
    rates: Any, layer_order: Sequence[str] | None, caller: str
) -> tuple[list[np.ndarray], list[str]]:
  """Per-vector time series and names, in depth order, from a pytree or a flat dict."""
  flat = _tree.flatten(rates)  # None leaves (non-layers) are dropped here
  if not flat.leaves:
    raise ValueError(
        f"{caller}: `rates` has no leaves. Stack successive rotation_rates(opt_state) "
        "outputs, e.g. jax.tree.map(lambda *xs: jnp.stack(xs), *records)."
    )
  leaves = [np.asarray(x, dtype=np.float64) for x in jax.device_get(list(flat.leaves))]
  by_path = dict(zip(flat.paths, leaves))
  if layer_order is None:
    order = sorted(by_path, key=_tree.natural_key)
  else:
    if isinstance(layer_order, str):
      raise TypeError(f"{caller}: `layer_order` must be a list of paths, got a string.")
    order = [p for p in layer_order if p in by_path]
    missing = [p for p in by_path if p not in set(order)]
    if missing:
      raise ValueError(
          f"{caller}: `layer_order` does not list {missing}; give every path of `rates` "
          "(e.g. layca_optax.forward_order(apply_fn, params, x)) or None for natural "
          "order."
      )
  columns: list[np.ndarray] = []
  names: list[str] = []
  for path in order:
    series = by_path[path]
    if series.ndim == 0:
      raise ValueError(
          f"{caller}: {path!r} holds a single value, not a series over steps. Stack the "
          "per-step rotation_rates(opt_state) outputs along a first axis, e.g. "
          "jax.tree.map(lambda *xs: jnp.stack(xs), *records)."
      )
    kept = series.shape[1:]
    flat_series = series.reshape(series.shape[0], -1)
    columns.extend(flat_series.T)
    names.extend(_plan.vector_names(path, kept))
  lengths = {c.shape[0] for c in columns}
  if len(lengths) > 1:
    raise ValueError(f"{caller}: the series have different lengths {sorted(lengths)}.")
  return columns, names


def plot_rotation_rates(
    rates: Any,
    ax: Any = None,
    *,
    layer_order: Sequence[str] | None = None,
    steps: Sequence[float] | None = None,
    steps_per_epoch: float | None = None,
    degrees: bool = True,
    log_scale: bool = False,
    title: str | None = None,
    colorbar: bool = True,
    legend: bool = False,
) -> Any:
  """Draws each layer's rotation per step over training: one line per layer, viridis.

  The input is the per-step angle (radians) of each layer, as ``rotation_rates(opt_state)``
  returns after each step (with ``measure_rotation`` in the chain), stacked over steps:
  ``rates = jax.tree.map(lambda *xs: jnp.stack(xs), *records)``. A leaf of shape
  ``(T, *kept)`` (with ``rotation_axes``) gives one line per vector, ``'path[i]'``.
  Needs matplotlib (``pip install "layca_optax[plot]"``).

  Args:
    rates: a pytree in the params' structure (``None`` for non-layers) or a flat dict
      ``{path: array}``, of arrays of shape ``(T,)`` or ``(T, *kept)``.
    ax: matplotlib Axes; ``None`` makes a new ``matplotlib.figure.Figure``.
    layer_order: paths from input to output (e.g. ``forward_order(...)``); may name
      other leaves. ``None``: natural order of the paths.
    steps: x value of each row; default ``0 .. T-1``.
    steps_per_epoch: if given, x is in epochs (label "Epoch"), else in steps ("Step").
    degrees: plot degrees (default) instead of radians.
    log_scale: logarithmic y axis (rates often span decades; zeros are not drawn).
    title: axes title.
    colorbar: add a colour bar labelled "first layer -> last layer".
    legend: add a legend with the layer paths.

  Returns:
    The matplotlib Axes.

  Examples:
    >>> import numpy as np
    >>> from layca_optax import plot_rotation_rates
    >>> rates = {'stem/kernel': np.full(50, 1e-3), 'head/kernel': np.full(50, 2e-3)}
    >>> ax = plot_rotation_rates(rates, layer_order=['stem/kernel', 'head/kernel'])
    >>> [line.get_label() for line in ax.lines], ax.get_ylabel()
    (['stem/kernel', 'head/kernel'], 'Rotation per step (degrees)')
  """
  caller = "plot_rotation_rates"
  mpl = _matplotlib(caller)
  columns, names = _rate_columns(rates, layer_order, caller)
  length = columns[0].shape[0]
  x = np.arange(length, dtype=np.float64) if steps is None else np.asarray(steps, float)
  if x.shape != (length,):
    raise ValueError(f"{caller}: {x.size} steps given for series of length {length}.")
  x, xlabel = _x_axis(x, steps_per_epoch)
  if degrees:
    columns = [np.degrees(c) for c in columns]
  if ax is None:
    ax = _new_axes(mpl)
  _draw_lines(mpl, ax, x, columns, names, colorbar=colorbar, legend=legend)
  if log_scale:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(f"Rotation per step ({'degrees' if degrees else 'rad'})")
  if title is not None:
    ax.set_title(title)
  return ax
