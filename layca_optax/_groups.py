"""Small leaves of one shape, reduced together as a stack.

A transformer-like tree has hundreds of small leaves of a few shapes (per-block kernels).
Reducing each leaf on its own gives XLA a few reductions, scalar kernels and a cond per
leaf: compile time grows with the number of leaves (~47 s for Layca on 1,000 leaves on
XLA:CPU, ~30 s for ``cosine_distance``). Stacking the leaves of one shape on a new leading
axis gives one set per shape; the copy is cheap for small leaves. Large leaves stay on
their own (no copy). Used by ``layca`` and by ``cosine_distance``/``rotation_angle``/
``measure_rotation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from layca_optax import _tree

__all__ = ["MAX_SIZE", "partition", "stack_f32"]

# Leaves of at most this many elements are reduced in stacks of equal shapes.
MAX_SIZE = 1 << 16


def _key(arrays: Sequence[Any], axes: tuple[int, ...]) -> Any:
  """Items with equal keys can be stacked; ``None``: the item stays on its own."""
  if jnp.size(arrays[0]) > MAX_SIZE:
    return None
  types = []
  for x in arrays:
    # Under explicit sharding or inside shard_map, only arrays typed alike are stacked.
    aval = jax.typeof(x) if hasattr(jax, "typeof") else None
    types.append(repr((getattr(aval, "sharding", None), getattr(aval, "vma", None))))
  return (
      tuple(jnp.shape(x) for x in arrays),
      tuple(jnp.result_type(x) for x in arrays),
      axes,
      tuple(types),
  )


def partition(
    items: Sequence[Sequence[Any]], axes: Sequence[tuple[int, ...]]
) -> list[list[int]]:
  """Indices of ``items`` in units: each large or unmatched item alone, the rest grouped.

  Args:
    items: per item, the arrays it reduces (e.g. ``(updates, params)`` of a leaf).
    axes: per item, the axes its reductions sum over (part of the grouping key).

  Returns:
    A list of units, each a list of item indices; items in a unit of several have equal
    shapes, dtypes, axes and (under sharding) types. Every index appears once.
  """
  units: list[list[int]] = []
  groups: dict[Any, list[int]] = {}
  for i, (arrays, ax) in enumerate(zip(items, axes)):
    key = _key(arrays, tuple(ax))
    if key is None:
      units.append([i])
    elif key in groups:
      groups[key].append(i)
    else:
      groups[key] = [i]
      units.append(groups[key])
  return units


def stack_f32(arrays: Sequence[Any]) -> jax.Array:
  """The arrays in float32, stacked on a new leading axis."""
  return jnp.stack([_tree.as_f32(x) for x in arrays])
