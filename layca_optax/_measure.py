r"""Layer rotation measured: cosine distances, angles and per-step rotation, in float32.

The textbook :math:`1 - \frac{a \cdot b}{\|a\| \|b\|}` cancels in float32: below about
1e-4 rad it returns 0 or noise (even negative values). With unit vectors
:math:`\hat a = a / \|a\|` and :math:`\hat b = b / \|b\|`:

.. math::
  1 - \cos\theta = \tfrac12 \|\hat a - \hat b\|^2, \qquad
  \theta = 2 \operatorname{atan2}(\|\hat a - \hat b\|, \|\hat a + \hat b\|)

are exact in exact arithmetic and keep their relative accuracy for small angles.

Each leaf pair is read once: with :math:`d = a - b`,

.. math::
  1 - \cos\theta = \frac{\|d\|^2 - (\|a\| - \|b\|)^2}{2 \|a\| \|b\|}

needs only the three sums :math:`\|a\|^2`, :math:`\|b\|^2` and :math:`\|d\|^2`, and does
not cancel as long as the norms change less than the direction. Where they do not (a
change mostly of norm, ``_numerics.NORM_GAP_RATIO``), the unit-vector form above is
computed instead, behind a rarely taken cond (``_stacking.values_per_leaf``). With
:math:`d = 1 - \cos\theta`, the angle is :math:`2 \operatorname{atan2}(\sqrt d, \sqrt{2 - d})`.

``measure_rotation()`` is a pass-through optax transform, placed last in a chain: at each
step it stores the angle by which each layer turns, from :math:`w \cdot w`,
:math:`w \cdot u` and :math:`u \cdot u` (the moved params :math:`w + u` are never formed
outside the rare path), and ``rotation_rates(opt_state)`` reads them back. This is the
robust form of ALGORITHM.md section 5 (the authors' recorder took
:math:`\sqrt{1/(1-d)^2 - 1}` from a cosine distance :math:`d` that float32 made negative).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _numerics, _plan, _stacking, _tree
from layca_optax._numerics import as_f32

__all__ = [
    "MeasureRotationState",
    "cosine_distance",
    "measure_rotation",
    "rotation_angle",
    "rotation_rates",
]


# -- the cosine distance of a pair, from three sums -------------------------------------------


class _PairSums(NamedTuple):
  """The sums of a pair ``(a, b)``, one value per vector."""

  aa: jax.Array  # |a|^2
  bb: jax.Array  # |b|^2
  dd: jax.Array  # |a - b|^2, exactly 0 iff a == b
  norm_change: jax.Array | None = None  # |a|^2 - |b|^2 when known without subtracting


def _one_pass_distance(sums: _PairSums) -> tuple[jax.Array, jax.Array]:
  """``(1 - cos, cancels)``: the one-pass distance, and where it cancels."""
  any_zero = (sums.aa == 0) | (sums.bb == 0)
  norm_a = jnp.sqrt(jnp.where(any_zero, 1.0, sums.aa))
  norm_b = jnp.sqrt(jnp.where(any_zero, 1.0, sums.bb))
  if sums.norm_change is None:
    gap = (norm_a - norm_b) ** 2
  else:  # |a| - |b| = (|a|^2 - |b|^2) / (|a| + |b|), without subtracting the norms
    gap = (sums.norm_change / (norm_a + norm_b)) ** 2
  distance = (sums.dd - gap) / (2.0 * norm_a * norm_b)
  return distance, (gap > _numerics.NORM_GAP_RATIO * sums.dd) & ~any_zero


def _unit_vector_distance(a, b, sums: _PairSums, sum_of_products) -> jax.Array:
  """``0.5 ||a/|a| - b/|b| ||^2``: exact where the one-pass form cancels."""
  diff = a * _numerics.safe_ratio(1.0, jnp.sqrt(sums.aa)) - b * _numerics.safe_ratio(
      1.0, jnp.sqrt(sums.bb)
  )
  return 0.5 * sum_of_products(diff, diff)


def _finish(sums: _PairSums, distance: jax.Array) -> jax.Array:
  """Equal vectors are at 0; a zero vector is at 1 from anything else (never NaN)."""
  any_zero = (sums.aa == 0) | (sums.bb == 0)
  return jnp.where(
      sums.dd == 0, 0.0, jnp.where(any_zero, 1.0, jnp.clip(distance, 0.0, 2.0))
  )


def _angle(distance: jax.Array) -> jax.Array:
  # With d = 1 - cos: ||a^ - b^||^2 = 2 d and ||a^ + b^||^2 = 2 (2 - d); d = 0 (equal)
  # gives 0, d = 1 (a zero leaf) pi / 2.
  return 2.0 * jnp.arctan2(jnp.sqrt(distance), jnp.sqrt(2.0 - distance))


def _pair_distances(
    pairs: Sequence[tuple[Any, Any]],
    vector_axes: Sequence[tuple[int, ...]],
    axis_name: _numerics.AxisName | None,
    *,
    pairs_are_steps: bool = False,
) -> list[jax.Array]:
  """The cosine distance of each pair, one value per vector (size-1 vector axes kept).

  A pair is ``(a, b)``, or with ``pairs_are_steps`` ``(w, u)``: the params and an update,
  compared as ``(w + u, w)`` from ``w.w``, ``w.u`` and ``u.u``.
  """
  groups = _stacking.group_leaves(pairs, vector_axes)
  common, rare, exact = [], [], []
  for group in groups:
    first, second = (as_f32(x) for x in group.arrays)
    if pairs_are_steps:  # |w + u|^2 = w.w + 2 w.u + u.u; |(w + u) - w| = |u|
      w, u = first, second
      ww, wu, uu = group.sum(w, w, axis_name), group.sum(w, u, axis_name), group.sum(
          u, u, axis_name
      )
      sums = _PairSums(ww + 2.0 * wu + uu, ww, uu, 2.0 * wu + uu)
    else:
      a, b = first, second
      diff = a - b
      sums = _PairSums(
          group.sum(a, a, axis_name), group.sum(b, b, axis_name),
          group.sum(diff, diff, axis_name),
      )
    distance, cancels = _one_pass_distance(sums)
    common.append(_finish(sums, distance))
    rare.append(cancels)

    def exact_distance(group=group, sums=sums):
      a, b = group.arrays
      if pairs_are_steps:  # the params after optax.apply_updates, and before
        a, b = optax.apply_updates(a, b), a
      unit = _unit_vector_distance(
          as_f32(a), as_f32(b), sums, functools.partial(group.sum, axis_name=axis_name)
      )
      return _finish(sums, unit)

    exact.append(exact_distance)
  return _stacking.values_per_leaf(groups, common, rare, exact)


# -- selecting leaves -------------------------------------------------------------------------


def _every_leaf(params: Any) -> Any:
  return jax.tree.map(lambda _: True, params)


class _Selection(NamedTuple):
  """The measured leaves of two trees: their indices, pairs and vector axes."""

  flat: _tree.Flat  # the first tree
  chosen: list[int]
  pairs: list[tuple[Any, Any]]
  vector_axes: list[tuple[int, ...]]

  def per_leaf(self, values: Sequence[jax.Array]) -> Any:
    """One value per vector at the chosen leaves (vector axes squeezed), ``None`` else."""
    out: list[Any] = [None] * len(self.flat.leaves)
    for i, value, axes in zip(self.chosen, values, self.vector_axes):
      out[i] = jnp.squeeze(value, axis=axes)
    return self.flat.unflatten(out)


def _select(
    params: Any, other: Any, mask: Any, rotation_axes: Any, caller: str,
    names: tuple[str, str], fix: str,
) -> _Selection:
  flat_a, flat_b = _tree.flatten(params), _tree.flatten(other)
  _tree.check_same_structure(flat_a, flat_b, caller, names=names, fix=fix)
  plan = _plan.make_plan(
      params, mask=mask, rotation_axes=rotation_axes, layer_order=None, caller=caller,
      check_dtypes=False,
  )
  chosen = [i for i, leaf in enumerate(plan.leaves) if leaf.is_layer]
  return _Selection(
      flat_a,
      chosen,
      [(flat_a.leaves[i], flat_b.leaves[i]) for i in chosen],
      [plan.leaves[i].vector_axes for i in chosen],
  )


_PAIRS_FIX = "Compare two versions of the same params tree (e.g. params and init_params)."


# -- the public measures -----------------------------------------------------------------------


def cosine_distance(
    params: Any,
    init_params: Any,
    *,
    mask: Any = None,
    axis_name: _numerics.AxisName | None = None,
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
    mask: **``None`` measures every leaf** (biases too), unlike ``layca``,
      ``measure_rotation`` and ``LayerRotationCurves``, whose ``None`` means the kernels.
      Otherwise which leaves to measure: a pytree of bools (a prefix of the params) or a
      callable ``params -> pytree of bools``, e.g. ``layca_optax.default_mask`` for the
      kernels; unselected leaves are ``None``.
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
  selection = _select(
      params, init_params, _every_leaf if mask is None else mask, rotation_axes,
      "cosine_distance", ("params", "reference params"), _PAIRS_FIX,
  )
  return selection.per_leaf(
      _pair_distances(selection.pairs, selection.vector_axes, axis_name)
  )


def rotation_angle(
    params: Any,
    other_params: Any,
    *,
    mask: Any = None,
    axis_name: _numerics.AxisName | None = None,
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
    mask: as in ``cosine_distance`` (``None``: every leaf).
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
  selection = _select(
      params, other_params, _every_leaf if mask is None else mask, rotation_axes,
      "rotation_angle", ("params", "reference params"), _PAIRS_FIX,
  )
  distances = _pair_distances(selection.pairs, selection.vector_axes, axis_name)
  return selection.per_leaf([_angle(d) for d in distances])


class MeasureRotationState(NamedTuple):
  """State of ``measure_rotation``: the rotation of the step just taken."""

  # The params' structure: float32 angle in radians for layer leaves (one per rotating
  # vector with rotation_axes), None for the other leaves; zeros before the first step.
  angles: Any


def _step_angles(
    params: Any, updates: Any, mask: Any, axis_name, rotation_axes
) -> tuple[Any, Any]:
  """The angle of each layer's step, and the updates, unchanged in value but made to
  depend on the angles.

  The new params overwrite the donated old ones, which the angles read: unless the
  updates depend on the angles, XLA cannot order the two and copies every measured leaf
  first (17 copies of the params on the 18.4M-parameter benchmark tree, seen in the
  compiled HLO). ``optimization_barrier`` does not create that order; adding ``0 * d``
  (``d`` a value the rarely taken cond returns, so nothing is recomputed per element)
  does, inside the elementwise pass that applies the updates.
  """
  selection = _select(
      params, updates, mask, rotation_axes, "measure_rotation", ("params", "updates"),
      "Pass the params the updates apply to: tx.update(grads, state, params).",
  )
  distances = _pair_distances(
      selection.pairs, selection.vector_axes, axis_name, pairs_are_steps=True
  )
  flat_u = _tree.flatten(updates)
  tied = list(flat_u.leaves)
  if distances:
    zero = 0.0 * jnp.ravel(distances[0])[0]
    for i in selection.chosen:
      tied[i] = tied[i] + zero.astype(jnp.result_type(tied[i]))
  angles = selection.per_leaf([_angle(d) for d in distances])
  return angles, flat_u.unflatten(tied)


def measure_rotation(
    *,
    mask: _plan.MaskOrFn = None,
    axis_name: _numerics.AxisName | None = None,
    rotation_axes: _plan.AxesOrFn = None,
) -> optax.GradientTransformation:
  r"""Records each layer's rotation angle per step; passes the updates through unchanged.

  Place it last in any chain (after Adam, SGD, ``layca``...), so that the updates it sees
  are the ones applied. Its state holds, for each layer leaf, the angle in radians
  between ``params`` and ``apply_updates(params, updates)`` (the step just taken),

  .. math::
    \theta = 2 \operatorname{atan2}\big(\|\hat w - \hat w'\|, \|\hat w + \hat w'\|\big),

  in float32 from :math:`w \cdot w`, :math:`w \cdot u` and :math:`u \cdot u` (the one-pass
  form of ``cosine_distance``, with :math:`w' = w + u` never formed), exactly 0 for a zero
  update. It is the angle of the update as proposed; the float32 params after
  ``apply_updates`` differ from it by rounding (relative :math:`\epsilon \|w\|/\|u\|`).
  Measured against float64 angles between the float32 params before and after a step
  (leaves of 10, 10^4 and 10^6 elements, 3 draws each, norm kept or changed by 1 %):
  relative error at most 1.2e-4 at 1e-4 rad, 6e-4 at 1e-5 rad, 2e-2 at 1e-6 rad (the
  worst cases are 10-element leaves; at 10^6 elements: 1.2e-6, 1.7e-5, 9e-4).
  The state is zero-filled at ``init`` and keeps its structure. Read it with
  :func:`rotation_rates`. Cost: three reductions per layer every step (3.5-3.9x an
  SGD-with-momentum step on top of it on an 18.4M-parameter CNN on CPU, see
  BENCHMARKS.md); the state holds one float32 per layer.

  Args:
    mask: which leaves to measure: ``None`` for the kernels (``default_mask``, leaves with
      ``ndim >= 2``), a pytree of bools (a prefix of the params) or a callable
      ``params -> pytree of bools``. Other leaves are ``None`` in the state.
    axis_name: inside ``shard_map``/``pmap`` when each device holds a slice of a leaf,
      the mesh axis (or axes) to sum over (see ``cosine_distance``).
    rotation_axes: which axes form one vector (see ``layca``); e.g. with
      ``stacked_layer_axes`` a ``(blocks, d_in, d_out)`` kernel gets one angle per block.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from layca_optax import layca, measure_rotation, rotation_rates
    >>> params = {'w': jnp.eye(2)}
    >>> tx = optax.chain(layca(0.1), measure_rotation())
    >>> state = tx.init(params)
    >>> grads = {'w': jnp.array([[0.0, 1.0], [0.0, 0.0]])}
    >>> _, state = tx.update(grads, state, params)
    >>> print(f"{float(rotation_rates(state)['w']):.5f}")  # arctan(0.1)
    0.09967
  """
  caller = "measure_rotation"
  layers = _plan.default_mask if mask is None else mask

  def init_fn(params):
    plan = _plan.make_plan(
        params, mask=layers, rotation_axes=rotation_axes, layer_order=None,
        caller=caller, check_dtypes=False,
    )
    zeros = [
        jnp.zeros(leaf.vector_count_shape, jnp.float32) if leaf.is_layer else None
        for leaf in plan.leaves
    ]
    return MeasureRotationState(angles=_tree.flatten(params).unflatten(zeros))

  def update_fn(updates, state, params=None):
    _tree.check_params(params, caller)
    angles, updates = _step_angles(params, updates, layers, axis_name, rotation_axes)
    # The new angles in the containers of the old state (an NNX State stays a State).
    angles = jax.tree.unflatten(jax.tree.structure(state.angles), jax.tree.leaves(angles))
    return updates, MeasureRotationState(angles=angles)

  return optax.GradientTransformation(init_fn, update_fn)


def _is_measure_state(x: Any) -> bool:
  return isinstance(x, MeasureRotationState)


def rotation_rates(opt_state: Any) -> Any:
  r"""The latest per-layer rotation angles in radians (the paper's "rotation rates").

  Reads what ``measure_rotation`` recorded at the last step. Finds its state however
  deeply it is nested (``optax.chain``, ``inject_hyperparams``, ``MultiSteps``,
  ``apply_if_finite``, ``nnx.Optimizer``'s ``opt_state``...). Works under ``jit``. To
  collect a run's rates, keep each step's result and stack them:
  ``jax.tree.map(lambda *a: jnp.stack(a), *records)``; that is what ``replay_rates`` and
  ``plot_rotation_rates`` take.

  Args:
    opt_state: an optimizer state containing exactly one ``MeasureRotationState``.

  Returns:
    A pytree with the structure of the params: per measured leaf a float32 angle (an
    array with one angle per vector with ``rotation_axes``), ``None`` elsewhere.

  Raises:
    ValueError: if the state contains no ``measure_rotation`` state, or several.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from layca_optax import measure_rotation, rotation_rates
    >>> params = {'w': jnp.ones((2, 2))}
    >>> state = optax.chain(optax.adam(1e-3), measure_rotation()).init(params)
    >>> float(rotation_rates(state)['w'])  # zeros until the first step
    0.0
  """
  found = [
      x for x in jax.tree.leaves(opt_state, is_leaf=_is_measure_state)
      if _is_measure_state(x)
  ]
  if len(found) != 1:
    what = "no measure_rotation state" if not found else f"{len(found)} of them"
    raise ValueError(
        f"rotation_rates: the optimizer state contains {what}. Put exactly one "
        "layca_optax.measure_rotation() last in the chain, e.g. "
        "optax.chain(optax.adam(1e-3), layca_optax.measure_rotation()), and pass the "
        "state of that optimizer."
    )
  return _tree.unwrap(found[0].angles)
