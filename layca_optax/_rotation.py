r"""Layer rotation: cosine distances and angles between pytrees, accurate in float32.

The textbook :math:`1 - \frac{a \cdot b}{\|a\| \|b\|}` cancels in float32: below about
1e-4 rad it returns 0 or noise (even negative values). With unit vectors
:math:`\hat a = a / \|a\|` and :math:`\hat b = b / \|b\|`:

.. math::
  1 - \cos\theta = \tfrac12 \|\hat a - \hat b\|^2, \qquad
  \theta = 2 \operatorname{atan2}(\|\hat a - \hat b\|, \|\hat a + \hat b\|)

are exact in exact arithmetic and keep their relative accuracy for small angles.

``cosine_distance`` reads each leaf pair once: with :math:`d = a - b`,

.. math::
  1 - \cos\theta = \frac{\|d\|^2 - (\|a\| - \|b\|)^2}{2 \|a\| \|b\|}

needs only :math:`\|a\|^2`, :math:`\|b\|^2` and :math:`\|d\|^2`, and does not cancel as long
as the norms change less than the direction. Where they do not (a change mostly of norm),
the unit-vector form above is computed instead, in a ``lax.cond`` that is rarely taken
(one per leaf, all inside one tree-wide cond: the common case runs a single cond).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _axes, _groups, _guard, _layers, _transforms, _tree

__all__ = ["cosine_distance", "rotation_angle"]


def _unit_difference_sq(a32: jax.Array, b32: jax.Array, dot, aa, bb) -> jax.Array:
  """``||a/|a| - b/|b| ||^2`` from the leaves and their squared norms ``aa``, ``bb``."""
  diff = a32 * _transforms.safe_ratio(1.0, jnp.sqrt(aa)) - b32 * _transforms.safe_ratio(
      1.0, jnp.sqrt(bb)
  )
  return dot(diff, diff)


# The one-pass form of ``_leaf_cosine_distance`` is used where (|a| - |b|)^2 is at most this
# fraction of ||a - b||^2; above it the subtraction cancels (a change mostly of norm, not
# of direction) and the unit-difference form is computed instead. Compared with float64
# on leaves of 10 to 2.4M elements, rotations of 1e-5 to 1 rad and norm changes of 0 to
# 10 %, the result is then as accurate as the unit-difference form (2e-4 relative at
# worst, at 1e-5 rad, where both are at float32's limit).
_NORM_GAP_RATIO = 1e-3


class _Terms(NamedTuple):
  """The pairs' reductions and one-pass distances, packed over all pairs (one value per
  rotating vector of each pair, ``_groups.Packer``)."""

  aa: jax.Array  # |a|^2
  bb: jax.Array  # |b|^2
  dd: jax.Array  # |a - b|^2
  fast: jax.Array  # the one-pass distance
  cancels: jax.Array  # where the one-pass form cancels: a change mostly of norm


def _from_sums(aa, bb, dd, norm_change=None) -> _Terms:
  """The one-pass distance from |a|^2, |b|^2, |a - b|^2 (and |a|^2 - |b|^2 if known)."""
  any_zero = (aa == 0) | (bb == 0)
  norm_a = jnp.sqrt(jnp.where(any_zero, 1.0, aa))
  norm_b = jnp.sqrt(jnp.where(any_zero, 1.0, bb))
  if norm_change is None:
    gap = (norm_a - norm_b) ** 2
  else:  # |a| - |b| = (|a|^2 - |b|^2) / (|a| + |b|), without subtracting the norms
    gap = (norm_change / (norm_a + norm_b)) ** 2
  fast = (dd - gap) / (2.0 * norm_a * norm_b)
  cancels = (gap > _NORM_GAP_RATIO * dd) & ~any_zero
  return _Terms(aa, bb, dd, fast, cancels)


def _terms(a: jax.Array, b: jax.Array, dot) -> tuple[jax.Array, ...]:
  # Three reductions in one pass over a and b: with d = a - b, 2 a.b = |a|^2 + |b|^2 - |d|^2, so
  # 1 - cos = (|d|^2 - (|a| - |b|)^2) / (2 |a| |b|): no cancellation for small angles as
  # long as the norms change less than the direction. |d|^2 == 0 exactly iff a == b.
  a32, b32 = _tree.as_f32(a), _tree.as_f32(b)
  diff = a32 - b32
  return dot(a32, a32), dot(b32, b32), dot(diff, diff)


def _step_terms(w: jax.Array, u: jax.Array, dot) -> tuple[jax.Array, ...]:
  # a = w + u, b = w, from w.w, w.u and u.u: |a|^2 = w.w + 2 w.u + u.u, |a - b| = |u|.
  # The moved params are never formed (see `step_angle`); u.u is the step as intended,
  # which differs from fl(w + u) - w by rounding only (measured: at most 6e-6 relative at
  # 1e-3 rad; see `measure_rotation`).
  w32, u32 = _tree.as_f32(w), _tree.as_f32(u)
  ww, wu, uu = dot(w32, w32), dot(w32, u32), dot(u32, u32)
  change = 2.0 * wu + uu
  return ww + change, ww, uu, change


def _finish(terms: _Terms, distance: jax.Array) -> jax.Array:
  # A zero vector has no direction: equal to another zero vector, unrelated to the rest.
  any_zero = (terms.aa == 0) | (terms.bb == 0)
  return jnp.where(
      terms.dd == 0, 0.0, jnp.where(any_zero, 1.0, jnp.clip(distance, 0.0, 2.0))
  )


def _same(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  return a, b


def _cosine_distances(
    pairs: list[tuple[Any, Any]], dots: list[Any], make=_same, terms=_terms
) -> tuple[list, jax.Array]:
  """The cosine distance of each pair ``make(*pair)``: one pass each, exact if it cancels.

  ``terms(*pair, dot)`` gives the reductions of the one-pass form (``|a|^2``, ``|b|^2``,
  ``|a - b|^2`` and optionally ``|a|^2 - |b|^2``); the scalar work on them runs once for
  all pairs, packed in one vector (``_groups.Packer``). The exact (unit-difference) form
  of the rare pairs runs behind one tree-wide cond (``_guard``), so the common case runs
  a single cond whatever the number of leaves. Its operands are the pairs; ``make``
  builds the two compared arrays from a pair inside the exact branch only. Returns the
  distances and the packed vector the cond returned.
  """
  if not pairs:
    return [], jnp.zeros([0], jnp.float32)
  raw = [terms(*pair, dot) for pair, dot in zip(pairs, dots)]
  packer = _groups.Packer([jnp.shape(r[0]) for r in raw])
  packed = _from_sums(*(packer.pack([r[f] for r in raw]) for f in range(len(raw[0]))))

  def exact(dot, j):
    def distance(operands, fast):
      pair, packed = operands
      t = _Terms(*(packer.unpack(x)[j] for x in packed))
      a32, b32 = (_tree.as_f32(x) for x in make(*pair))
      diff_sq = _unit_difference_sq(a32, b32, dot, t.aa, t.bb)
      return jnp.where(t.cancels, 0.5 * diff_sq, fast)

    return distance

  def rare(j):
    return lambda operands: jnp.any(packer.unpack(operands[1].cancels)[j])

  distances = _guard.rarely_exact(
      any_rare=jnp.any(packed.cancels),
      rare=[rare(j) for j in range(len(pairs))],
      exact=[exact(dot, j) for j, dot in enumerate(dots)],
      operands=[(pair, packed) for pair in pairs],
      fast=packed.fast,
      split=packer.unpack,
      join=packer.pack,
  )
  return packer.unpack(_finish(packed, distances)), distances


def _angle(distance: jax.Array) -> jax.Array:
  # With d = 1 - cos: ||a^ - b^||^2 = 2 d and ||a^ + b^||^2 = 2 (2 - d), so the atan2 form
  # is 2 atan2(sqrt(d), sqrt(2 - d)); d = 0 (equal) gives 0, d = 1 (a zero leaf) pi / 2.
  return 2.0 * jnp.arctan2(jnp.sqrt(distance), jnp.sqrt(2.0 - distance))


def _distances(pairs, dots) -> list:
  return _cosine_distances(pairs, dots)[0]


def _angles(pairs, dots) -> list:
  return [_angle(d) for d in _distances(pairs, dots)]


def _after_step(params: jax.Array, updates: jax.Array) -> tuple[jax.Array, jax.Array]:
  return optax.apply_updates(params, updates), params


def _select_pairs(
    params: Any, other: Any, mask: Any, rotation_axes, owner: str,
    names: tuple[str, str], fix: str,
):
  """The selected leaf pairs: ``(flat params, indices, pairs, axes of each pair)``."""
  flat_a, flat_b = _tree.flatten(params), _tree.flatten(other)
  _tree.check_same_structure(flat_a, flat_b, owner, names=names, fix=fix)
  if mask is None:
    selected = (True,) * len(flat_a.leaves)
  else:
    selected = _layers.resolve_mask(mask, params, owner)
  leaf_axes = _axes.resolve_axes(rotation_axes, flat_a, params, owner)
  chosen = [i for i, keep in enumerate(selected) if keep]
  pairs = [(flat_a.leaves[i], flat_b.leaves[i]) for i in chosen]
  return flat_a, chosen, pairs, [leaf_axes[i].axes for i in chosen]


def _units(pairs, axes, axis_name):
  """The pairs in reduction units (``_groups``): ``(unit pairs, reducers, members)``."""
  parts = _groups.partition(pairs, axes)
  unit_pairs, dots = [], []
  for part in parts:
    first = part[0]
    if len(part) == 1:
      unit_pairs.append(pairs[first])
      dots.append(_tree.reducer(axis_name, axes[first]))
    else:
      unit_pairs.append(
          tuple(_groups.stack_f32([pairs[i][k] for i in part]) for k in (0, 1))
      )
      dots.append(_tree.reducer(axis_name, tuple(a + 1 for a in axes[first])))
  return unit_pairs, dots, parts


def _per_pair(values, parts) -> list:
  """Per-unit values back to one per pair (a stacked unit's value is indexed)."""
  out = [None] * sum(len(part) for part in parts)
  for part, value in zip(parts, values):
    if len(part) == 1:
      out[part[0]] = value
    else:
      for j, i in enumerate(part):
        out[i] = value[j]
  return out


def _per_leaf(flat, chosen, values, axes) -> Any:
  """``values`` at the ``chosen`` leaves of ``flat``, ``None`` at the others."""
  out = [None] * len(flat.leaves)
  for i, value, ax in zip(chosen, values, axes):
    # One value per rotating vector: the rotation axes are summed away.
    out[i] = jnp.squeeze(value, axis=ax)
  return flat.unflatten(out)


_PAIRS_FIX = "Compare two versions of the same params tree (e.g. params and init_params)."


def _map_pairs(
    fn, params: Any, other: Any, mask: Any, axis_name, rotation_axes, owner: str
) -> Any:
  """``fn(pairs, dots)`` over the selected leaf pairs; unselected leaves are ``None``."""
  flat, chosen, pairs, axes = _select_pairs(
      params, other, mask, rotation_axes, owner, ("params", "reference params"),
      _PAIRS_FIX,
  )
  unit_pairs, dots, parts = _units(pairs, axes, axis_name)
  return _per_leaf(flat, chosen, _per_pair(fn(unit_pairs, dots), parts), axes)


def step_angle(
    params: Any,
    updates: Any,
    *,
    mask: Any = None,
    axis_name: _tree.AxisName | None = None,
    rotation_axes: Any = None,
) -> tuple[Any, Any]:
  """``rotation_angle(optax.apply_updates(params, updates), params)``, for a step.

  Returns the angles and the updates, unchanged in value but made to depend on the
  angles. Two things keep a monitored step cheaper (measured on the 18.4M-parameter
  benchmark tree, BENCHMARKS.md):

  * The moved params are never formed outside the rare exact path: the angles come from
    w.w, w.u and u.u. Formed, XLA merges them with the new params the step returns.
  * The new params overwrite the donated old ones, which the angles read: unless the
    updates depend on the angles, XLA cannot order the two and copies every measured
    leaf first. ``optimization_barrier`` does not create that order; adding
    ``0 * d`` (``d`` a value the rarely-taken cond returns, so nothing is recomputed
    per element) does, inside the elementwise pass that applies the updates.
  """
  flat_w, chosen, pairs, axes = _select_pairs(
      params, updates, mask, rotation_axes, "measure_rotation", ("params", "updates"),
      "Pass the params the updates apply to: tx.update(grads, state, params).",
  )
  unit_pairs, dots, parts = _units(pairs, axes, axis_name)
  distances, guarded = _cosine_distances(
      unit_pairs, dots, make=_after_step, terms=_step_terms
  )
  angles = _per_pair([_angle(d) for d in distances], parts)
  flat_u = _tree.flatten(updates)
  tied = list(flat_u.leaves)
  if chosen:
    zero = 0.0 * guarded[0]
    for i in chosen:
      tied[i] = tied[i] + zero.astype(jnp.result_type(tied[i]))
  return _per_leaf(flat_w, chosen, angles, axes), flat_u.unflatten(tied)


def cosine_distance(
    params: Any,
    init_params: Any,
    *,
    mask: Any = None,
    axis_name: _tree.AxisName | None = None,
    rotation_axes: Any = None,
) -> Any:
  r"""Layer rotation: the cosine distance between each leaf and its initial value.

  .. math::
    d = 1 - \cos\theta = \tfrac12 \Big\| \frac{w}{\|w\|} - \frac{w_0}{\|w_0\|} \Big\|^2
    \in [0, 2]

  computed in float32 in a form that is exactly 0 for identical leaves and accurate down
  to angles of 1e-4 rad. A zero-norm leaf has no direction: its distance is 0 to another
  zero leaf and 1 otherwise (never NaN). Each leaf is one flattened vector, as in the
  paper. Works under ``jax.jit``.

  Args:
    params: the current params (any pytree, NNX ``State`` included).
    init_params: the params to compare with (same structure), usually the initial ones.
    mask: ``None`` gives every leaf a value. Otherwise which leaves to measure: a pytree of
      bools (a prefix of the params) or a callable ``params -> pytree of bools``, e.g.
      ``layca_optax.default_mask`` for the kernels; unselected leaves are ``None``.
    axis_name: inside ``shard_map``/``pmap`` where each device holds a slice of a leaf,
      the mesh axis (or axes) to sum over, so that every device gets the global value.
    rotation_axes: which axes form one vector (see ``layca``); ``None``: the whole leaf.
      With e.g. ``stacked_layer_axes`` a ``(blocks, d_in, d_out)`` kernel gets one
      distance per block.

  Returns:
    A pytree with the structure of ``params``: per leaf a float32 scalar, or with
    ``rotation_axes`` an array with one value per vector (shape: the other axes).

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import cosine_distance
    >>> w0 = {'kernel': jnp.array([[1.0, 0.0]]), 'bias': jnp.array([1.0])}
    >>> w = {'kernel': jnp.array([[0.0, 2.0]]), 'bias': jnp.array([1.0])}
    >>> {k: float(v) for k, v in cosine_distance(w, w0).items()}
    {'bias': 0.0, 'kernel': 1.0}
  """
  return _map_pairs(
      _distances, params, init_params, mask, axis_name, rotation_axes,
      "cosine_distance",
  )


def rotation_angle(
    params: Any,
    other_params: Any,
    *,
    mask: Any = None,
    axis_name: _tree.AxisName | None = None,
    rotation_axes: Any = None,
) -> Any:
  r"""The angle in radians between each leaf of two pytrees, accurate in float32.

  .. math::
    \theta = 2 \operatorname{atan2}\big(\|\hat a - \hat b\|, \|\hat a + \hat b\|\big)

  with :math:`\hat a = a / \|a\|`. One Layca step rotates each layer by
  :math:`\arctan \rho_l(t)`: ``rotation_angle(new_params, params)`` measures it. A zero leaf
  is at angle 0 from another zero leaf and :math:`\pi / 2` from anything else.

  Args:
    params: a pytree of arrays.
    other_params: a pytree of the same structure.
    mask: as in ``cosine_distance``.
    axis_name: as in ``cosine_distance``.
    rotation_axes: as in ``cosine_distance``.

  Returns:
    A pytree with the structure of ``params`` of float32 scalars in ``[0, pi]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import rotation_angle
    >>> a = {'kernel': jnp.array([[1.0, 0.0]])}
    >>> b = {'kernel': jnp.array([[1.0, 1.0]])}
    >>> print(f"{float(rotation_angle(a, b)['kernel']):.6f}")  # pi / 4
    0.785398
  """
  return _map_pairs(
      _angles, params, other_params, mask, axis_name, rotation_axes,
      "rotation_angle",
  )
