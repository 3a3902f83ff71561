r"""The four operations of Layca (Algorithm 1 of the paper) as composable optax transforms.

For a layer with weights :math:`w` and a step :math:`s` proposed by a base optimizer:

1. ``project_orthogonal``: :math:`s \leftarrow s - \frac{s \cdot w}{w \cdot w} w`
2. ``normalize_rotation``: :math:`s \leftarrow s \, \|w\| / \|s\|`
3. ``scale_by_layer_rates``: :math:`u = -\rho_l(t)\, s`
4. ``project_to_sphere``: :math:`u \leftarrow w' - w` with
   :math:`w' = (w + u)\, \|w_0\| / \|w + u\|`

Chained in this order after any base transform they are Layca, and
``layca(...)`` computes the same thing with fewer reads of each layer. Every reduction is
done in float32 whatever the dtype of the params; each transform returns updates in the
dtype it received (``project_to_sphere``, the last one, in the dtype of the params).

Rules shared with ``layca``:

* A projected step that vanishes (zero gradient, a gradient parallel to :math:`w` within
  :data:`PARALLEL_RTOL`, the zeros of ``optax.MultiSteps``) gives a zero update, so the
  params stay bit-identical.
* A layer whose weights have zero norm has no direction to rotate: operations 1, 2 and 4
  leave its step alone and operation 3 scales it by the global :math:`-\rho(t)`, like a
  non-layer leaf. Nothing divides by a zero norm.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _axes, _layers, _rates, _tree

__all__ = [
    "PARALLEL_RTOL",
    "ProjectToSphereState",
    "ScaleByLayerRatesState",
    "normalize_rotation",
    "project_orthogonal",
    "project_to_sphere",
    "scale_by_layer_rates",
]

#: A step whose component orthogonal to :math:`w` is at most this fraction of its norm
#: (an angle below 1e-5 rad between step and weights) is numerically parallel to
#: :math:`w`: float32 rounding alone leaves up to about 3e-7 of it after the projection,
#: and normalising that residue would rotate the layer in a random direction.
PARALLEL_RTOL = 1e-5

#: Squared norms at or below the smallest normal float32 count as zero: their square
#: roots and ratios would be denormal or infinite.
TINY = float(jnp.finfo(jnp.float32).tiny)


# -- per-leaf numerics shared by the transforms and the fused optimizer -----------------


def tangent_is_zero(perp_sq: jax.Array, step_sq: jax.Array) -> jax.Array:
  """Is a projected step (squared norm ``perp_sq``, from ``step_sq``) numerically zero?"""
  return (perp_sq <= PARALLEL_RTOL**2 * step_sq) | (perp_sq <= TINY)


def safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den`` where ``den != 0``, else 0 (no NaN in either branch's gradient)."""
  nonzero = den != 0
  return jnp.where(nonzero, num / jnp.where(nonzero, den, 1.0), 0.0)




class _Leaves(NamedTuple):
  """Updates and params of one call, flattened once, and which leaves are layers."""

  updates: _tree.Flat
  params: _tree.Flat
  plan: _layers.LayerPlan


def _prepare(
    updates: Any,
    params: Any,
    mask: _layers.MaskOrFn,
    owner: str,
    layer_order: Sequence[str] | None = None,
    rotation_axes: _axes.AxesOrFn = None,
) -> _Leaves:
  _tree.check_params(params, owner)
  flat_u, flat_p = _tree.flatten(updates), _tree.flatten(params)
  _tree.check_same_structure(flat_u, flat_p, owner)
  plan = _layers.plan_layers(flat_p, params, mask, layer_order, owner, rotation_axes)
  return _Leaves(flat_u, flat_p, plan)


def reducers(plan: _layers.LayerPlan, axis_name: _tree.AxisName | None) -> list[Any]:
  """Each leaf's reduction: over its rotation axes (one value per vector), and the mesh."""
  return [_tree.reducer(axis_name, a.axes) for a in plan.axes]


def _map_layers(
    leaves: _Leaves, fn: Callable[..., jax.Array], axis_name, *per_leaf: Sequence[Any]
) -> Any:
  """Applies ``fn(update, param, *extras, dot=...)`` to layer leaves; others pass."""
  out = [
      fn(u, p, *extra, dot=dot) if layer else u
      for u, p, layer, dot, *extra in zip(
          leaves.updates.leaves, leaves.params.leaves, leaves.plan.is_layer,
          reducers(leaves.plan, axis_name), *per_leaf,
      )
  ]
  return leaves.updates.unflatten(out)


# -- 1. orthogonal projection ------------------------------------------------------------


def _project_leaf(s: jax.Array, w: jax.Array, *, dot) -> jax.Array:
  s32, w32 = _tree.as_f32(s), _tree.as_f32(w)
  ww = dot(w32, w32)
  perp = s32 - safe_ratio(dot(s32, w32), ww) * w32
  perp = jnp.where(tangent_is_zero(dot(perp, perp), dot(s32, s32)), 0.0, perp)
  # A zero-norm layer has no tangent space: its step passes unchanged.
  return jnp.where(ww > 0, perp, s32).astype(s.dtype)


def project_orthogonal(
    *,
    mask: _layers.MaskOrFn = None,
    axis_name: _tree.AxisName | None = None,
    rotation_axes: _axes.AxesOrFn = None,
) -> optax.GradientTransformation:
  r"""Operation 1 of Layca: removes the component of each layer's step along its weights.

  .. math::
    s \leftarrow s - \frac{s \cdot w}{w \cdot w}\, w

  so that the step is tangent to the sphere on which :math:`w` lies. A step parallel to
  :math:`w` (within ``PARALLEL_RTOL``) becomes exactly zero; a zero-norm layer's step passes
  unchanged. Non-layer leaves pass unchanged.

  Args:
    mask: which leaves are layers: ``None`` (leaves with ``ndim >= 2``), a pytree of bools
      (a prefix of the params) or a callable ``params -> pytree of bools``.
    axis_name: inside ``shard_map``/``pmap`` where each device holds a slice of a leaf,
      the mesh axis (or axes) to sum per-layer reductions over; ``None`` otherwise (plain
      ``jax.jit`` over sharded arrays needs nothing).
    rotation_axes: which axes of each leaf form one rotating vector: ``None`` (the whole
      leaf), a pytree of axes tuples (a prefix of the params) or a callable
      ``params -> such a pytree``, e.g. ``output_unit_axes`` (per neuron) or
      ``stacked_layer_axes`` (scanned blocks); see ``layca``.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import project_orthogonal
    >>> w = {'kernel': jnp.array([[1.0, 0.0], [0.0, 0.0]])}
    >>> g = {'kernel': jnp.array([[2.0, 3.0], [0.0, 0.0]])}
    >>> tx = project_orthogonal()
    >>> step, _ = tx.update(g, tx.init(w), w)
    >>> step['kernel'].tolist()
    [[0.0, 3.0], [0.0, 0.0]]
  """

  def update_fn(updates, state, params=None):
    leaves = _prepare(updates, params, mask, "project_orthogonal", None, rotation_axes)
    return _map_layers(leaves, _project_leaf, axis_name), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# -- 2. rotation-based normalisation -----------------------------------------------------


def _normalize_leaf(s: jax.Array, w: jax.Array, *, dot) -> jax.Array:
  s32 = _tree.as_f32(s)
  ww, ss = dot(w, w), dot(s32, s32)
  scale = jnp.sqrt(ww) / jnp.sqrt(jnp.where(ss > TINY, ss, 1.0))
  scaled = jnp.where(ss > TINY, scale * s32, 0.0)
  return jnp.where(ww > 0, scaled, s32).astype(s.dtype)


def normalize_rotation(
    *,
    mask: _layers.MaskOrFn = None,
    axis_name: _tree.AxisName | None = None,
    rotation_axes: _axes.AxesOrFn = None,
) -> optax.GradientTransformation:
  r"""Operation 2 of Layca: rescales each layer's step to the norm of its weights.

  .. math::
    s \leftarrow s\, \frac{\|w\|}{\|s\|}

  After ``project_orthogonal`` this makes one step of size :math:`\rho` rotate the layer by
  exactly :math:`\arctan \rho`. A zero step stays zero; a zero-norm layer's step passes
  unchanged. Non-layer leaves pass unchanged.

  Args:
    mask: which leaves are layers (see ``project_orthogonal``).
    axis_name: see ``project_orthogonal``.
    rotation_axes: see ``project_orthogonal``.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import normalize_rotation
    >>> w = {'kernel': jnp.array([[3.0, 4.0]])}
    >>> tx = normalize_rotation()
    >>> step, _ = tx.update({'kernel': jnp.array([[0.0, 0.5]])}, tx.init(w), w)
    >>> step['kernel'].tolist()
    [[0.0, 5.0]]
  """

  def update_fn(updates, state, params=None):
    leaves = _prepare(updates, params, mask, "normalize_rotation", None, rotation_axes)
    return _map_layers(leaves, _normalize_leaf, axis_name), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# -- 3. layer-wise rates -----------------------------------------------------------------


class ScaleByLayerRatesState(NamedTuple):
  """State of ``scale_by_layer_rates``."""

  count: jax.Array  # shape=(), int32: steps taken, the argument of the schedule.


def layer_rates(
    rates: Sequence[jax.Array], plan: _layers.LayerPlan, alpha: Any, depth_exponent: Any
) -> list[jax.Array]:
  """rho_l(t) of every leaf: its rho(t) (``rates``) times the alpha multiplier for layers."""
  if plan.num_layers == 0:
    return list(rates)
  multipliers = _layers.traced_multipliers(plan.num_layers, alpha, depth_exponent)

  def leaf_rate(rate, start, axes):
    if start is None:
      return rate
    if not axes.stack_axes:
      return multipliers[start] * rate
    # A stacked leaf: one layer per slice, consecutive in depth, shaped to broadcast.
    block = multipliers[start:start + axes.num_slices]
    return block.reshape(axes.rate_shape) * rate

  return [leaf_rate(*leaf) for leaf in zip(rates, plan.depth, plan.axes)]


def scale_by_layer_rates(
    learning_rate: optax.ScalarOrSchedule,
    *,
    alpha: float = 0.0,
    depth_exponent: float = 5.0,
    layer_order: Sequence[str] | None = None,
    mask: _layers.MaskOrFn = None,
    axis_name: _tree.AxisName | None = None,
    rotation_axes: _axes.AxesOrFn = None,
) -> optax.GradientTransformation:
  r"""Operation 3 of Layca: multiplies each layer's step by :math:`-\rho_l(t)`.

  .. math::
    u_l = -\rho_l(t)\, s_l, \qquad \rho_l(t) = m_l(\alpha)\, \rho(t)

  with the multipliers :math:`m_l` of ``alpha_multipliers`` (layer :math:`l` counted from the
  input in ``layer_order``). Non-layer leaves, and layers with zero-norm weights, get
  :math:`-\rho(t)\, s`. The minus sign makes it a descent step, as
  ``optax.scale_by_learning_rate`` does.

  Args:
    learning_rate: :math:`\rho(t)`: a float or an optax schedule (``step -> rate``), or a
      ``PerLeafRates`` (e.g. from ``replay_rates``) for one rate per leaf.
    alpha: in ``[-1, 1]``; 0 gives every layer the same rate.
    depth_exponent: the factor in the multipliers' exponent (5 in the authors' code, 1 in
      the paper's printed equation).
    layer_order: layer paths from input to output, e.g. ``forward_order(...)``; default:
      natural order of the paths. Only matters when ``alpha != 0``.
    mask: which leaves are layers (see ``project_orthogonal``).
    axis_name: see ``project_orthogonal``.
    rotation_axes: see ``project_orthogonal``.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import scale_by_layer_rates
    >>> params = {'a': jnp.ones((2, 2)), 'b': jnp.ones((2, 2))}
    >>> tx = scale_by_layer_rates(0.1, alpha=-0.5, depth_exponent=1.0)
    >>> step, _ = tx.update(params, tx.init(params), params)
    >>> [round(float(step[k][0, 0]), 4) for k in 'ab']
    [-0.1, -0.05]
  """
  _rates.check_learning_rate(learning_rate, "scale_by_layer_rates")
  _layers.check_alpha(alpha, "scale_by_layer_rates")
  owner = "scale_by_layer_rates"

  def init_fn(params):
    # Validates the mask and the layer order as soon as the params are known.
    params = _tree.unwrap(params)
    _layers.plan_layers(
        _tree.flatten(params), params, mask, layer_order, owner, rotation_axes
    )
    return ScaleByLayerRatesState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    leaves = _prepare(updates, params, mask, owner, layer_order, rotation_axes)
    rhos = _rates.leaf_rates(
        learning_rate, state.count, leaves.params, params, leaves.plan.axes, owner
    )
    rates = layer_rates(rhos, leaves.plan, alpha, depth_exponent)
    out = []
    for s, w, layer, rho, rho_l, dot in zip(
        leaves.updates.leaves, leaves.params.leaves, leaves.plan.is_layer, rhos, rates,
        reducers(leaves.plan, axis_name),
    ):
      if layer:
        rho_l = jnp.where(dot(w, w) > 0, rho_l, rho)
      out.append((-rho_l * _tree.as_f32(s)).astype(jnp.result_type(s)))
    new_state = ScaleByLayerRatesState(count=optax.safe_increment(state.count))
    return leaves.updates.unflatten(out), new_state

  return optax.GradientTransformation(init_fn, update_fn)


# -- 4. projection back to the initial sphere --------------------------------------------


class ProjectToSphereState(NamedTuple):
  """State of ``project_to_sphere``."""

  # The params' structure: ||w_0|| (float32) for layer leaves, 0 for the others; one
  # value per rotating vector (a scalar for a whole leaf; shape = the non-rotation axes).
  initial_norms: Any


def initial_norms(
    params: Any, plan: _layers.LayerPlan, owner: str, axis_name: _tree.AxisName | None
) -> Any:
  """Float32 norm of each layer's vectors (0 for other leaves); warns on zero norms."""
  flat = _tree.flatten(params)
  norms = [
      jnp.squeeze(jnp.sqrt(dot(w, w)), axis=a.axes) if layer
      else jnp.zeros([], jnp.float32)
      for w, layer, a, dot in zip(
          flat.leaves, plan.is_layer, plan.axes, reducers(plan, axis_name)
      )
  ]
  _warn_single_elements(flat, plan, owner)
  _warn_zero_norms(flat.paths, norms, plan.is_layer, owner)
  return flat.unflatten(norms)


def broadcast_norms(initial_norms: Any, plan: _layers.LayerPlan) -> list[jax.Array]:
  """The stored initial norms, each with size-1 rotation axes to broadcast on its leaf."""
  return [
      jnp.expand_dims(n, a.axes) if layer else n
      for n, a, layer in zip(
          _tree.flatten(initial_norms).leaves, plan.axes, plan.is_layer
      )
  ]


def _warn_single_elements(flat: _tree.Flat, plan: _layers.LayerPlan, owner: str) -> None:
  single = [
      path
      for path, w, layer, a in zip(flat.paths, flat.leaves, plan.is_layer, plan.axes)
      if layer and math.prod(jnp.shape(w)[i] for i in a.axes) == 1
  ]
  if single:
    warnings.warn(
        f"{owner}: layer leaves {single} have a single element. A one-element vector has "
        "no direction to rotate to (every step is parallel to it), so Layca never changes "
        "them. Exclude them from the layers with `mask=` (they then get "
        "-learning_rate * step), or freeze them on purpose with optax.partition.",
        stacklevel=3,
    )


def _warn_zero_norms(paths, norms, is_layer, owner: str) -> None:
  try:
    zero = [
        p for p, n, layer in zip(paths, norms, is_layer)
        if layer and bool(jnp.any(n == 0))
    ]
  except jax.errors.ConcretizationTypeError:
    return  # traced (jit, eval_shape): values unknown
  if zero:
    warnings.warn(
        f"{owner}: layer leaves {zero} have zero norm at init. A zero vector has no "
        "direction to rotate, so they get plain -learning_rate * step updates and are "
        "never projected back to a sphere. Initialise them with non-zero values (e.g. "
        "He/LeCun init) or exclude them from the layers with `mask=`.",
        stacklevel=3,
    )


def _sphere_leaf(u: jax.Array, w: jax.Array, norm0: jax.Array, *, dot) -> jax.Array:
  u32, w32 = _tree.as_f32(u), _tree.as_f32(w)
  moved = w32 + u32
  norm = jnp.sqrt(dot(moved, moved))
  projected = moved * safe_ratio(norm0, norm) - w32
  # No step, no sphere (norm0 == 0) or nothing to project (moved == 0): keep u as it is,
  # so a zero step leaves the params bit-identical.
  keep = (dot(u32, u32) == 0) | (norm0 == 0) | (norm == 0)
  return jnp.where(keep, u32, projected).astype(jnp.result_type(w))


def project_to_sphere(
    *,
    mask: _layers.MaskOrFn = None,
    axis_name: _tree.AxisName | None = None,
    rotation_axes: _axes.AxesOrFn = None,
) -> optax.GradientTransformation:
  r"""Operation 4 of Layca: puts each layer back on the sphere of its initial norm.

  At ``init`` it stores :math:`\|w_0\|` (float32) for each layer; at ``update`` it turns the
  incoming update :math:`u` into

  .. math::
    u \leftarrow \frac{\|w_0\|}{\|w + u\|}\,(w + u) - w

  so that ``optax.apply_updates(params, updates)`` lands on that sphere. Storing the
  initial norm (rather than renormalising to the current one) keeps float32 rounding from
  drifting the norm over long runs. Must come last in a chain: whatever follows would move
  the params off the sphere. A zero update stays zero; layers with a zero initial norm are
  left alone. Updates come back in the params' dtype.

  Args:
    mask: which leaves are layers (see ``project_orthogonal``).
    axis_name: see ``project_orthogonal``.
    rotation_axes: see ``project_orthogonal``.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import project_to_sphere
    >>> w = {'kernel': jnp.array([[3.0, 4.0]])}
    >>> tx = project_to_sphere()
    >>> state = tx.init(w)
    >>> step, _ = tx.update({'kernel': jnp.array([[3.0, 4.0]])}, state, w)
    >>> (w['kernel'] + step['kernel']).tolist()  # doubled, then back to norm 5
    [[3.0, 4.0]]
  """
  owner = "project_to_sphere"

  def init_fn(params):
    params = _tree.unwrap(params)
    flat = _tree.flatten(params)
    plan = _layers.plan_layers(flat, params, mask, None, owner, rotation_axes)
    return ProjectToSphereState(
        initial_norms=initial_norms(params, plan, owner, axis_name)
    )

  def update_fn(updates, state, params=None):
    leaves = _prepare(updates, params, mask, owner, rotation_axes=rotation_axes)
    norms0 = broadcast_norms(state.initial_norms, leaves.plan)
    return _map_layers(leaves, _sphere_leaf, axis_name, norms0), state

  return optax.GradientTransformation(init_fn, update_fn)
