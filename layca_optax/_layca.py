r"""``layca``: the whole algorithm on top of any base optimizer, fused per layer.

Algorithm 1 of the paper, for a layer with weights :math:`w`, initial norm
:math:`\|w_0\|`, rate :math:`\rho_l` and the base optimizer's step :math:`s`:

.. math::
  p = s - k w,\quad k = \frac{s \cdot w}{w \cdot w}; \qquad
  w' = \gamma\,(w - \beta p),\quad \beta = \frac{\rho_l \|w\|}{\|p\|},\quad
  \gamma = \frac{\|w_0\|}{\|w - \beta p\|}.

The chain of the four composable transforms reads each layer once per operation and once
per norm. Here each layer needs only three sums (:math:`w \cdot w`, :math:`s \cdot w`,
:math:`s \cdot s`) and one elementwise pass, using two identities:

* :math:`\|p\|^2 = s \cdot s - k\, (s \cdot w)`;
* :math:`p \perp w` and :math:`\|\beta p\| = \rho_l \|w\|`, so
  :math:`\|w - \beta p\| = \|w\| \sqrt{1 + \rho_l^2}`.

The update is then two scalars per layer times the two arrays:

.. math::
  u = w' - w = a\, w + b\, s, \qquad a = \gamma (1 + \beta k) - 1, \qquad b = -\gamma \beta.

When :math:`s` is nearly parallel to :math:`w` (:math:`\|p\|^2 < 10^{-2}\, s \cdot s`,
``_numerics.NEARLY_PARALLEL``) the difference :math:`s \cdot s - k\,(s \cdot w)` cancels in
float32; those layers take an exact path that forms :math:`p` and measures
:math:`\|p\|` and :math:`\|w - \beta p\|` (two more passes), behind a ``lax.cond`` that is
rarely taken (``_stacking.values_per_leaf``).

Reading order: the state, the per-layer coefficients (:func:`_common_coefficients`,
:func:`_exact_coefficients`), how layers are grouped (:func:`_layer_coefficients`), the
transform (:func:`_rotate_layers`) and :func:`layca`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _numerics, _plan, _rates, _stacking, _transforms, _tree
from layca_optax._numerics import as_f32

__all__ = ["LaycaState", "layca"]


class LaycaState(NamedTuple):
  """State of Layca's rotation step (the base optimizer keeps its own state).

  A checkpoint format: it holds only what defines the algorithm, and its structure
  depends only on the params' structure and the arguments of ``layca``.
  """

  # shape=(), int32: steps taken, the argument of the schedule. Named `count` as in
  # optax's states (it shadows tuple.count, as theirs do).
  count: jax.Array  # type: ignore[assignment]
  # The params' structure: float32 ||w_0|| for layer leaves (one per rotating vector with
  # rotation_axes: the leaf's shape without those axes), a float32 0 for the others.
  initial_norms: Any


# -- the per-layer formula -------------------------------------------------------------------


class _Sums(NamedTuple):
  """The three sums of one layer (or a stack of layers): float32, one value per vector."""

  ww: jax.Array  # w . w
  sw: jax.Array  # s . w
  ss: jax.Array  # s . s

  @property
  def k(self) -> jax.Array:
    """``s . w / w . w``: the projected step is ``p = s - k w``."""
    return _numerics.safe_ratio(self.sw, self.ww)

  @property
  def perp_sq(self) -> jax.Array:
    """``||p||^2`` from the sums (cancels when ``s`` is nearly parallel to ``w``)."""
    return self.ss - self.k * self.sw


class _Coefficients(NamedTuple):
  """The update of a layer is ``u = a w + b s``."""

  a: jax.Array
  b: jax.Array


class _Layer(NamedTuple):
  """What the formula needs besides the sums, one value per vector."""

  initial_norm: jax.Array  # ||w_0||; 0 for a layer that was zero at init
  layer_rate: jax.Array  # rho_l(t) = m_l rho(t)
  rate: jax.Array  # rho(t), for a zero-norm layer stepped like a non-layer leaf


class _LayerLeaf(NamedTuple):
  """One layer leaf before grouping."""

  step: jax.Array  # s
  weights: jax.Array  # w
  initial_norm: jax.Array  # ||w_0|| per vector, with size-1 vector axes
  rate: jax.Array  # rho(t): a scalar, or per vector with size-1 vector axes
  multiplier_index: np.ndarray  # which alpha multiplier each vector takes (static)
  vector_axes: tuple[int, ...]


def _tangent_step(sums: _Sums, perp_sq: jax.Array, layer_rate: jax.Array):
  """Whether the layer rotates, and ``beta = rho_l ||w|| / ||p||`` (steps 1 to 3)."""
  rotates = (sums.ww > 0) & ~_numerics.tangent_is_zero(perp_sq, sums.ss)
  norm_w = jnp.sqrt(jnp.where(sums.ww > 0, sums.ww, 1.0))
  beta = layer_rate * norm_w / jnp.sqrt(jnp.where(rotates, perp_sq, 1.0))
  return rotates, beta


def _update_coefficients(
    sums: _Sums, layer: _Layer, rotates: jax.Array, beta: jax.Array, gamma: jax.Array
) -> _Coefficients:
  """``(a, b)`` with ``a w + b s = gamma (w - beta p) - w`` (step 4 included)."""
  gamma = jnp.where(layer.initial_norm > 0, gamma, 1.0)  # no sphere: keep the norm
  plain = jnp.where(sums.ww > 0, 0.0, -layer.rate)  # a zero-norm layer: -rho(t) s
  a = jnp.where(rotates, gamma * (1.0 + beta * sums.k) - 1.0, 0.0)
  b = jnp.where(rotates, -gamma * beta, plain)
  return _Coefficients(a, b)


def _common_coefficients(sums: _Sums, layer: _Layer) -> _Coefficients:
  """``(a, b)`` from the three sums alone: ``||w - beta p|| = ||w|| sqrt(1 + rho_l^2)``."""
  rotates, beta = _tangent_step(sums, sums.perp_sq, layer.layer_rate)
  norm_w = jnp.sqrt(jnp.where(sums.ww > 0, sums.ww, 1.0))
  gamma = layer.initial_norm / (norm_w * jnp.sqrt(1.0 + layer.layer_rate**2))
  return _update_coefficients(sums, layer, rotates, beta, gamma)


def _exact_coefficients(
    s: jax.Array, w: jax.Array, sums: _Sums, layer: _Layer, sum_of_products
) -> _Coefficients:
  """``(a, b)`` for a step nearly parallel to ``w``: ``||p||`` and ``||w - beta p||`` measured.

  Float32 leaves ``p`` orthogonal to ``w`` only up to ``eps ||s|| / ||p||`` here, so the
  norm identity behind ``gamma`` is off too.
  """
  perp = s - sums.k * w
  rotates, beta = _tangent_step(sums, sum_of_products(perp, perp), layer.layer_rate)
  moved = w - beta * perp
  gamma = _numerics.safe_ratio(layer.initial_norm, jnp.sqrt(sum_of_products(moved, moved)))
  return _update_coefficients(sums, layer, rotates, beta, gamma)


# -- the layers, grouped ------------------------------------------------------------------------


def _layer_coefficients(
    leaves: Sequence[_LayerLeaf],
    multipliers: jax.Array,
    axis_name: _numerics.AxisName | None,
) -> list[_Coefficients]:
  """``(a, b)`` of every layer leaf, such that its update is ``a w + b s``.

  Small layers of one shape are stacked and take the sums together
  (``_stacking.group_leaves``); the rare exact path of each group runs behind one
  tree-wide cond (``_stacking.values_per_leaf``), which returns each leaf's coefficients.
  The alpha multipliers are gathered once per group.
  """
  groups = _stacking.group_leaves(
      [(leaf.step, leaf.weights) for leaf in leaves], [leaf.vector_axes for leaf in leaves]
  )
  common, rare, exact = [], [], []
  for group in groups:
    s, w = (as_f32(x) for x in group.arrays)
    sums = _Sums(
        group.sum(w, w, axis_name), group.sum(s, w, axis_name), group.sum(s, s, axis_name)
    )
    members = [leaves[i] for i in group.members]
    rate = group.stack([leaf.rate for leaf in members])
    layer = _Layer(
        initial_norm=group.stack([leaf.initial_norm for leaf in members]),
        layer_rate=multipliers[group.stack([leaf.multiplier_index for leaf in members])] * rate,
        rate=rate,
    )
    common.append(_common_coefficients(sums, layer))
    rare.append(_numerics.nearly_parallel(sums.perp_sq, sums.ss))
    exact.append(
        lambda s=s, w=w, sums=sums, layer=layer, group=group: _exact_coefficients(
            s, w, sums, layer, functools.partial(group.sum, axis_name=axis_name)
        )
    )
  return _stacking.values_per_leaf(groups, common, rare, exact)


# -- the transform ------------------------------------------------------------------------------


def _rotate_layers(
    learning_rate: optax.ScalarOrSchedule,
    alpha: Any,
    depth_exponent: Any,
    layer_order: Sequence[str] | None,
    mask: _plan.MaskOrFn,
    axis_name: _numerics.AxisName | None,
    rotation_axes: _plan.AxesOrFn,
) -> optax.GradientTransformation:
  """Operations 1 to 4 of Layca, fused per layer (see the module docstring)."""
  caller = "layca"

  def make_plan(params):
    return _plan.make_plan(
        params, mask=mask, rotation_axes=rotation_axes, layer_order=layer_order,
        caller=caller,
    )

  def init_fn(params):
    return LaycaState(
        count=jnp.zeros([], jnp.int32),
        initial_norms=_transforms.initial_norms(params, make_plan(params), caller, axis_name),
    )

  def update_fn(updates, state, params=None):
    _tree.check_params(params, caller)
    flat_s, flat_w = _tree.flatten(updates), _tree.flatten(params)
    _tree.check_same_structure(flat_s, flat_w, caller)
    plan = make_plan(params)
    rates = _rates.leaf_rates(learning_rate, state.count, params, plan, caller)
    norms0 = _tree.flatten(state.initial_norms).leaves
    layers = [i for i, leaf in enumerate(plan.leaves) if leaf.is_layer]
    coefficients = dict(zip(layers, _layer_coefficients(
        [
            _LayerLeaf(
                flat_s.leaves[i], flat_w.leaves[i], plan.leaves[i].expand(norms0[i]),
                rates[i], plan.leaves[i].multiplier_index(), plan.leaves[i].vector_axes,
            )
            for i in layers
        ],
        _plan.traced_multipliers(max(plan.num_layers, 1), alpha, depth_exponent),
        axis_name,
    )))
    out = []
    for i, (s, w, rho) in enumerate(zip(flat_s.leaves, flat_w.leaves, rates)):
      if i in coefficients:
        a, b = coefficients[i]
        out.append((a * as_f32(w) + b * as_f32(s)).astype(jnp.result_type(w)))
      else:  # not a layer: -rho(t) s
        out.append((-rho * as_f32(s)).astype(jnp.result_type(s)))
    return flat_s.unflatten(out), state._replace(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def layca(
    learning_rate: optax.ScalarOrSchedule,
    *,
    base: optax.GradientTransformation | None = None,
    alpha: float = 0.0,
    depth_exponent: float = 5.0,
    layer_order: Sequence[str] | None = None,
    mask: _plan.MaskOrFn = None,
    axis_name: _numerics.AxisName | None = None,
    rotation_axes: _plan.AxesOrFn = None,
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
  :math:`\|w'\| = \|w_0\|`, the norm stored at ``init`` (never recomputed from the current
  params). :math:`\rho_l(t) = m_l(\alpha) \rho(t)` with the multipliers of
  ``alpha_multipliers``. Leaves that are not layers (biases, norm scales) get
  :math:`-\rho(t)\, s`; to freeze them instead, as the authors did, wrap the optimizer in
  ``optax.partition``.

  The result equals, within float32 rounding,
  ``optax.chain(base, project_orthogonal(), normalize_rotation(),
  scale_by_layer_rates(...), project_to_sphere())`` but reads each layer fewer times.
  The base optimizer's state keeps its own raw direction: Layca works on a copy.

  Special cases: a vanishing projected step (zero gradient, a gradient parallel to
  :math:`w`, the zero updates of ``optax.MultiSteps``) leaves the params bit-identical; a
  layer with zero-norm weights is stepped like a non-layer leaf (``init`` warns, naming it).
  All reductions are in float32; updates come back in the params' dtype.

  **State** (a checkpoint format): ``(base_state, LaycaState(count, initial_norms))``,
  where ``count`` is an int32 scalar and ``initial_norms`` has the params' structure: a
  float32 :math:`\|w_0\|` per layer leaf (an array of one norm per vector with
  ``rotation_axes``, shaped like the leaf without those axes) and a float32 0 per other
  leaf. Nothing else: internal choices never change it.

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

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params``.

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
  _plan.check_alpha(alpha, "layca")
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
