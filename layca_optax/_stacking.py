"""Small same-shaped leaves reduced together, and the rare exact path behind one cond.

Layca and the measures (``cosine_distance``, ``rotation_angle``, ``measure_rotation``, the
curves) share one pattern: per leaf, three float32 sums over each rotating vector, a few
scalar formulas, and for a rare case (a step nearly parallel to the weights; a change
mostly of norm) an exact formula that needs more passes over the arrays. Two things keep
that cheap on trees of many leaves:

* :func:`group_leaves`: leaves of at most :data:`MAX_STACKED_SIZE` elements with the same
  shape, dtypes and vector axes are stacked on a new leading axis and reduced together, so
  that a transformer's hundreds of per-block kernels compile to a few reductions per
  shape rather than a set per leaf (Layca on 1,000 small leaves compiled in ~47 s on
  XLA:CPU before, ~9 s after; BENCHMARKS.md). Large leaves are never copied.
* :func:`values_per_leaf`: the exact path of each group sits behind a ``lax.cond`` on
  "this group has a rare vector", and all of those inside one cond on "any group has
  one": a common step runs a single cond (on XLA:CPU each executed cond costs ~0.1 ms; 17
  per-layer conds were ~12 % of a Layca step on the 18.4M-parameter benchmark tree). The
  cond also returns the index at which each stacked leaf reads its group's values, as a
  run-time value, so that the elementwise passes of a group's leaves share one compiled
  kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax import _numerics

__all__: list[str] = []  # private module

#: Leaves of at most this many elements are reduced in stacks of equal shapes.
MAX_STACKED_SIZE = 1 << 16


class Group(NamedTuple):
  """Leaves reduced together: one leaf, or a stack of same-shaped small leaves."""

  members: tuple[int, ...]  # the leaves' indices in the caller's list, in order
  arrays: tuple[jax.Array, ...]  # float32; stacked on a new axis 0 if several members
  vector_axes: tuple[int, ...]  # the axes of `arrays` that one rotating vector spans

  def sum(self, a: jax.Array, b: jax.Array, axis_name: Any = None) -> jax.Array:
    """``sum(a * b)`` per vector (size-1 vector axes kept), in float32."""
    return _numerics.sum_of_products(a, b, self.vector_axes, axis_name)

  def stack(self, per_member: Sequence[Any]) -> Any:
    """One value per member (e.g. its rate, shaped to broadcast on its leaf), laid out
    like the group's sums: stacked on axis 0 when the group is a stack. NumPy values
    (static) stay NumPy; others become float32."""
    first = per_member[0]
    static = all(isinstance(v, np.ndarray) for v in per_member)
    if len(self.members) == 1 or all(v is first and np.ndim(v) == 0 for v in per_member):
      return first if static else jnp.asarray(first, jnp.float32)  # it broadcasts
    shape = tuple(
        1 if a + 1 in self.vector_axes else n for a, n in enumerate(self.arrays[0].shape[1:])
    )
    if static:
      return np.stack([np.broadcast_to(v, shape) for v in per_member])
    return jnp.stack([jnp.broadcast_to(jnp.asarray(v, jnp.float32), shape) for v in per_member])

  def unstack(self, value: Any, index: Sequence[jax.Array]) -> list[Any]:
    """A value laid out like the group's sums (a pytree) -> one per member, read at the
    members' ``index`` (int32 scalars)."""
    if len(self.members) == 1:
      return [value]
    return [
        jax.tree.map(lambda x, j=j: jax.lax.dynamic_index_in_dim(x, j, keepdims=False), value)
        for j in index
    ]


def _stack_key(arrays: Sequence[Any], vector_axes: tuple[int, ...]) -> Any:
  """Leaves with equal keys can be stacked; ``None``: the leaf stays on its own."""
  if jnp.size(arrays[0]) > MAX_STACKED_SIZE:
    return None
  # Under explicit sharding or inside shard_map, only arrays typed alike are stacked.
  avals = [jax.typeof(x) if hasattr(jax, "typeof") else None for x in arrays]
  types = tuple(
      repr((getattr(aval, "sharding", None), getattr(aval, "vma", None))) for aval in avals
  )
  return (
      tuple(jnp.shape(x) for x in arrays),
      tuple(jnp.result_type(x) for x in arrays),
      vector_axes,
      types,
  )


def group_leaves(
    arrays: Sequence[Sequence[Any]], vector_axes: Sequence[tuple[int, ...]]
) -> list[Group]:
  """The leaves in groups: each large or unmatched leaf alone, the rest stacked by shape.

  Args:
    arrays: per leaf, the arrays its reductions read (e.g. ``(step, params)``).
    vector_axes: per leaf, the axes one rotating vector spans.

  Returns:
    Groups covering every leaf once, in order of their first member. A group of several
    leaves holds their arrays in float32, stacked on a new axis 0 (so its vector axes
    are shifted by one); a single leaf's arrays are passed as they are.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._stacking import group_leaves
    >>> small, other, big = jnp.ones((4, 4)), jnp.ones((4, 8)), jnp.ones((300, 300))
    >>> groups = group_leaves([(small,), (big,), (other,), (small,)], [(0, 1)] * 4)
    >>> [(g.members, g.arrays[0].shape, g.vector_axes) for g in groups]
    [((0, 3), (2, 4, 4), (1, 2)), ((1,), (300, 300), (0, 1)), ((2,), (4, 8), (0, 1))]
  """
  order: list[list[int]] = []
  by_key: dict[Any, list[int]] = {}
  for i, (leaf_arrays, axes) in enumerate(zip(arrays, vector_axes)):
    key = _stack_key(leaf_arrays, tuple(axes))
    if key is None:
      order.append([i])
    elif key in by_key:
      by_key[key].append(i)
    else:
      by_key[key] = [i]
      order.append(by_key[key])
  groups = []
  for members in order:
    if len(members) == 1:
      (i,) = members
      groups.append(Group((i,), tuple(arrays[i]), tuple(vector_axes[i])))
      continue
    stacked = tuple(
        jnp.stack([_numerics.as_f32(arrays[i][k]) for i in members])
        for k in range(len(arrays[members[0]]))
    )
    shifted = tuple(a + 1 for a in vector_axes[members[0]])
    groups.append(Group(tuple(members), stacked, shifted))
  return groups


def _exact_where_rare(rare: jax.Array, exact: Callable[[], Any], common: Any) -> Any:
  """``common``, with ``exact()`` at the rare vectors; ``exact`` runs only if there are any."""
  def take_exact():
    return jax.tree.map(lambda e, c: jnp.where(rare, e, c), exact(), common)

  return jax.lax.cond(jnp.any(rare), take_exact, lambda: common)


def values_per_leaf(
    groups: Sequence[Group],
    common: Sequence[Any],
    rare: Sequence[jax.Array],
    exact: Sequence[Callable[[], Any]],
) -> list[Any]:
  """Each leaf's value: its group's ``common`` one, or ``exact`` where ``rare``.

  Args:
    groups: from :func:`group_leaves`.
    common: per group, the common-case value (a pytree of arrays laid out like the
      group's sums: one entry per vector).
    rare: per group, a boolean array (broadcastable to those arrays): which vectors need
      the exact value.
    exact: per group, a function of no arguments returning the exact value (same
      structure); it reads the group's arrays, and runs only when one of the group's
      vectors is rare.

  Returns:
    One value per leaf, in the order of the leaves given to :func:`group_leaves`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._stacking import group_leaves, values_per_leaf
    >>> groups = group_leaves([(jnp.ones((2, 2)),), (jnp.ones((3,)),)], [(0, 1), (0,)])
    >>> out = values_per_leaf(
    ...     groups,
    ...     common=[jnp.float32(1.0), jnp.float32(2.0)],
    ...     rare=[jnp.array(False), jnp.array(True)],
    ...     exact=[lambda: jnp.float32(10.0), lambda: jnp.float32(20.0)],
    ... )
    >>> [float(x) for x in out]  # the second leaf took its exact path
    [1.0, 20.0]
  """
  if not groups:
    return []
  any_rare = jnp.any(jnp.stack([jnp.any(r) for r in rare]))
  flag = any_rare.astype(jnp.int32)  # 1 in the exact branch, 0 in the other

  def exact_branch(flag):
    values = [_exact_where_rare(*g) for g in zip(rare, exact, common)]
    return values, [[j * flag for j in range(len(g.members))] for g in groups]

  def common_branch(flag):
    return list(common), [[j + flag for j in range(len(g.members))] for g in groups]

  # Each stacked leaf reads its group's values at an index the cond returns. Both
  # branches give j, by different formulas, so that XLA can neither fold the index nor
  # hoist it out of the cond: the elementwise pass of every leaf of a group is then one
  # kernel, compiled once, instead of one per leaf (a constant index differs per leaf).
  # Measured on a 244-leaf tree on a loaded machine, alternating with the previous code
  # (3.4-6.2 s): 15-27 s to compile with constant indices, 6.4 s with these
  # (BENCHMARKS.md, "Latest").
  values, indices = jax.lax.cond(any_rare, exact_branch, common_branch, flag)
  out: list[Any] = [None] * sum(len(g.members) for g in groups)
  for group, value, index in zip(groups, values, indices):
    for i, member_value in zip(group.members, group.unstack(value, index)):
      out[i] = member_value
  return out
