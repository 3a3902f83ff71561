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

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from layca_optax import _tree

__all__ = ["MAX_SIZE", "Packer", "indexes_group", "partition", "positions", "stack_f32"]

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

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._groups import partition
    >>> small, other, big = jnp.ones((4, 4)), jnp.ones((4, 8)), jnp.ones((300, 300))
    >>> partition([(small,), (big,), (other,), (small,)], [(0, 1)] * 4)
    [[0, 3], [1], [2]]
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


def positions(
    arrays: Sequence[Any], axes: Sequence[tuple[int, ...]], eligible: Sequence[bool]
) -> list[tuple[int, int] | None]:
  """Per eligible small array: its index among the eligible arrays of its shape and axes,
  and how many there are; ``None`` for the others.

  A static function of shapes alone (not dtypes or shardings), so that ``init`` and
  ``update`` agree on it. ``layca`` keeps the indices in its state: a grouped leaf reads
  its coefficients at this runtime index, which XLA cannot fold, so the elementwise
  updates of a group's leaves compile to one kernel instead of one per leaf (see
  ``indexes_group``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._groups import positions
    >>> a, b = jnp.ones((4, 4)), jnp.ones((2,))
    >>> positions([a, b, a, a], [(0, 1), (0,), (0, 1), (0, 1)], [True, True, True, False])
    [(0, 2), (0, 1), (1, 2), None]
  """
  keys = [
      (jnp.shape(x), tuple(ax)) if ok and jnp.size(x) <= MAX_SIZE else None
      for x, ax, ok in zip(arrays, axes, eligible)
  ]
  counts: dict[Any, int] = {}
  index = []
  for key in keys:
    index.append(counts.get(key, 0))
    counts[key] = index[-1] + 1
  return [
      None if key is None else (i, counts[key]) for key, i in zip(keys, index)
  ]


def indexes_group(members: Sequence[int], position: Sequence[Any]) -> bool:
  """Whether ``positions`` index the stack of a group (of ``partition``): the group is
  the whole class of its members' shape and axes, in order."""
  return all(
      position[i] is not None and position[i] == (j, len(members))
      for j, i in enumerate(members)
  )


def stack_f32(arrays: Sequence[Any]) -> jax.Array:
  """The arrays in float32, stacked on a new leading axis."""
  return jnp.stack([_tree.as_f32(x) for x in arrays])


class Packer:
  """Per-unit arrays of small, static shapes <-> one float32 vector.

  The scalar work after the reductions (a layer's step coefficients, a leaf's distance)
  is a dozen tiny ops per unit; XLA:CPU runs each fused group of them as a kernel, at a
  few microseconds each, which is a tenth of a step on a model of 25 layers. Packed into
  one vector, that work is a few kernels for the whole tree.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._groups import Packer
    >>> packer = Packer([(), (2, 1)])
    >>> vector = packer.pack([1.0, jnp.array([[2.0], [3.0]])])
    >>> vector.tolist()
    [1.0, 2.0, 3.0]
    >>> [x.shape for x in packer.unpack(vector)]
    [(), (2, 1)]
  """

  def __init__(self, shapes: Sequence[tuple[int, ...]]):
    self.shapes = [tuple(s) for s in shapes]
    self.sizes = [math.prod(s) for s in self.shapes]
    self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]

  def pack(self, values: Sequence[Any], dtype=jnp.float32) -> jax.Array:
    """One vector of the values, each broadcast to its unit's shape."""
    parts = [
        jnp.ravel(jnp.broadcast_to(jnp.asarray(v, dtype), shape))
        for v, shape in zip(values, self.shapes)
    ]
    return jnp.concatenate(parts) if parts else jnp.zeros([0], dtype)

  def unpack(self, vector: jax.Array) -> list[jax.Array]:
    """The units' arrays back from ``pack``'s vector (static slices)."""
    return [
        vector[o:o + n].reshape(shape)
        for o, n, shape in zip(self.offsets, self.sizes, self.shapes)
    ]
