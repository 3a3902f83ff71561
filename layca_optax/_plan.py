r"""The layer plan: which leaves are layers, how they split into vectors, their depth and rate.

Every transform and measure of the library starts from the same three arguments (``mask``,
``rotation_axes``, ``layer_order``). A :class:`LayerSpec` holds them with the name of the
public function they were given to, and builds, for a params tree, its :class:`LayerPlan`;
every error about them is raised there, naming that function, the leaf path and the fix.

Everything in a plan is static: it depends on the params' structure, shapes and dtypes,
never on their values, so under ``jax.jit`` it is built once, at trace time, and the hot
path only sees Python constants. One :class:`LeafPlan` per leaf of the params says

* whether the leaf is a *layer* (``mask``; by default the kernels, ``ndim >= 2``);
* which of its axes form one rotating *vector* (``rotation_axes``; by default all of them:
  the paper's "one leaf, one layer"). Every other axis indexes vectors: *stacking axes*
  (kept axes before the first rotation axis) hold stacked layers, e.g. the blocks of an
  ``nn.scan`` / ``nnx.vmap`` model, each with its own depth; *unit axes* (kept axes after
  it) hold units of one layer, e.g. per-neuron Layca, sharing the layer's depth;
* the depth of its first layer (input side first), which picks its alpha multiplier
  :math:`m_l`, so that :math:`\rho_l(t) = m_l \rho(t)` (:func:`layer_rates`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax import _numerics, _tree

__all__ = [
    "alpha_multipliers",
    "default_mask",
    "output_unit_axes",
    "stacked_layer_axes",
]

MaskOrFn = Any | Callable[[Any], Any] | None
AxesOrFn = Any | Callable[[Any], Any] | None


# -- the public helpers: which leaves are layers, which axes form a vector ---------------


def default_mask(params: Any) -> Any:
  """The default layer selection: ``True`` for leaves with ``ndim >= 2`` (kernels).

  Dense kernels ``(in, out)`` and convolution kernels ``(h, w, in, out)`` are layers;
  biases, BatchNorm/LayerNorm scales and scalars are not.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import default_mask
    >>> default_mask({'b': jnp.zeros(3), 'w': jnp.zeros((3, 2))})
    {'b': False, 'w': True}
  """
  return jax.tree.map(lambda x: jnp.ndim(x) >= 2, _tree.unwrap(params))


def whole_leaf_axes(params: Any) -> Any:
  """Every leaf is one vector: its axes are all of its axes (the default).

  Deprecated as ``layca_optax.whole_leaf_axes``: ``rotation_axes=None`` does this.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._plan import whole_leaf_axes
    >>> whole_leaf_axes({'kernel': jnp.zeros((3, 4)), 'bias': jnp.zeros(4)})
    {'bias': (0,), 'kernel': (0, 1)}
  """
  return jax.tree.map(lambda x: tuple(range(np.ndim(x))), _tree.unwrap(params))


def stacked_layer_axes(params: Any, *, num_stacked: int = 1) -> Any:
  """Leaves whose first ``num_stacked`` axes index stacked layers (``nn.scan`` blocks).

  A leaf of shape ``(num_blocks, d_in, d_out)`` gets rotation axes ``(1, 2)``: each block's
  kernel is its own layer. Leaves with ``ndim <= num_stacked`` (e.g. scalars) are whole.
  Apply it to the stacked part of the params only, e.g.
  ``rotation_axes=lambda p: {'blocks': stacked_layer_axes(p['blocks']), 'head': None}``
  (this works for plain dicts and Flax NNX ``State`` params alike).

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import stacked_layer_axes
    >>> stacked_layer_axes({'kernel': jnp.zeros((6, 8, 8)), 'bias': jnp.zeros((6, 8))})
    {'bias': (1,), 'kernel': (1, 2)}
  """
  def axes(x):
    ndim = np.ndim(x)
    return tuple(range(num_stacked, ndim)) if ndim > num_stacked else tuple(range(ndim))

  return jax.tree.map(axes, _tree.unwrap(params))


def output_unit_axes(params: Any) -> Any:
  """Per-output-unit vectors in Flax layout: every axis but the last (outputs last).

  A Dense kernel ``(d_in, d_out)`` gets ``(0,)``: each output unit's incoming weights form
  one vector. A Conv kernel HWIO gets ``(0, 1, 2)``: one vector per output channel. 1-D
  leaves stay whole. (Flax puts outputs on the last axis; PyTorch's dim 0 does not apply.)

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import output_unit_axes
    >>> output_unit_axes({'conv': jnp.zeros((3, 3, 4, 8)), 'bias': jnp.zeros(8)})
    {'bias': (0,), 'conv': (0, 1, 2)}
  """
  def axes(x):
    ndim = np.ndim(x)
    return tuple(range(ndim - 1)) if ndim >= 2 else tuple(range(ndim))

  return jax.tree.map(axes, _tree.unwrap(params))


# -- alpha: the layer-wise rate multipliers ------------------------------------------------


def check_alpha(alpha: Any, owner: str) -> None:
  """Raises for a concrete alpha outside ``[-1, 1]`` (traced values are clipped later)."""
  value = _numerics.concrete_float(alpha)
  if value is None and not isinstance(alpha, jax.core.Tracer):
    raise TypeError(
        f"{owner}: alpha must be a number in [-1, 1], got {alpha!r}. For example "
        "alpha=0.6 (or alpha=0.0, the paper's best, for the same rate in every layer)."
    )
  if value is not None and not -1.0 <= value <= 1.0:
    raise ValueError(
        f"{owner}: alpha must be in [-1, 1] (negative: the first layers rotate fastest; "
        f"positive: the last layers do), got alpha={value}. The paper's grid is "
        "{-0.8, ..., 0, ..., 0.8}; use for example alpha=0.6."
    )


def _multipliers(num_layers: int, alpha, depth_exponent, xp) -> Any:
  """Equation (1) of the paper with the authors' exponent factor; see alpha_multipliers."""
  if num_layers == 1:
    return xp.ones((1,))
  depth = xp.arange(num_layers) / (num_layers - 1)  # 0 at the input, 1 at the output
  from_output = (1.0 - alpha) ** (depth_exponent * (1.0 - depth))  # alpha > 0
  from_input = (1.0 + alpha) ** (depth_exponent * depth)  # alpha <= 0
  return xp.where(alpha > 0, from_output, from_input)


def alpha_multipliers(
    num_layers: int, alpha: float, *, depth_exponent: float = 5.0
) -> np.ndarray:
  r"""Layer-wise learning-rate multipliers of the paper, input layer first.

  For layer :math:`l \in \{0, \dots, L-1\}` (forward order) and :math:`e` =
  ``depth_exponent``:

  .. math::
    m_l = \begin{cases}
      (1 - \alpha)^{e (L-1-l)/(L-1)} & \alpha > 0 \\
      (1 + \alpha)^{e\, l/(L-1)} & \alpha \le 0
    \end{cases}

  so ``rho_l(t) = m_l rho(t)``. Negative alpha slows the last layers, positive alpha the
  first ones; a single layer gets 1. The paper prints :math:`e = 1`, but the authors' code
  and their Figure 13 use :math:`e = 5` (``alpha=0.6`` gives the first layer
  :math:`0.4^5 \approx 0.0102`); pass ``depth_exponent=1.0`` for the printed equation.

  Args:
    num_layers: L, the number of layers (>= 1).
    alpha: in ``[-1, 1]``.
    depth_exponent: e, 5 in the authors' experiments.

  Returns:
    A float64 NumPy array of shape ``(num_layers,)``.

  Examples:
    >>> from layca_optax import alpha_multipliers
    >>> alpha_multipliers(3, 0.6).round(4)
    array([0.0102, 0.1012, 1.    ])
    >>> alpha_multipliers(3, -0.6, depth_exponent=1.0).round(4)
    array([1.    , 0.6325, 0.4   ])
  """
  if int(num_layers) != num_layers or num_layers < 1:
    raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}.")
  check_alpha(alpha, "alpha_multipliers")
  if not math.isfinite(depth_exponent) or depth_exponent < 0:
    raise ValueError(f"depth_exponent must be >= 0, got {depth_exponent!r}.")
  return np.asarray(
      _multipliers(int(num_layers), float(alpha), float(depth_exponent), np),
      dtype=np.float64,
  )


def traced_multipliers(num_layers: int, alpha: Any, depth_exponent: Any) -> jax.Array:
  """``alpha_multipliers`` in float32 for a possibly traced alpha (inject_hyperparams).

  A traced alpha cannot be validated; it is clipped to ``[-1, 1]`` so that a bad injected
  value cannot turn the multipliers into NaN (concrete values raise instead).
  """
  alpha = jnp.clip(jnp.asarray(alpha, jnp.float32), -1.0, 1.0)
  exponent = jnp.asarray(depth_exponent, jnp.float32)
  return _multipliers(num_layers, alpha, exponent, jnp).astype(jnp.float32)


# -- the plan of one params tree -------------------------------------------------------------


class LeafPlan(NamedTuple):
  """What the Layca transforms and the measures need to know about one leaf."""

  path: str
  is_layer: bool
  vector_axes: tuple[int, ...]  # summed over: one rotating vector
  vector_count_shape: tuple[int, ...]  # the leaf's shape without them: one value per vector
  stack_axes: tuple[int, ...]  # kept axes before the first vector axis: stacked layers
  rate_shape: tuple[int, ...]  # stacking sizes in place, 1 elsewhere: broadcasts on the leaf
  depth: int | None  # depth index of the leaf's first layer (0: input side); None: no layer

  @property
  def num_stacked(self) -> int:
    """How many layers the leaf holds (1 unless it has stacking axes)."""
    return math.prod(self.rate_shape)

  def multiplier_index(self) -> np.ndarray:
    """Each vector's index into the alpha multipliers, shaped to broadcast on the leaf."""
    assert self.depth is not None, self.path
    if not self.stack_axes:
      return np.asarray(self.depth)
    return self.depth + np.arange(self.num_stacked).reshape(self.rate_shape)

  def expand(self, per_vector: jax.Array) -> jax.Array:
    """One value per vector (``vector_count_shape``) -> size-1 vector axes, to broadcast."""
    return jnp.expand_dims(per_vector, self.vector_axes)


class LayerPlan(NamedTuple):
  """The :class:`LeafPlan` of every leaf (flattening order), for one params tree."""

  owner: str  # the public function whose arguments made it: errors name it
  leaves: tuple[LeafPlan, ...]
  num_layers: int  # a stacked leaf counts one layer per slice

  @property
  def layers(self) -> list[int]:
    """The indices of the layer leaves."""
    return [i for i, leaf in enumerate(self.leaves) if leaf.is_layer]


class Prepared(NamedTuple):
  """The two trees of one ``update`` call, flattened once and checked, and their plan."""

  updates: _tree.Flat
  params: _tree.Flat
  plan: LayerPlan


def vector_count_shape(shape: Sequence[int], vector_axes: Sequence[int]) -> tuple[int, ...]:
  """A leaf's shape without its vector axes: the shape of one value per vector."""
  return tuple(n for a, n in enumerate(shape) if a not in vector_axes)


def vector_names(path: str, count_shape: tuple[int, ...]) -> list[str]:
  """One name per vector of a leaf: ``'path'``, or ``'path[i]'`` / ``'path[i,j]'``."""
  if not count_shape:
    return [path]
  return [f"{path}[{','.join(map(str, i))}]" for i in np.ndindex(*count_shape)]


_GRADIENTS_FIX = "Pass the gradients of exactly the params tree the optimizer was initialised with."


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """The layer arguments given to one public function; :meth:`plan` resolves them.

  ``owner`` is that function's name: every error raised while resolving the arguments
  for a params tree names it, with the leaf path and the fix. ``mask=None`` selects the
  kernels (``default_mask``) unless ``every_leaf``; ``real_layers`` requires real
  floating-point layers (the optimizers; the measures take any leaf).
  """

  owner: str
  mask: MaskOrFn = None
  rotation_axes: AxesOrFn = None
  layer_order: Sequence[str] | None = None
  every_leaf: bool = False
  real_layers: bool = True

  def plan(self, params: Any) -> LayerPlan:
    """The plan of ``params``: mask, dtypes, rotation axes and depth order resolved."""
    params = _tree.unwrap(params)
    flat = _tree.flatten(params)
    is_layer = self._mask(params)
    if self.real_layers:
      self._check_layer_dtypes(flat, is_layer)
    axes = self._axes(flat, params)
    shapes = [tuple(np.shape(x)) for x in flat.leaves]
    stacks = [_stack_axes(vector) for vector in axes]
    rate_shapes = [
        tuple(n if a in stack else 1 for a, n in enumerate(shape))
        for shape, stack in zip(shapes, stacks)
    ]
    depth = self.depths(flat.paths, is_layer, [math.prod(r) for r in rate_shapes])
    leaves = tuple(
        LeafPlan(path, layer, vector, vector_count_shape(shape, vector), stack, rate, d)
        for path, layer, vector, shape, stack, rate, d in zip(
            flat.paths, is_layer, axes, shapes, stacks, rate_shapes, depth
        )
    )
    return LayerPlan(self.owner, leaves, sum(leaf.num_stacked for leaf in leaves if leaf.is_layer))

  def prepare(
      self,
      updates: Any,
      params: Any,
      names: tuple[str, str] = ("updates", "params"),
      fix: str = _GRADIENTS_FIX,
  ) -> Prepared:
    """The preamble of every ``update``: ``params`` given, both trees flattened and of
    the same structure, the plan built (from ``params``)."""
    if params is None:
      raise ValueError(
          f"{self.owner} needs the current parameters: call "
          "`tx.update(grads, opt_state, params)` (optax.MultiSteps, optax.chain and "
          "nnx.Optimizer pass them on). Got params=None."
      )
    flat_u, flat_p = _tree.flatten(updates), _tree.flatten(params)
    _tree.check_same_structure(flat_u, flat_p, self.owner, names, fix)
    return Prepared(flat_u, flat_p, self.plan(params))

  def pair(self, first: Any, second: Any, names: tuple[str, str], fix: str) -> Prepared:
    """Two versions of one params tree (a measure's arguments), checked, and the plan of
    ``first``; returned as ``Prepared(updates=second, params=first, plan)``."""
    flat_a, flat_b = _tree.flatten(first), _tree.flatten(second)
    _tree.check_same_structure(flat_a, flat_b, self.owner, names, fix)
    return Prepared(flat_b, flat_a, self.plan(first))

  # -- resolving the arguments ----------------------------------------------------------

  def _mask(self, params: Any) -> tuple[bool, ...]:
    """One Python bool per leaf of ``params`` (flattening order): is the leaf a layer?

    ``mask`` is ``None`` (the kernels, or every leaf with ``every_leaf``), a pytree of
    bools that is a prefix of ``params`` (a bool for a whole subtree), or a callable
    ``params -> such a pytree``. The bools must be static (Python or NumPy), as in
    ``optax.masked``.
    """
    mask = self.mask
    if mask is None:
      mask = (lambda p: jax.tree.map(lambda _: True, p)) if self.every_leaf else default_mask
    if callable(mask):
      mask = mask(params)
    full = _tree.broadcast_prefix(mask, params, is_leaf=lambda x: x is None)
    if full is None:
      raise ValueError(
          f"{self.owner}: `mask` must be a pytree of bools with the structure of the params "
          "(or a prefix of it: one bool for a whole subtree), or a callable params -> such "
          f"a pytree. Its structure does not fit the params:\n  mask:   "
          f"{jax.tree.structure(mask)}\n  params: {jax.tree.structure(params)}\nFor "
          "example mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)."
      )
    flags = []
    for path, flag in zip(_tree.leaf_paths(params), full):
      try:
        flags.append(bool(flag))
      except jax.errors.ConcretizationTypeError as e:
        raise ValueError(
            f"{self.owner}: the mask value for {path!r} is a traced array; masks must be "
            "static Python bools computed from shapes or paths, not from values."
        ) from e
    return tuple(flags)

  def _check_layer_dtypes(self, flat: _tree.Flat, is_layer: Sequence[bool]) -> None:
    """Layers are rotated in real space: integer, boolean or complex kernels are an error."""
    for path, leaf, layer in zip(flat.paths, flat.leaves, is_layer):
      dtype = jnp.result_type(leaf)
      if layer and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{self.owner}: layer leaf {path!r} has dtype {dtype}; Layca rotates real "
            "floating-point weights only. Exclude it from the layers, e.g. "
            f"mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2 and "
            "jnp.issubdtype(x.dtype, jnp.floating), p), or store it as float32."
        )

  def _axes(self, flat: _tree.Flat, params: Any) -> list[tuple[int, ...]]:
    """The vector axes of each leaf of ``params`` (flattening order), sorted, non-negative."""
    shapes = [tuple(np.shape(x)) for x in flat.leaves]
    rotation_axes = self.rotation_axes
    if rotation_axes is None:
      return [tuple(range(len(s))) for s in shapes]
    if callable(rotation_axes):
      rotation_axes = rotation_axes(params)
    full = _tree.broadcast_prefix(rotation_axes, params, is_leaf=_is_axes)
    if full is None:
      raise ValueError(
          f"{self.owner}: `rotation_axes` must be a pytree with the structure of the params "
          "(or a prefix of it) whose leaves are tuples of axes (or None for the whole "
          "leaf), or a callable params -> such a pytree, e.g. layca_optax.output_unit_axes. "
          f"Its structure does not fit the params:\n  rotation_axes: "
          f"{jax.tree.structure(rotation_axes, is_leaf=_is_axes)}\n  params: "
          f"{jax.tree.structure(params)}"
      )
    return [self._normalize_axes(a, s, p) for a, s, p in zip(full, shapes, flat.paths)]

  def _normalize_axes(self, axes: Any, shape: tuple[int, ...], path: str) -> tuple[int, ...]:
    ndim = len(shape)
    if axes is None:
      return tuple(range(ndim))
    try:
      normalized = tuple(sorted({int(a) % ndim if ndim else int(a) for a in axes}))
    except (TypeError, ZeroDivisionError) as e:
      raise ValueError(
          f"{self.owner}: rotation axes {axes!r} for {path!r} are not axes."
      ) from e
    bad = [a for a in axes if not -ndim <= int(a) < max(ndim, 1)] if ndim else list(axes)
    if bad or (ndim and not normalized):
      raise ValueError(
          f"{self.owner}: rotation axes {axes!r} do not fit leaf {path!r} of shape {shape}. "
          f"Give a non-empty tuple of axes in range(-{ndim}, {ndim}), e.g. "
          f"{tuple(range(ndim))} for the whole leaf or use layca_optax.output_unit_axes / "
          "stacked_layer_axes."
      )
    return normalized

  def depths(
      self,
      paths: Sequence[str],
      is_layer: Sequence[bool],
      num_stacked: Sequence[int] | None = None,
  ) -> tuple[int | None, ...]:
    """The depth index of each leaf's first layer (0 = input side), ``None`` for non-layers.

    With ``layer_order=None`` layers are taken in natural order of their paths (digit
    runs compared as numbers). Otherwise ``layer_order`` lists paths from input to
    output, for example ``forward_order(...)``; it may name non-layer leaves (they are
    skipped) but must name every layer leaf once and nothing that is not in the params.
    A stacked leaf holds ``num_stacked`` layers (default 1 each), consecutive in depth at
    the leaf's place.

    Examples:
      >>> from layca_optax._plan import LayerSpec
      >>> LayerSpec("f").depths(['b', 'a', 'bias'], [True, True, False], [2, 1, 1])
      (1, 0, None)
    """
    layers = [p for p, flag in zip(paths, is_layer) if flag]
    if self.layer_order is None:
      ordered = sorted(layers, key=_tree.natural_key)
    else:
      ordered = self._ordered_layers(paths, layers)
    stacked = dict(zip(paths, num_stacked or [1] * len(paths)))
    starts, depth = {}, 0
    for path in ordered:
      starts[path] = depth
      depth += stacked[path]
    return tuple(starts.get(p) if flag else None for p, flag in zip(paths, is_layer))

  def _ordered_layers(self, paths: Sequence[str], layers: list[str]) -> list[str]:
    layer_order = self.layer_order
    assert layer_order is not None
    if isinstance(layer_order, str) or not all(isinstance(p, str) for p in layer_order):
      raise TypeError(
          f"{self.owner}: `layer_order` must be a list of path strings such as "
          f"['Conv_0/kernel', 'Dense_0/kernel'], got {layer_order!r}."
      )
    layer_order = list(layer_order)
    known = set(paths)
    for path in layer_order:
      if path not in known:
        close = difflib.get_close_matches(path, paths, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"{self.owner}: `layer_order` names {path!r}, which is not a leaf path of the "
            f"params.{hint} Paths look like {list(paths[:3])}; get them all, in depth "
            "order, with layca_optax.forward_order(apply_fn, params, example_input)."
        )
    duplicates = sorted({p for p in layer_order if layer_order.count(p) > 1})
    if duplicates:
      raise ValueError(f"{self.owner}: `layer_order` names {duplicates} more than once.")
    listed = set(layer_order)
    missing = [p for p in layers if p not in listed]
    if missing:
      raise ValueError(
          f"{self.owner}: layer leaves {missing} are missing from `layer_order`; every "
          "layer needs a depth. Pass the full order, e.g. layca_optax.forward_order("
          "apply_fn, params, example_input), or exclude those leaves from the layers with "
          "`mask`."
      )
    is_layer = set(layers)
    return [p for p in layer_order if p in is_layer]


def _is_axes(x: Any) -> bool:
  """A per-leaf axes value: ``None`` (all axes) or a tuple of ints."""
  return x is None or (
      isinstance(x, tuple) and all(isinstance(i, (int, np.integer)) for i in x)
  )


def _stack_axes(vector_axes: tuple[int, ...]) -> tuple[int, ...]:
  """The kept axes before the first vector axis: each index is its own layer."""
  first = vector_axes[0] if vector_axes else 0
  return tuple(a for a in range(first) if a not in vector_axes)


# -- what follows from a plan: the layers' rates, their initial norms ------------------------


def _layer_multipliers(num_layers: int, alpha: Any, depth_exponent: Any) -> Any:
  """The multipliers in float32: NumPy numbers for a concrete alpha, traced for an injected one.

  Numbers are constants in the compiled step (1 for alpha = 0, which XLA folds away): on a
  500-layer tree XLA:CPU compiled the one-pass step in 7.4 s, against 18.4 s with the
  multipliers computed in the step and read back per layer (``benchmarks.compile_time``
  with scalar sums, ``benchmarks/results_issue21_compile_time.txt``); Layca's step of the
  1,000-leaf tree compiles in 22-32 s against 35-39 s at 7b1e223, which computed them in
  the step (``benchmarks/results_issue23_paired.txt``).
  """
  alpha_value, exponent = _numerics.concrete_float(alpha), _numerics.concrete_float(depth_exponent)
  if alpha_value is None or exponent is None:
    return traced_multipliers(num_layers, alpha, depth_exponent)
  return _multipliers(num_layers, alpha_value, exponent, np).astype(np.float32)


def layer_rates(
    plan: LayerPlan, rhos: Sequence[jax.Array], alpha: Any, depth_exponent: Any
) -> list[jax.Array]:
  r"""Each leaf's rate: :math:`\rho_l(t) = m_l \rho(t)` for layers, :math:`\rho(t)` otherwise.

  ``rhos`` holds each leaf's :math:`\rho(t)` (``_rates.leaf_rates``). A stacked leaf gets
  one multiplier per stacked layer, shaped to broadcast on it.
  """
  if plan.num_layers == 0:
    return list(rhos)
  multipliers = _layer_multipliers(plan.num_layers, alpha, depth_exponent)
  return [
      multipliers[leaf.multiplier_index()] * rho if leaf.is_layer else rho
      for leaf, rho in zip(plan.leaves, rhos)
  ]


def initial_norms(
    plan: LayerPlan, params: Any, axis_name: _numerics.AxisName | None = None
) -> Any:
  """Float32 norm of each layer's vectors (a float32 0 for other leaves), in the params'
  structure: the ``initial_norms`` of Layca's state. Warns on zero norms and on
  one-element layers, naming ``plan.owner``."""
  flat = _tree.flatten(params)
  norms = [
      _numerics.drop_vector_axes(
          jnp.sqrt(_numerics.sum_of_products(w, w, leaf.vector_axes, axis_name)),
          leaf.vector_axes,
      )
      if leaf.is_layer else jnp.zeros([], jnp.float32)
      for w, leaf in zip(flat.leaves, plan.leaves)
  ]
  _warn_single_elements(plan, flat)
  _warn_zero_norms(plan, norms)
  return flat.unflatten(norms)


def _warn_single_elements(plan: LayerPlan, flat: _tree.Flat) -> None:
  single = [
      leaf.path
      for w, leaf in zip(flat.leaves, plan.leaves)
      if leaf.is_layer and math.prod(jnp.shape(w)[i] for i in leaf.vector_axes) == 1
  ]
  if single:
    warnings.warn(
        f"{plan.owner}: layer leaves {single} have a single element. A one-element vector "
        "has no direction to rotate to (every step is parallel to it), so Layca never "
        "changes them. Exclude them from the layers with `mask=` (they then get "
        "-learning_rate * step), or freeze them on purpose with optax.partition.",
        stacklevel=3,
    )


def _warn_zero_norms(plan: LayerPlan, norms: Sequence[jax.Array]) -> None:
  try:
    zero = [
        leaf.path for leaf, n in zip(plan.leaves, norms)
        if leaf.is_layer and bool(jnp.any(n == 0))
    ]
  except jax.errors.ConcretizationTypeError:
    return  # traced (jit, eval_shape): values unknown
  if zero:
    warnings.warn(
        f"{plan.owner}: layer leaves {zero} have zero norm at init. A zero vector has no "
        "direction to rotate, so they get plain -learning_rate * step updates and are "
        "never projected back to a sphere. Initialise them with non-zero values (e.g. "
        "He/LeCun init) or exclude them from the layers with `mask=`.",
        stacklevel=3,
    )
