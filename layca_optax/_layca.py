r"""Layca: ``scale_by_layca`` (Algorithm 1 of the paper, one layer at a time) and ``layca``.

For a layer with weights :math:`w`, initial norm :math:`\|w_0\|`, rate :math:`\rho_l(t)` and
the step :math:`s` of a base optimizer (Carbonnelle & De Vleeschouwer, 2019, Algorithm 1):

.. math::
  p &= s - k\, w, \quad k = \frac{s \cdot w}{w \cdot w}
      && \qquad \text{1: tangent to the sphere} \\
  \hat s &= p\, \|w\| / \|p\| && \qquad \text{2: rotation-based normalisation} \\
  w' &= w - \rho_l(t)\, \hat s && \qquad \text{3: descent step} \\
  w' &\leftarrow w'\, \|w_0\| / \|w'\| && \qquad \text{4: back to the initial sphere}

Since :math:`p \perp w` and :math:`\|\rho_l \hat s\| = \rho_l \|w\|`, the norm in step 4 is
:math:`\|w\| \sqrt{1 + \rho_l^2}`: no second reduction. So each layer costs three float32
sums (:math:`w \cdot w`, :math:`s \cdot w`, :math:`s \cdot s`, one pass over ``w`` and ``s``)
and one elementwise pass that writes the update

.. math::
  u = w' - w = (\gamma - 1)\, w - \gamma \beta\, (s - k w), \qquad
  \beta = \frac{\rho_l \|w\|}{\|p\|}, \quad \gamma = \frac{\|w_0\|}{\|w\| \sqrt{1 + \rho_l^2}}.

The one rare case: when :math:`s` is nearly parallel to :math:`w`,
:math:`\|p\|^2 = s \cdot s - k\,(s \cdot w)` cancels in float32. :func:`tangent_parts` then
measures :math:`p` directly in a second pass, behind one ``lax.cond`` for the whole tree
(its cost is in BENCHMARKS.md).

Reading order: :func:`tangent_parts` (the sums of step 1), :func:`_rotate` (steps 1 to 4 of
one layer: the update line), :func:`scale_by_layca`, :func:`layca`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from layca_optax import _numerics, _plan, _rates, _tree
from layca_optax._numerics import as_f32

__all__ = ["LaycaState", "ScaleByLaycaState", "layca", "scale_by_layca"]


class ScaleByLaycaState(NamedTuple):
  """State of ``scale_by_layca`` (a base optimizer chained before it keeps its own).

  A checkpoint format: it holds only what defines the algorithm, and its structure
  depends only on the params' structure and the arguments of ``scale_by_layca``.
  """

  # shape=(), int32: steps taken, the argument of the schedule. Named `count` as in
  # optax's states (it shadows tuple.count, as theirs do).
  count: jax.Array  # type: ignore[assignment]
  # The params' structure: float32 ||w_0|| for layer leaves (one per rotating vector with
  # rotation_axes: the leaf's shape without those axes), a float32 0 for the others.
  initial_norms: Any


#: The state's name before ``scale_by_layca`` was public: the same class.
LaycaState = ScaleByLaycaState


# -- step 1: the tangent part of a step, per rotating vector ---------------------------------


class Tangent(NamedTuple):
  """``x = k w + p`` with ``p`` orthogonal to ``w``, one float32 value per rotating vector."""

  ww: jax.Array  # w . w
  k: jax.Array  # x . w / w . w (0 where w = 0)
  pp: jax.Array  # ||p||^2
  xx: jax.Array  # x . x


def _from_sums(x: jax.Array, w: jax.Array, axes, axis_name) -> Tangent:
  """One pass: ``||p||^2 = x.x - k (x.w)``, which cancels when ``x`` is nearly parallel to ``w``."""
  ww = _numerics.sum_of_products(w, w, axes, axis_name)
  xw = _numerics.sum_of_products(x, w, axes, axis_name)
  xx = _numerics.sum_of_products(x, x, axes, axis_name)
  k = _numerics.safe_ratio(xw, ww)
  return Tangent(ww, k, xx - k * xw, xx)


def _measured(x: jax.Array, w: jax.Array, t: Tangent, axes, axis_name) -> Tangent:
  """A second pass: ``p = x - k w`` formed, its norm and its leftover along ``w`` measured.

  The leftover (``k`` rounded to float32 leaves ``p . w`` of order ``eps ||x|| ||w||``)
  goes back into ``k``, so that the update keeps the norm to a few ulps.
  """
  p = x - t.k * w
  pw = _numerics.sum_of_products(p, w, axes, axis_name)
  pp = _numerics.sum_of_products(p, p, axes, axis_name)
  dk = _numerics.safe_ratio(pw, t.ww)
  return Tangent(t.ww, t.k + dk, pp - dk * pw, t.xx)


def tangent_parts(
    xs: Sequence[jax.Array],
    ws: Sequence[jax.Array],
    vector_axes: Sequence[tuple[int, ...]],
    axis_name: _numerics.AxisName | None = None,
) -> list[Tangent]:
  r"""Each ``x`` split along its ``w``: :math:`x = k w + p`, :math:`p \perp w`, per vector.

  One pass of three sums per leaf. Where :math:`\|p\|^2 < 10^{-2}\, x \cdot x`
  (``_numerics.NEARLY_PARALLEL``) that difference of sums has lost more than ~1e-5 of its
  relative accuracy in float32, so :func:`_measured` takes a second pass; one
  ``lax.cond`` over the whole tree runs it only on steps that have such a vector (for
  every leaf, keeping the one-pass values elsewhere). Shared by Layca and measure_rotation.
  """
  x32, w32 = [as_f32(x) for x in xs], [as_f32(w) for w in ws]
  parts = [_from_sums(x, w, a, axis_name) for x, w, a in zip(x32, w32, vector_axes)]
  if not parts:
    return parts
  rare = [_numerics.nearly_parallel(t.pp, t.xx) for t in parts]

  def measured():
    return [
        jax.tree.map(functools.partial(jnp.where, r), _measured(x, w, t, a, axis_name), t)
        for x, w, t, a, r in zip(x32, w32, parts, vector_axes, rare)
    ]

  any_rare = jnp.any(jnp.stack([jnp.any(r) for r in rare]))
  return jax.lax.cond(any_rare, measured, lambda: parts)


# -- steps 1 to 4 for one layer ----------------------------------------------------------------


def _rotate(
    s: jax.Array,
    w: jax.Array,
    t: Tangent,
    radius: jax.Array,
    layer_rate: jax.Array,
    rate: jax.Array,
) -> jax.Array:
  r"""Algorithm 1 for one layer (or one vector per entry of ``t``): the update ``w' - w``.

  ``radius`` is :math:`\|w_0\|` (0: the layer was zero at init, no sphere to return to),
  ``layer_rate`` :math:`\rho_l(t)` and ``rate`` :math:`\rho(t)`, the plain step of a layer
  whose weights are zero (it has no direction to rotate).
  """
  s, w = as_f32(s), as_f32(w)
  has_direction = t.ww > 0
  norm_w = jnp.sqrt(jnp.where(has_direction, t.ww, 1.0))
  # 1. The tangent part p = s - k w; a step (numerically) parallel to w does not rotate.
  rotates = has_direction & ~_numerics.tangent_is_zero(t.pp, t.xx)
  # 2-3. p scaled to the norm of w, times rho_l: beta p, with beta = rho_l ||w|| / ||p||.
  beta = layer_rate * norm_w / jnp.sqrt(jnp.where(rotates, t.pp, 1.0))
  # 4. Back to the sphere of radius ||w0||: ||w - beta p|| = ||w|| sqrt(1 + rho_l^2).
  gamma = jnp.where(radius > 0, radius / (norm_w * jnp.sqrt(1.0 + layer_rate**2)), 1.0)
  a = jnp.where(rotates, gamma - 1.0, 0.0)
  b = jnp.where(rotates, gamma * beta, jnp.where(has_direction, 0.0, rate))
  k = jnp.where(rotates, t.k, 0.0)
  return a * w - b * (s - k * w)  # = gamma (w - beta p) - w


# -- the transform -----------------------------------------------------------------------------


def scale_by_layca(
    learning_rate: _rates.LearningRate,
    *,
    alpha: jax.typing.ArrayLike = 0.0,
    depth_exponent: jax.typing.ArrayLike = 5.0,
    layer_order: Sequence[str] | None = None,
    mask: _plan.MaskOrFn = None,
    axis_name: _numerics.AxisName | None = None,
    rotation_axes: _plan.AxesOrFn = None,
) -> optax.GradientTransformation:
  r"""Layca's rotation step: turns each layer by :math:`\arctan \rho_l(t)` along the incoming step.

  The incoming updates are a base optimizer's step :math:`s` (chain it after
  ``optax.trace``, ``optax.scale_by_adam``...; alone, after the raw gradient). For each
  layer (a leaf selected by ``mask``, by default the kernels) it returns
  :math:`u = w' - w` with

  .. math::
    w' = \frac{\|w_0\|}{\|w - \beta p\|}\,(w - \beta p), \qquad
    p = s - \frac{s \cdot w}{w \cdot w}\, w, \qquad \beta = \frac{\rho_l(t) \|w\|}{\|p\|},

  so that ``optax.apply_updates`` rotates :math:`w` by exactly :math:`\arctan \rho_l(t)` in
  the direction of :math:`-p` and leaves it on the sphere of its initial norm
  :math:`\|w_0\|` (stored at ``init``). :math:`\rho_l(t) = m_l(\alpha)\, \rho(t)`, with the
  multipliers of ``alpha_multipliers``. Leaves that are not layers get
  :math:`-\rho(t)\, s`. ``layca(learning_rate, base_optimizer=b)`` is
  ``optax.chain(b, scale_by_layca(learning_rate))``.

  Special cases: a vanishing tangent step (zero gradient, a gradient parallel to
  :math:`w`, the zero updates of ``optax.MultiSteps``) gives a zero update, so the params
  stay bit-identical; a layer with zero-norm weights is stepped like a non-layer leaf
  (``init`` warns, naming it). All reductions are in float32; updates come back in the
  params' dtype.

  Args: as ``layca`` (all but ``base_optimizer``).

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``; its state is a
    ``ScaleByLaycaState(count, initial_norms)``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from layca_optax import rotation_angle, scale_by_layca
    >>> params = {'w': jnp.array([[3.0, 4.0]])}
    >>> tx = optax.chain(optax.trace(0.9), scale_by_layca(0.1))
    >>> updates, _ = tx.update({'w': jnp.array([[1.0, 0.0]])}, tx.init(params), params)
    >>> new = optax.apply_updates(params, updates)
    >>> print(f"{float(rotation_angle(new, params)['w']):.5f}")  # arctan(0.1)
    0.09967
    >>> print(f"{float(jnp.linalg.norm(new['w'])):.4f}")  # the initial norm
    5.0000
  """
  spec = _plan.LayerSpec("scale_by_layca", mask, rotation_axes, layer_order)
  _rates.check_learning_rate(learning_rate, spec.owner)
  _plan.check_alpha(alpha, spec.owner)

  def init_fn(params):
    return ScaleByLaycaState(
        count=jnp.zeros([], jnp.int32),
        initial_norms=_plan.initial_norms(spec.plan(params), params, axis_name),
    )

  def update_fn(updates, state, params=None):
    steps, weights, plan = spec.prepare(updates, params)
    rates = _rates.leaf_rates(learning_rate, state.count, params, plan)  # rho(t)
    layer_rates = _plan.layer_rates(plan, rates, alpha, depth_exponent)  # rho_l(t)
    radii = _tree.flatten(state.initial_norms).leaves  # ||w0||
    layers = plan.layers
    tangents = dict(zip(layers, tangent_parts(
        [steps.leaves[i] for i in layers], [weights.leaves[i] for i in layers],
        [plan.leaves[i].vector_axes for i in layers], axis_name,
    )))
    out = []
    for i, (s, w, leaf) in enumerate(zip(steps.leaves, weights.leaves, plan.leaves)):
      if leaf.is_layer:
        u = _rotate(s, w, tangents[i], leaf.expand(radii[i]), layer_rates[i], rates[i])
        out.append(u.astype(jnp.result_type(w)))
      else:  # not a layer: -rho(t) s
        out.append((-rates[i] * as_f32(s)).astype(jnp.result_type(s)))
    return steps.unflatten(out), state._replace(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def layca(
    learning_rate: _rates.LearningRate,
    *,
    base_optimizer: optax.GradientTransformation | None = None,
    alpha: jax.typing.ArrayLike = 0.0,
    depth_exponent: jax.typing.ArrayLike = 5.0,
    layer_order: Sequence[str] | None = None,
    mask: _plan.MaskOrFn = None,
    axis_name: _numerics.AxisName | None = None,
    rotation_axes: _plan.AxesOrFn = None,
    base: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Layca: every layer rotates by exactly :math:`\arctan \rho_l(t)` per step.

  LAYer-level Controlled Amount of weight rotation (Carbonnelle & De Vleeschouwer, 2019,
  Algorithm 1): ``optax.chain(base_optimizer, scale_by_layca(learning_rate, ...))``. For
  each layer (a leaf selected by ``mask``, by default the kernels) with weights :math:`w`,
  initial weights :math:`w_0` and the step :math:`s` of the base optimizer:

  .. math::
    p &= s - \frac{s \cdot w}{w \cdot w}\, w
        && \qquad \text{1: tangent to the sphere} \\
    \hat s &= p\, \|w\| / \|p\| && \qquad \text{2: rotation-based normalisation} \\
    w' &= w - \rho_l(t)\, \hat s && \qquad \text{3: descent step} \\
    w' &\leftarrow w'\, \|w_0\| / \|w'\| && \qquad \text{4: back to the initial sphere}

  so the angle between :math:`w` and :math:`w'` is :math:`\arctan \rho_l(t)` and
  :math:`\|w'\| = \|w_0\|`, the norm stored at ``init`` (never recomputed from the current
  params). :math:`\rho_l(t) = m_l(\alpha) \rho(t)` with the multipliers of
  ``alpha_multipliers``. Leaves that are not layers (biases, norm scales) get
  :math:`-\rho(t)\, s`; to freeze them instead, as the authors did, wrap the optimizer in
  ``optax.partition``.

  The result equals, within float32 rounding,
  ``optax.chain(base_optimizer, project_orthogonal(), normalize_rotation(),
  scale_by_layer_rates(...), project_to_sphere())`` but reads each layer fewer times.
  The base optimizer's state keeps its own raw direction: Layca works on a copy.

  Special cases: a vanishing projected step (zero gradient, a gradient parallel to
  :math:`w`, the zero updates of ``optax.MultiSteps``) leaves the params bit-identical; a
  layer with zero-norm weights is stepped like a non-layer leaf (``init`` warns, naming it).
  All reductions are in float32; updates come back in the params' dtype.

  **State** (a checkpoint format): ``(base_state, ScaleByLaycaState(count,
  initial_norms))``, where ``count`` is an int32 scalar and ``initial_norms`` has the
  params' structure: a float32 :math:`\|w_0\|` per layer leaf (an array of one norm per
  vector with ``rotation_axes``, shaped like the leaf without those axes) and a float32 0
  per other leaf. Nothing else: internal choices never change it.

  Args:
    learning_rate: :math:`\rho(t) = \tan(\text{angle per step})`: a float or an optax
      schedule. The paper's best with an SGD base is ``3**-3`` with step decay; ``3**-5``
      with Adam or SGD_AMom bases. A ``PerLeafRates`` gives each leaf its own rate or
      schedule; ``replay_rates`` builds one that replays recorded rotation rates
      (AdaptCopy).
    base_optimizer: an optax transform that yields a gradient-like direction (no learning
      rate, no minus sign). ``None``: the raw gradient (SGD). ``optax.trace(0.9)``: momentum;
      ``optax.ema(0.9, debias=False)``: the paper's SGD_AMom; ``optax.scale_by_adam()``,
      ``optax.scale_by_rms()``, ``optax.scale_by_rss()``: adaptive methods.
    alpha: in ``[-1, 1]``: layer-wise rate multipliers; 0 (the paper's best) rotates all
      layers at the same rate, negative values slow the last layers, positive the first.
    depth_exponent: factor in the multipliers' exponent; 5 as in the authors' experiments,
      1 for the paper's printed equation (1).
    layer_order: layer paths from input to output, used for alpha. Default: the natural
      order of the paths, which is not always the forward order: pass
      ``forward_order(apply_fn, params, x)``.
    mask: which leaves are layers: ``None`` (leaves with ``ndim >= 2``), a pytree of bools
      (a prefix of the params) or a callable ``params -> pytree of bools``.
    axis_name: only inside ``shard_map`` (or ``pmap``) when each device holds a slice of
      a leaf: the mesh axis (or axes) over which per-layer reductions are summed, so that
      the result equals the global one. ``jax.jit`` over sharded arrays needs nothing.
    rotation_axes: which axes of each leaf form one rotating vector. ``None``: the whole
      leaf (the paper). Otherwise a pytree of axes tuples (a prefix of the params) or a
      callable ``params -> such a pytree``; every other axis indexes independent vectors,
      each rotated by ``arctan(rho_l)`` on its own sphere. Kept axes *before* the first
      rotation axis stack layers (``stacked_layer_axes``: an ``nn.scan`` kernel
      ``(blocks, d_in, d_out)`` with axes ``(1, 2)``: each block is a layer with its own
      depth for alpha, in index order at the leaf's place in ``layer_order``); kept axes
      after it index units of one layer (``output_unit_axes``: per-neuron Layca, Flax
      layout, sharing the layer's multiplier).
    base: deprecated name of ``base_optimizer`` (it warns; removed in the next release).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from layca_optax import layca
    >>> params = {'w': jnp.array([[1.0, 2.0], [3.0, 4.0]])}
    >>> target = jnp.array([[0.0, 1.0], [2.0, 3.0]])
    >>> loss = lambda p: jnp.sum((p['w'] @ jnp.ones(2) - target.sum(1)) ** 2)
    >>> tx = layca(learning_rate=0.05, base_optimizer=optax.trace(0.9))
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   grads = jax.grad(loss)(params)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> print(f"{jnp.linalg.norm(params['w']):.4f}")  # the norm is kept
    5.4772

  References:
    Carbonnelle & De Vleeschouwer, `Layer rotation: a surprisingly powerful indicator of
    generalization in deep networks? <https://arxiv.org/abs/1806.01603>`_, 2019.
  """
  if base is not None:
    if base_optimizer is not None:
      raise TypeError("layca: give base_optimizer only (base is its deprecated name).")
    warnings.warn(
        "layca(base=...) is deprecated and will be removed in the next release: use "
        "layca(..., base_optimizer=...).", DeprecationWarning, stacklevel=2,
    )
    base_optimizer = base
  if base_optimizer is None:
    base_optimizer = optax.identity()
  elif not isinstance(base_optimizer, optax.GradientTransformation):
    raise TypeError(
        "layca: `base_optimizer` must be an optax.GradientTransformation that yields a "
        f"gradient-like direction, got {base_optimizer!r}. For momentum use "
        "base_optimizer=optax.trace(0.9); for Adam base_optimizer=optax.scale_by_adam() "
        "(no learning rate: Layca sets the step size)."
    )
  return optax.chain(
      base_optimizer,
      scale_by_layca(
          learning_rate, alpha=alpha, depth_exponent=depth_exponent,
          layer_order=layer_order, mask=mask, axis_name=axis_name,
          rotation_axes=rotation_axes,
      ),
  )
