r"""``layca``: the whole algorithm on top of any base optimizer, fused per layer.

The chain of the four composable transforms reads each layer once per operation and once
per norm. Here each layer needs only three reductions (:math:`s \cdot w`, :math:`w \cdot w`,
:math:`s \cdot s`, all over the inputs; XLA:CPU runs them as three kernels) and one
elementwise pass, using two identities of Algorithm 1:

* with :math:`k = s \cdot w / w \cdot w`, the projected step is :math:`p = s - k w` and
  :math:`\|p\|^2 = s \cdot s - k\, (s \cdot w)`;
* :math:`p \perp w` and :math:`\|\beta p\| = \rho_l \|w\|` for
  :math:`\beta = \rho_l \|w\| / \|p\|`, so :math:`\|w - \beta p\| = \|w\| \sqrt{1 + \rho_l^2}`
  and the sphere projection needs no second reduction:

.. math::
  w' = \gamma\,(w - \beta p), \qquad \gamma = \frac{\|w_0\|}{\|w\| \sqrt{1 + \rho_l^2}},
  \qquad u = w' - w = \big(\gamma (1 + \beta k) - 1\big)\, w - \gamma \beta\, s.

When :math:`s` is nearly parallel to :math:`w` (:math:`\|p\|^2 < 10^{-2}\, s \cdot s`) the
difference :math:`s \cdot s - k\,(s \cdot w)` and the two terms of :math:`u` cancel in
float32; those layers take an exact path instead, which forms :math:`p` and measures
:math:`\|w - \beta p\|` (two more passes, in a per-layer ``lax.cond`` that returns the two
scalars of :math:`u = a w + b s`, so the common case skips those passes and the one
elementwise pass stays fused with ``optax.apply_updates``). The per-layer conds sit in
one tree-wide cond (``_guard``): a step with no nearly parallel layer runs one cond, not
one per layer (17 conds cost ~10 % of a step on XLA:CPU, see BENCHMARKS.md).

Small layers of one shape (a transformer's per-block kernels) are stacked and take these
steps together, so that a tree of many small leaves compiles to a few reductions and conds
rather than a set per leaf (``_grouped_coefficients``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _axes, _groups, _guard, _layers, _rates, _transforms, _tree

__all__ = ["LaycaState", "layca"]

# Below this ratio ||p||^2 / ||s||^2 the one-pass formulas lose more than ~1e-4 relative
# accuracy in float32 (measured on leaves of 10 to 2.4M elements), so p is formed exactly.
_CANCELLATION_RATIO = 1e-2



class LaycaState(NamedTuple):
  """State of Layca's rotation step (the base optimizer keeps its own state)."""

  count: jax.Array  # shape=(), int32: steps taken, the argument of the schedule.
  # The params' structure: ||w_0|| (float32 scalar) for layer leaves, 0 for the others.
  initial_norms: Any
  # The params' structure: for each small layer (at most `_groups.MAX_SIZE` elements) an
  # int32 scalar, its index among the small layers of its shape (`_groups.positions`);
  # None for the other leaves. Read at run time so that XLA compiles one update kernel
  # per group of same-shaped layers, not one per layer.
  slots: Any


class _Coefficients(NamedTuple):
  active: jax.Array  # a non-zero tangent step on a non-zero layer: rotate
  beta: jax.Array  # rho_l ||w|| / ||p||
  gamma: jax.Array  # back to the initial sphere


def _coefficients(ww, perp_sq, ss, norm0, rho_l) -> _Coefficients:
  active = (ww > 0) & ~_transforms.tangent_is_zero(perp_sq, ss)
  norm_w = jnp.sqrt(jnp.where(ww > 0, ww, 1.0))
  beta = rho_l * norm_w / jnp.sqrt(jnp.where(active, perp_sq, 1.0))
  # A layer that was zero at init has no sphere: it rotates but keeps its own norm.
  gamma = jnp.where(norm0 > 0, norm0 / (norm_w * jnp.sqrt(1.0 + rho_l**2)), 1.0)
  return _Coefficients(active, beta, gamma)


class _Sums(NamedTuple):
  """The three reductions over a layer: float32, one value per rotating vector."""

  ww: jax.Array  # w . w
  sw: jax.Array  # s . w
  ss: jax.Array  # s . s

  @property
  def k(self) -> jax.Array:  # s . w / w . w: p = s - k w
    return _transforms.safe_ratio(self.sw, self.ww)

  @property
  def nearly_parallel(self) -> jax.Array:  # ||p||^2 from the sums has cancelled
    return (self.ss - self.k * self.sw) < _CANCELLATION_RATIO * self.ss


def _layer_sums(s, w, *, dot) -> _Sums:
  s32, w32 = _tree.as_f32(s), _tree.as_f32(w)
  return _Sums(dot(w32, w32), dot(s32, w32), dot(s32, s32))


def _update_coefficients(active, beta, to_sphere, sums: _Sums, rho):
  """(a, b) with u = a w + b s = to_sphere (w - beta p) - w, p = s - k w."""
  # A zero-norm layer is stepped like a non-layer leaf: -rho(t) s.
  plain = jnp.where(sums.ww > 0, 0.0, -rho)
  a = jnp.where(active, to_sphere * (1.0 + beta * sums.k) - 1.0, 0.0)
  b = jnp.where(active, -to_sphere * beta, plain)
  return a, b


def _step_coefficients(sums: _Sums, norm0, rho_l, rho):
  """(a, b) of the update u = a w + b s, from the sums alone (the common case)."""
  c = _coefficients(sums.ww, sums.ss - sums.k * sums.sw, sums.ss, norm0, rho_l)
  return _update_coefficients(c.active, c.beta, c.gamma, sums, rho)


def _exact_coefficients(s, w, sums: _Sums, norm0, rho_l, rho, *, dot):
  """(a, b) for a step nearly parallel to w: ||p|| and ||w - beta p|| measured."""
  # Here float32 leaves p orthogonal to w only up to eps ||s|| / ||p||, so the norm
  # identity behind gamma is off too: measure ||w - beta p|| instead.
  s32, w32 = _tree.as_f32(s), _tree.as_f32(w)
  perp = s32 - sums.k * w32
  c = _coefficients(sums.ww, dot(perp, perp), sums.ss, norm0, rho_l)
  moved = w32 - c.beta * perp  # = (1 + beta k) w - beta s
  to_sphere = _transforms.safe_ratio(norm0, jnp.sqrt(dot(moved, moved)))
  to_sphere = jnp.where(norm0 > 0, to_sphere, 1.0)
  return _update_coefficients(c.active, c.beta, to_sphere, sums, rho)


class _Unit(NamedTuple):
  """One leaf, or one stack of same-shaped small leaves, whose coefficients come together."""

  s: jax.Array
  w: jax.Array
  norm0: jax.Array
  rho_l: jax.Array
  rho: jax.Array


def _exact_unit_coefficients(unit: _Unit, sums: _Sums, fast, *, dot):
  """(a, b) of one unit whose step is nearly parallel to some of its vectors."""
  # Exact for every vector of the unit; only the nearly parallel ones need it.
  a, b = _exact_coefficients(unit.s, unit.w, sums, *unit[2:], dot=dot)
  flag = sums.nearly_parallel
  return jnp.where(flag, a, fast[0]), jnp.where(flag, b, fast[1])


def _units_coefficients(units: list[_Unit], dots: list[Any]) -> list[tuple[Any, Any]]:
  """(a, b) of every unit, such that each of its leaves' update is ``a w + b s``.

  The common case needs only the three sums of each unit; the scalar work that turns
  them into coefficients runs once for the whole tree, on the sums packed in one vector
  (``_groups.Packer``: a few kernels instead of a dozen per layer). The rare exact path
  (a step nearly parallel to the weights) measures two more norms, behind a
  ``lax.cond`` per unit that returns scalars only, all inside one tree-wide cond
  (``_guard``): the common step runs a single cond. The elementwise pass stays outside
  the conds, fused with ``apply_updates`` and free to reuse donated buffers (a cond
  returning whole arrays prevents that).
  """
  units = [_Unit(*(jnp.asarray(x) for x in u)) for u in units]
  sums = [_layer_sums(u.s, u.w, dot=dot) for u, dot in zip(units, dots)]
  packer = _groups.Packer([jnp.shape(x.ww) for x in sums])
  packed = _Sums(*(packer.pack([x[f] for x in sums]) for f in range(3)))
  fast = _step_coefficients(
      packed, *(packer.pack([u[f] for u in units]) for f in (2, 3, 4))
  )

  def exact(dot):
    return lambda operands, fast: _exact_unit_coefficients(*operands, fast, dot=dot)

  a, b = _guard.rarely_exact(
      any_rare=jnp.any(packed.nearly_parallel),
      rare=[lambda operands: jnp.any(operands[1].nearly_parallel)] * len(units),
      exact=[exact(dot) for dot in dots],
      operands=list(zip(units, sums)),
      fast=fast,
      split=lambda ab: list(zip(*(packer.unpack(x) for x in ab))),
      join=lambda items: tuple(packer.pack(x) for x in zip(*items)),
  )
  return list(zip(packer.unpack(a), packer.unpack(b)))


def _init_slots(flat: _tree.Flat, plan) -> Any:
  """``LaycaState.slots`` for the params ``flat``."""
  position = _groups.positions(flat.leaves, [a.axes for a in plan.axes], plan.is_layer)
  return flat.unflatten([None if p is None else jnp.int32(p[0]) for p in position])


def _slot_leaves(slots: Any) -> list[Any]:
  """The stored slots, one per params leaf (``None`` where there is none)."""
  return jax.tree.leaves(_tree.unwrap(slots), is_leaf=lambda x: x is None)


def _grouped_coefficients(
    leaves, plan, axis_name, multipliers, slots
) -> dict[int, tuple[Any, Any]]:
  """(a, b) of every layer leaf (by index): small leaves of one shape reduced stacked.

  A tree of many small layers (a transformer's per-block kernels) would otherwise give
  XLA three reductions, a ``lax.cond`` and a dozen scalar kernels per leaf: compile time
  grows with the number of leaves (~40 s for 500 layers on XLA:CPU). Leaves of at most
  ``_groups.MAX_SIZE`` elements with the same shape, dtypes and rotation axes are stacked
  on a new leading axis, so each group needs three reductions and one cond; the copy is
  cheap for such leaves. Large leaves keep their own reductions (no copy). Each grouped
  leaf then reads its two coefficients from the group's vectors at the index ``slots``
  (from the state) holds, when the group is the whole class that index counts in:
  a runtime index, so its elementwise update compiles to the same kernel as its group's
  other leaves (with a constant index, one kernel per leaf: the 1,000-leaf benchmark tree
  compiled in 7.0-7.3 s instead of 3.6-3.8 s, BENCHMARKS.md).
  """
  layers = [i for i, leaf in enumerate(leaves) if leaf[2]]
  position = _groups.positions(
      [leaf[1] for leaf in leaves], [a.axes for a in plan.axes], plan.is_layer
  )
  parts = _groups.partition(
      [leaves[i][:2] for i in layers], [plan.axes[i].axes for i in layers]
  )
  units, dots, members_of = [], [], []  # members_of[j]: leaf index or indices of unit j
  for part in parts:
    members = [layers[j] for j in part]
    if len(members) == 1:
      (i,) = members
      s, w, _, norm0, rho, rho_l, dot = leaves[i]
      units.append(_Unit(s, w, norm0, rho_l, rho))
      dots.append(dot)
      members_of.append(i)
      continue
    leaf_axes = plan.axes[members[0]]
    shape = jnp.shape(leaves[members[0]][1])
    kept = tuple(1 if d in leaf_axes.axes else n for d, n in enumerate(shape))

    def depth_index(i):  # the index of each vector's alpha multiplier, shaped `kept`
      ax = plan.axes[i]
      if not ax.stack_axes:
        return np.full(kept, plan.depth[i])
      slices = plan.depth[i] + np.arange(ax.num_slices).reshape(ax.rate_shape)
      return np.broadcast_to(slices, kept)

    def stack(field):
      return jnp.stack([
          jnp.broadcast_to(jnp.asarray(leaves[i][field], jnp.float32), kept)
          for i in members
      ])

    def stack_f32(field):
      return _groups.stack_f32([leaves[i][field] for i in members])

    units.append(_Unit(
        stack_f32(0), stack_f32(1), stack(3),
        multipliers()[np.stack([depth_index(i) for i in members])] * stack(4),
        stack(4),
    ))
    dots.append(_tree.reducer(axis_name, tuple(a + 1 for a in leaf_axes.axes)))
    members_of.append(members)
  out = {}
  for members, (a, b) in zip(members_of, _units_coefficients(units, dots)):
    if isinstance(members, int):
      out[members] = (a, b)
    else:
      indexed = _groups.indexes_group(members, position)
      for j, i in enumerate(members):
        if indexed:
          out[i] = tuple(
              jax.lax.dynamic_index_in_dim(x, slots[i], keepdims=False) for x in (a, b)
          )
        else:
          out[i] = (a[j], b[j])
  return out


def _rotate_layers(
    learning_rate: optax.ScalarOrSchedule,
    alpha: Any,
    depth_exponent: Any,
    layer_order: Sequence[str] | None,
    mask: _layers.MaskOrFn,
    axis_name: _tree.AxisName | None,
    rotation_axes: _axes.AxesOrFn,
) -> optax.GradientTransformation:
  """Operations 1 to 4 of Layca, fused per layer (see the module docstring)."""
  owner = "layca"

  def init_fn(params):
    params = _tree.unwrap(params)
    plan = _layers.plan_layers(
        _tree.flatten(params), params, mask, layer_order, owner, rotation_axes
    )
    flat = _tree.flatten(params)
    return LaycaState(
        count=jnp.zeros([], jnp.int32),
        initial_norms=_transforms.initial_norms(params, plan, owner, axis_name),
        slots=_init_slots(flat, plan),
    )

  def update_fn(updates, state, params=None):
    _tree.check_params(params, owner)
    flat_s, flat_w = _tree.flatten(updates), _tree.flatten(params)
    _tree.check_same_structure(flat_s, flat_w, owner)
    plan = _layers.plan_layers(
        flat_w, params, mask, layer_order, owner, rotation_axes
    )
    rhos = _rates.leaf_rates(
        learning_rate, state.count, flat_w, params, plan.axes, owner
    )
    rates = _transforms.layer_rates(rhos, plan, alpha, depth_exponent)
    norms0 = _transforms.broadcast_norms(state.initial_norms, plan)

    leaves = list(zip(
        flat_s.leaves, flat_w.leaves, plan.is_layer, norms0, rhos, rates,
        _transforms.reducers(plan, axis_name),
    ))
    coefficients = _grouped_coefficients(
        leaves, plan, axis_name,
        lambda: _layers.traced_multipliers(plan.num_layers, alpha, depth_exponent),
        _slot_leaves(state.slots),
    )
    out = []
    for i, (s, w, layer, _, rho, _, _) in enumerate(leaves):
      if not layer:  # -rho(t) s
        out.append((-rho * _tree.as_f32(s)).astype(jnp.result_type(s)))
        continue
      a, b = coefficients[i]
      out.append(
          (a * _tree.as_f32(w) + b * _tree.as_f32(s)).astype(jnp.result_type(w))
      )
    new_state = state._replace(count=optax.safe_increment(state.count))
    return flat_s.unflatten(out), new_state

  return optax.GradientTransformation(init_fn, update_fn)


def layca(
    learning_rate: optax.ScalarOrSchedule,
    *,
    base: optax.GradientTransformation | None = None,
    alpha: float = 0.0,
    depth_exponent: float = 5.0,
    layer_order: Sequence[str] | None = None,
    mask: _layers.MaskOrFn = None,
    axis_name: _tree.AxisName | None = None,
    rotation_axes: _axes.AxesOrFn = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Layca: every layer rotates by exactly :math:`\arctan \rho_l(t)` per step.

  LAYer-level Controlled Amount of weight rotation (Carbonnelle & De Vleeschouwer, 2019,
  Algorithm 1). For each layer (a leaf selected by ``mask``, by default the kernels) with
  weights :math:`w`, initial weights :math:`w_0` and the step :math:`s` of the ``base``
  optimizer:

  .. math::
    p &= s - \frac{s \cdot w}{w \cdot w}\, w
        && \text{1: tangent to the sphere} \\
    \hat s &= p\, \|w\| / \|p\| && \text{2: rotation-based normalisation} \\
    w' &= w - \rho_l(t)\, \hat s && \text{3: descent step} \\
    w' &\leftarrow w'\, \|w_0\| / \|w'\| && \text{4: back to the initial sphere}

  so the angle between :math:`w` and :math:`w'` is :math:`\arctan \rho_l(t)` and
  :math:`\|w'\| = \|w_0\|`. :math:`\rho_l(t) = m_l(\alpha) \rho(t)` with the multipliers of
  ``alpha_multipliers``. Leaves that are not layers (biases, norm scales) get
  :math:`-\rho(t)\, s`; to freeze them instead, as the authors did, wrap the optimizer in
  ``optax.partition`` (see the README).

  The result equals, within float32 rounding,
  ``optax.chain(base, project_orthogonal(), normalize_rotation(),
  scale_by_layer_rates(...), project_to_sphere())`` but reads each layer fewer times.
  The base optimizer's state keeps its own raw direction: Layca works on a copy.

  Special cases: a vanishing projected step (zero gradient, a gradient parallel to
  :math:`w`, the zero updates of ``optax.MultiSteps``) leaves the params bit-identical; a
  layer with zero-norm weights is stepped like a non-layer leaf (``init`` warns, naming it).
  All reductions are in float32; updates come back in the params' dtype.

  Args:
    learning_rate: :math:`\rho(t) = \tan(\text{angle per step})`: a float or an optax
      schedule. The paper's best with an SGD base is ``3**-3`` with step decay; ``3**-5``
      with Adam or SGD_AMom bases. A ``PerLeafRates`` gives each leaf its own rate or
      schedule; ``replay_rates`` builds one that replays recorded rotation rates
      (AdaptCopy).
    base: an optax transform that yields a gradient-like direction (no learning rate, no
      minus sign). ``None``: the raw gradient (SGD). ``optax.trace(0.9)``: momentum;
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
      (a prefix of the params), or a callable ``params -> pytree of bools``.
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
      layout, sharing the layer's multiplier). The state then holds one initial norm per
      vector.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is
    ``(base_state, LaycaState)`` and whose ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from layca_optax import layca
    >>> params = {'w': jnp.array([[1.0, 2.0], [3.0, 4.0]])}
    >>> target = jnp.array([[0.0, 1.0], [2.0, 3.0]])
    >>> loss = lambda p: jnp.sum((p['w'] @ jnp.ones(2) - target.sum(1)) ** 2)
    >>> tx = layca(learning_rate=0.05, base=optax.trace(0.9))
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
  _rates.check_learning_rate(learning_rate, "layca")
  _layers.check_alpha(alpha, "layca")
  if base is None:
    base = optax.identity()
  elif not isinstance(base, optax.GradientTransformation):
    raise TypeError(
        "layca: `base` must be an optax.GradientTransformation that yields a "
        f"gradient-like direction, got {base!r}. For momentum use base=optax.trace(0.9); "
        "for Adam base=optax.scale_by_adam() (no learning rate: Layca sets the step size)."
    )
  return optax.chain(
      base,
      _rotate_layers(
          learning_rate, alpha, depth_exponent, layer_order, mask, axis_name,
          rotation_axes,
      ),
  )
