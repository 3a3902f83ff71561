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

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _numerics, _plan, _rates, _tree
from layca_optax._numerics import TINY, as_f32, safe_ratio, tangent_is_zero

__all__ = [
    "ProjectToSphereState",
    "ScaleByLayerRatesState",
    "normalize_rotation",
    "project_orthogonal",
    "project_to_sphere",
    "scale_by_layer_rates",
]

def _map_layers(
    leaves: _plan.Prepared, fn: Callable[..., jax.Array], axis_name, *per_leaf: Sequence[Any]
) -> Any:
  """Applies ``fn(update, param, *extras, sum_of_products=...)`` to layer leaves (the
  sums per rotating vector); other leaves pass unchanged."""
  out = []
  for u, p, leaf, *extra in zip(
      leaves.updates.leaves, leaves.params.leaves, leaves.plan.leaves, *per_leaf
  ):
    if not leaf.is_layer:
      out.append(u)
      continue
    sums = functools.partial(
        _numerics.sum_of_products, axes=leaf.vector_axes, axis_name=axis_name
    )
    out.append(fn(u, p, *extra, sum_of_products=sums))
  return leaves.updates.unflatten(out)


# -- 1. orthogonal projection ------------------------------------------------------------


def _project_leaf(s: jax.Array, w: jax.Array, *, sum_of_products) -> jax.Array:
  s32, w32 = as_f32(s), as_f32(w)
  ww = sum_of_products(w32, w32)
  perp = s32 - safe_ratio(sum_of_products(s32, w32), ww) * w32
  vanishes = tangent_is_zero(sum_of_products(perp, perp), sum_of_products(s32, s32))
  perp = jnp.where(vanishes, 0.0, perp)
  # A zero-norm layer has no tangent space: its step passes unchanged.
  return jnp.where(ww > 0, perp, s32).astype(s.dtype)


def project_orthogonal(
    *,
    mask: _plan.MaskOrFn = None,
    axis_name: _numerics.AxisName | None = None,
    rotation_axes: _plan.AxesOrFn = None,
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

  spec = _plan.LayerSpec("project_orthogonal", mask, rotation_axes)

  def update_fn(updates, state, params=None):
    return _map_layers(spec.prepare(updates, params), _project_leaf, axis_name), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# -- 2. rotation-based normalisation -----------------------------------------------------


def _normalize_leaf(s: jax.Array, w: jax.Array, *, sum_of_products) -> jax.Array:
  s32 = as_f32(s)
  ww, ss = sum_of_products(w, w), sum_of_products(s32, s32)
  scale = jnp.sqrt(ww) / jnp.sqrt(jnp.where(ss > TINY, ss, 1.0))
  scaled = jnp.where(ss > TINY, scale * s32, 0.0)
  return jnp.where(ww > 0, scaled, s32).astype(s.dtype)


def normalize_rotation(
    *,
    mask: _plan.MaskOrFn = None,
    axis_name: _numerics.AxisName | None = None,
    rotation_axes: _plan.AxesOrFn = None,
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

  spec = _plan.LayerSpec("normalize_rotation", mask, rotation_axes)

  def update_fn(updates, state, params=None):
    return _map_layers(spec.prepare(updates, params), _normalize_leaf, axis_name), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# -- 3. layer-wise rates -----------------------------------------------------------------


class ScaleByLayerRatesState(NamedTuple):
  """State of ``scale_by_layer_rates``."""

  # shape=(), int32: steps taken, the argument of the schedule. Named `count` as in
  # optax's states (it shadows tuple.count, as theirs do).
  count: jax.Array  # type: ignore[assignment]


def scale_by_layer_rates(
    learning_rate: _rates.LearningRate,
    *,
    alpha: jax.typing.ArrayLike = 0.0,
    depth_exponent: jax.typing.ArrayLike = 5.0,
    layer_order: Sequence[str] | None = None,
    mask: _plan.MaskOrFn = None,
    axis_name: _numerics.AxisName | None = None,
    rotation_axes: _plan.AxesOrFn = None,
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
  spec = _plan.LayerSpec("scale_by_layer_rates", mask, rotation_axes, layer_order)
  _rates.check_learning_rate(learning_rate, spec.owner)
  _plan.check_alpha(alpha, spec.owner)

  def init_fn(params):
    spec.plan(params)  # validates the mask and the layer order as soon as params are known
    return ScaleByLayerRatesState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    leaves = spec.prepare(updates, params)
    rhos = _rates.leaf_rates(learning_rate, state.count, params, leaves.plan)
    rates = _plan.layer_rates(leaves.plan, rhos, alpha, depth_exponent)
    out = []
    for s, w, leaf, rho, rho_l in zip(
        leaves.updates.leaves, leaves.params.leaves, leaves.plan.leaves, rhos, rates
    ):
      if leaf.is_layer:  # a zero-norm layer has no direction: -rho(t) s
        ww = _numerics.sum_of_products(w, w, leaf.vector_axes, axis_name)
        rho_l = jnp.where(ww > 0, rho_l, rho)
      out.append((-rho_l * as_f32(s)).astype(jnp.result_type(s)))
    new_state = ScaleByLayerRatesState(count=optax.safe_increment(state.count))
    return leaves.updates.unflatten(out), new_state

  return optax.GradientTransformation(init_fn, update_fn)


# -- 4. projection back to the initial sphere --------------------------------------------


class ProjectToSphereState(NamedTuple):
  """State of ``project_to_sphere``."""

  # The params' structure: ||w_0|| (float32) for layer leaves, 0 for the others; one
  # value per rotating vector (a scalar for a whole leaf; shape = the non-rotation axes).
  initial_norms: Any


def _sphere_leaf(u: jax.Array, w: jax.Array, norm0: jax.Array, *, sum_of_products) -> jax.Array:
  u32, w32 = as_f32(u), as_f32(w)
  moved = w32 + u32
  norm = jnp.sqrt(sum_of_products(moved, moved))
  projected = moved * safe_ratio(norm0, norm) - w32
  # No step, no sphere (norm0 == 0) or nothing to project (moved == 0): keep u as it is,
  # so a zero step leaves the params bit-identical.
  keep = (sum_of_products(u32, u32) == 0) | (norm0 == 0) | (norm == 0)
  return jnp.where(keep, u32, projected).astype(jnp.result_type(w))


def project_to_sphere(
    *,
    mask: _plan.MaskOrFn = None,
    axis_name: _numerics.AxisName | None = None,
    rotation_axes: _plan.AxesOrFn = None,
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
  spec = _plan.LayerSpec("project_to_sphere", mask, rotation_axes)

  def init_fn(params):
    return ProjectToSphereState(
        initial_norms=_plan.initial_norms(spec.plan(params), params, axis_name)
    )

  def update_fn(updates, state, params=None):
    leaves = spec.prepare(updates, params)
    norms0 = [
        leaf.expand(n) if leaf.is_layer else n
        for leaf, n in zip(leaves.plan.leaves, _tree.flatten(state.initial_norms).leaves)
    ]
    return _map_layers(leaves, _sphere_leaf, axis_name, norms0), state

  return optax.GradientTransformation(init_fn, update_fn)
