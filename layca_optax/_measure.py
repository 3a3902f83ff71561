r"""Layer rotation measured: cosine distances, angles and per-step rotation, in float32.

The textbook :math:`1 - \frac{a \cdot b}{\|a\| \|b\|}` cancels in float32: below about
1e-4 rad it returns 0 or noise, even negative values. The measures use forms that keep
their relative accuracy for small angles:

* between two trees (``cosine_distance``, ``rotation_angle``, the curves), with unit vectors
  :math:`\hat a = a / \|a\|`, :math:`\hat b = b / \|b\|` (two passes: the norms, then one
  sum), exact whatever the norms:

  .. math::
    1 - \cos\theta = \tfrac12 \|\hat a - \hat b\|^2, \qquad
    \theta = 2 \operatorname{atan2}\big(\|\hat a - \hat b\|, \|\hat a + \hat b\|\big);

* for one step (``measure_rotation()``, every step, so one pass): the update :math:`u`
  split along the params, :math:`u = k\, w + p` with :math:`p \perp w`
  (``_layca.tangent_parts``, the sums of Layca's step 1), so that
  :math:`w + u = (1 + k)\, w + p` (never formed) and
  :math:`\theta = \operatorname{atan2}(\|p\|, (1 + k) \|w\|)`; only a step mostly along
  :math:`w` (of norm) takes a second pass, behind one ``lax.cond`` for the tree.

``measure_rotation()`` is a pass-through optax transform, placed last in a chain: at each
step it stores the angle by which each layer turns. This is the robust
form of ALGORITHM.md section 5 (the authors' recorder took :math:`\sqrt{1/(1-d)^2 - 1}` from
a cosine distance :math:`d` that float32 made negative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _layca, _numerics, _plan, _tree

__all__ = [
    "MeasureRotationState",
    "cosine_distance",
    "measure_rotation",
    "rotation_angle",
    "rotation_rates",
]


# -- the angle of a pair, from its tangent parts ------------------------------------------------


class _Pair(NamedTuple):
  """``a = k b + p`` with ``p`` orthogonal to ``b``, one value per vector: an angle's parts."""

  k: jax.Array
  pp: jax.Array  # ||p||^2
  bb: jax.Array  # ||b||^2
  a_is_zero: jax.Array

  def angle(self) -> jax.Array:
    """``atan2(||p||, k ||b||)``; a zero vector is at pi / 2 from any other, 0 from a zero."""
    theta = jnp.arctan2(jnp.sqrt(jnp.maximum(self.pp, 0.0)), self.k * jnp.sqrt(self.bb))
    return self._zero_rule(theta, math.pi / 2)

  def _zero_rule(self, value: jax.Array, one_zero: float) -> jax.Array:
    b_is_zero = self.bb == 0
    both = self.a_is_zero & b_is_zero
    return jnp.where(both, 0.0, jnp.where(self.a_is_zero | b_is_zero, one_zero, value))


def _changes(
    pairs: Sequence[tuple[Any, Any]],
    vector_axes: Sequence[tuple[int, ...]],
    axis_name: _numerics.AxisName | None,
) -> list[_Pair]:
  """``b + d`` of each pair ``(b, d)`` split along ``b``: ``(1 + k) b + p`` for ``d = k b + p``.

  The change ``d`` (an update, or ``a - b``) is what the sums read, so that a small
  rotation does not cancel: only a change mostly along ``b`` (of norm) takes the second
  pass of ``_layca.tangent_parts``. ``b + d`` is never formed.
  """
  parts = _layca.tangent_parts(
      [d for _, d in pairs], [b for b, _ in pairs], vector_axes, axis_name
  )
  # b + d is zero only if d = -b exactly (or both are zero).
  return [
      _Pair(1.0 + t.k, t.pp, t.ww,
            jnp.where(t.ww == 0, t.xx == 0, (t.k == -1.0) & (t.pp <= 0)))
      for t in parts
  ]


class _UnitPair(NamedTuple):
  """``||a^ - b^||^2`` of unit vectors ``a^ = a / |a|``, ``b^ = b / |b|``, per vector."""

  dd: jax.Array
  equal: jax.Array  # a == b exactly: at distance exactly 0
  a_is_zero: jax.Array
  b_is_zero: jax.Array

  def _zero_rule(self, value: jax.Array, one_zero: float) -> jax.Array:
    same = self.equal | (self.a_is_zero & self.b_is_zero)
    return jnp.where(same, 0.0, jnp.where(self.a_is_zero | self.b_is_zero, one_zero, value))

  def angle(self) -> jax.Array:
    """``2 atan2(||a^ - b^||, ||a^ + b^||)``, with ``||a^ + b^||^2 = 4 - ||a^ - b^||^2``."""
    dd = jnp.clip(self.dd, 0.0, 4.0)
    return self._zero_rule(2.0 * jnp.arctan2(jnp.sqrt(dd), jnp.sqrt(4.0 - dd)), math.pi / 2)

  def cosine_distance(self) -> jax.Array:
    """``1 - cos = ||a^ - b^||^2 / 2``."""
    return self._zero_rule(jnp.clip(0.5 * self.dd, 0.0, 2.0), 1.0)


def _unit_pairs(
    pairs: Sequence[tuple[Any, Any]],
    vector_axes: Sequence[tuple[int, ...]],
    axis_name: _numerics.AxisName | None,
) -> list[_UnitPair]:
  """Two passes per pair, whatever the two norms: the norms (and whether ``a == b``), then
  ``||a^ - b^||^2``.

  Exact for any pair in float32 (a scale of ``a`` changes nothing, a tiny rotation keeps
  its relative accuracy), with no rare case: the measures between two trees run once
  per record, not per step, so they take the second pass rather than a cond.
  """
  out = []
  for (a, b), axes in zip(pairs, vector_axes):
    a, b = _numerics.as_f32(a), _numerics.as_f32(b)
    aa = _numerics.sum_of_products(a, a, axes, axis_name)
    bb = _numerics.sum_of_products(b, b, axes, axis_name)
    change = a - b
    equal = _numerics.sum_of_products(change, change, axes, axis_name) == 0
    inv_a = _numerics.safe_ratio(1.0, jnp.sqrt(aa))
    inv_b = _numerics.safe_ratio(1.0, jnp.sqrt(bb))
    diff = a * inv_a - b * inv_b
    out.append(_UnitPair(_numerics.sum_of_products(diff, diff, axes, axis_name),
                         equal, aa == 0, bb == 0))
  return out


# -- selecting leaves -------------------------------------------------------------------------


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
      out[i] = _numerics.drop_vector_axes(value, axes)
    return self.flat.unflatten(out)


def _select(spec: _plan.LayerSpec, params: Any, other: Any, names, fix) -> _Selection:
  """The measured leaves of ``params`` and ``other`` (checked to have one structure)."""
  second, first, plan = spec.pair(params, other, names, fix)
  return _Selection(
      first,
      plan.layers,
      [(first.leaves[i], second.leaves[i]) for i in plan.layers],
      [plan.leaves[i].vector_axes for i in plan.layers],
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
  spec = _plan.LayerSpec(
      "cosine_distance", mask, rotation_axes, every_leaf=True, real_layers=False
  )
  selection = _select(spec, params, init_params, ("params", "reference params"), _PAIRS_FIX)
  pairs = _unit_pairs(selection.pairs, selection.vector_axes, axis_name)
  return selection.per_leaf([pair.cosine_distance() for pair in pairs])


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

  with :math:`\hat a = a / \|a\|`, for each leaf :math:`a` of ``params`` and :math:`b` of
  ``other_params``. One Layca step
  rotates each layer by :math:`\arctan \rho_l(t)`: ``rotation_angle(new_params, params)``
  measures it. A zero leaf is at angle 0 from another zero leaf and :math:`\pi / 2` from
  anything else.

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
  spec = _plan.LayerSpec(
      "rotation_angle", mask, rotation_axes, every_leaf=True, real_layers=False
  )
  selection = _select(spec, params, other_params, ("params", "reference params"), _PAIRS_FIX)
  pairs = _unit_pairs(selection.pairs, selection.vector_axes, axis_name)
  return selection.per_leaf([pair.angle() for pair in pairs])


class MeasureRotationState(NamedTuple):
  """State of ``measure_rotation``: the rotation of the step just taken."""

  # The params' structure: float32 angle in radians for layer leaves (one per rotating
  # vector with rotation_axes), None for the other leaves; zeros before the first step.
  angles: Any


def _measured_step(spec: _plan.LayerSpec, params: Any, updates: Any, axis_name) -> Any:
  """The angle of each measured layer's step (``None`` for the other leaves)."""
  updates, params, plan = spec.prepare(
      updates, params, fix="Pass the params the updates apply to: "
      "tx.update(grads, state, params).",
  )
  selection = _Selection(
      params, plan.layers, [(params.leaves[i], updates.leaves[i]) for i in plan.layers],
      [plan.leaves[i].vector_axes for i in plan.layers],
  )
  steps = _changes(selection.pairs, selection.vector_axes, axis_name)
  return selection.per_leaf([step.angle() for step in steps])


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
    \theta = \operatorname{atan2}\big(\|p\|,\; (1 + k)\, \|w\|\big), \qquad
    u = k\, w + p, \quad p \perp w,

  in float32 from one pass over :math:`w` and :math:`u` (:math:`w' = w + u` is never
  formed; a second pass where :math:`u` is nearly parallel to :math:`w`), exactly 0 for a
  zero update. It is the angle of the update as proposed; the float32 params after
  ``apply_updates`` differ from it by rounding (relative :math:`\epsilon \|w\|/\|u\|`).
  The updates pass through untouched (the same arrays, even NaN or inf). The state is
  zero-filled at ``init`` and keeps its structure. Read it with :func:`rotation_rates`.
  Cost: one pass of three sums per layer every step (BENCHMARKS.md); the state holds one
  float32 per layer.

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
  spec = _plan.LayerSpec("measure_rotation", mask, rotation_axes, real_layers=False)

  def init_fn(params):
    plan = spec.plan(params)
    zeros = [
        jnp.zeros(leaf.vector_count_shape, jnp.float32) if leaf.is_layer else None
        for leaf in plan.leaves
    ]
    return MeasureRotationState(angles=_tree.flatten(params).unflatten(zeros))

  def update_fn(updates, state, params=None):
    angles = _measured_step(spec, params, updates, axis_name)
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
