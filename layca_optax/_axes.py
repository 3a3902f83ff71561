"""Rotation axes: which axes of a leaf form one rotating vector.

By default a whole leaf is one vector (one "layer", as in the paper). ``rotation_axes``
splits a leaf into independent vectors: the axes it names form each vector, every other
axis indexes vectors. Two kinds of such index axes:

* *stacking axes*: kept axes before the first rotation axis. ``nn.scan``/``nnx.scan``/
  ``nnx.vmap`` models keep all blocks' kernels in one leaf ``(num_blocks, d_in, d_out)``:
  with rotation axes ``(1, 2)`` each block is its own layer, with its own norm, rotation
  and depth for alpha (slices in index order, at the leaf's place in the layer order).
* *unit axes*: kept axes after the first rotation axis. Per-neuron control of a Flax
  Dense kernel ``(d_in, d_out)`` uses rotation axes ``(0,)``: each output unit's weight
  vector rotates on its own and shares its layer's alpha multiplier.

Everything here is static (shapes only), resolved at trace time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, Union

import jax
import numpy as np

from layca_optax import _tree

__all__ = ["output_unit_axes", "stacked_layer_axes", "whole_leaf_axes"]

AxesOrFn = Union[Any, Callable[[Any], Any], None]


def _is_axes(x: Any) -> bool:
  """A per-leaf axes value: ``None`` (all axes) or a tuple of ints."""
  return x is None or (
      isinstance(x, tuple) and all(isinstance(i, (int, np.integer)) for i in x)
  )


def whole_leaf_axes(params: Any) -> Any:
  """Every leaf is one vector: its axes are all of its axes (the default).

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import whole_leaf_axes
    >>> whole_leaf_axes({'kernel': jnp.zeros((3, 4)), 'bias': jnp.zeros(4)})
    {'bias': (0,), 'kernel': (0, 1)}
  """
  return jax.tree.map(lambda x: tuple(range(np.ndim(x))), _tree.unwrap(params))


def stacked_layer_axes(params: Any, *, num_stacked: int = 1) -> Any:
  """Leaves whose first ``num_stacked`` axes index stacked layers (``nn.scan`` blocks).

  A leaf of shape ``(num_blocks, d_in, d_out)`` gets rotation axes ``(1, 2)``: each block's
  kernel is its own layer. Leaves with ``ndim <= num_stacked`` (e.g. scalars) are whole.
  Apply it to the stacked part of the params only, e.g.
  ``rotation_axes=lambda p: {'blocks': stacked_layer_axes(p['blocks']), 'head': None}``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import stacked_layer_axes
    >>> stacked_layer_axes({'kernel': jnp.zeros((6, 8, 8)), 'bias': jnp.zeros((6, 8))})
    {'bias': (1,), 'kernel': (1, 2)}
  """
  def axes(x):
    ndim = np.ndim(x)
    return tuple(range(num_stacked, ndim)) if ndim > num_stacked else tuple(range(ndim))

  return jax.tree.map(axes, _tree.unwrap(params))


def output_unit_axes(params: Any) -> Any:
  """Per-output-unit vectors in Flax layout: every axis but the last (outputs last).

  A Dense kernel ``(d_in, d_out)`` gets ``(0,)``: each output unit's incoming weights form
  one vector. A Conv kernel HWIO gets ``(0, 1, 2)``: one vector per output channel. 1-D
  leaves stay whole. (Flax puts outputs on the last axis; PyTorch's dim 0 does not apply.)

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import output_unit_axes
    >>> output_unit_axes({'conv': jnp.zeros((3, 3, 4, 8)), 'bias': jnp.zeros(8)})
    {'bias': (0,), 'conv': (0, 1, 2)}
  """
  def axes(x):
    ndim = np.ndim(x)
    return tuple(range(ndim - 1)) if ndim >= 2 else tuple(range(ndim))

  return jax.tree.map(axes, _tree.unwrap(params))


class LeafAxes(NamedTuple):
  """How one leaf splits into rotating vectors."""

  axes: tuple[int, ...]  # summed over: one vector
  stack_shape: tuple[int, ...]  # sizes of the stacking axes (one layer per index)
  stack_axes: tuple[int, ...]
  rate_shape: tuple[int, ...]  # stacking sizes in place, 1 elsewhere: broadcasts

  @property
  def num_slices(self) -> int:
    return math.prod(self.stack_shape)


def _normalize(axes: Any, shape: tuple[int, ...], path: str, owner: str) -> LeafAxes:
  ndim = len(shape)
  if axes is None:
    axes = tuple(range(ndim))
  try:
    normalized = tuple(sorted({int(a) % ndim if ndim else int(a) for a in axes}))
  except (TypeError, ZeroDivisionError) as e:
    raise ValueError(f"{owner}: rotation axes {axes!r} for {path!r} are not axes.") from e
  bad = [a for a in axes if not -ndim <= int(a) < max(ndim, 1)] if ndim else list(axes)
  if bad or (ndim and not normalized):
    raise ValueError(
        f"{owner}: rotation axes {axes!r} do not fit leaf {path!r} of shape {shape}. Give "
        f"a non-empty tuple of axes in range(-{ndim}, {ndim}), e.g. {tuple(range(ndim))} "
        "for the whole leaf or use layca_optax.output_unit_axes / stacked_layer_axes."
    )
  first = normalized[0] if normalized else 0
  stack_axes = tuple(a for a in range(first) if a not in normalized)
  rate_shape = tuple(shape[a] if a in stack_axes else 1 for a in range(ndim))
  return LeafAxes(
      normalized, tuple(shape[a] for a in stack_axes), stack_axes, rate_shape
  )


def resolve_axes(
    rotation_axes: AxesOrFn, flat: _tree.Flat, params: Any, owner: str
) -> tuple[LeafAxes, ...]:
  """One ``LeafAxes`` per leaf of ``params`` (flattening order)."""
  shapes = [tuple(np.shape(x)) for x in flat.leaves]
  if rotation_axes is None:
    return tuple(_normalize(None, s, p, owner) for s, p in zip(shapes, flat.paths))
  params = _tree.unwrap(params)
  if callable(rotation_axes):
    rotation_axes = rotation_axes(params)
  full = _broadcast(rotation_axes, params, owner)
  return tuple(_normalize(a, s, p, owner) for a, s, p in zip(full, shapes, flat.paths))


def _broadcast(rotation_axes: Any, params: Any, owner: str) -> list[Any]:
  full = _tree.broadcast_prefix(rotation_axes, params, is_leaf=_is_axes)
  if full is not None:
    return full
  raise ValueError(
      f"{owner}: `rotation_axes` must be a pytree with the structure of the params (or a "
      "prefix of it) whose leaves are tuples of axes (or None for the whole leaf), or a "
      "callable params -> such a pytree, e.g. layca_optax.output_unit_axes. Its structure "
      f"does not fit the params:\n  rotation_axes: "
      f"{jax.tree.structure(rotation_axes, is_leaf=_is_axes)}\n  params: "
      f"{jax.tree.structure(params)}"
  )
