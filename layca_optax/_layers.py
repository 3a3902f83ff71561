"""Layer bookkeeping: which leaves are layers, their depth, their learning-rate multipliers.

Everything here is static: it depends on the params' structure, shapes and dtypes, never on
their values, so under ``jax.jit`` it runs once, at trace time, and the hot path only sees
Python constants.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax import _axes, _tree
from layca_optax._order import natural_key

__all__ = ["alpha_multipliers", "default_mask"]

MaskOrFn = Union[Any, Callable[[Any], Any], None]


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


def resolve_mask(mask: MaskOrFn, params: Any, owner: str) -> tuple[bool, ...]:
  """One Python bool per leaf of ``params`` (flattening order): is the leaf a layer?

  ``mask`` is ``None`` (the default selection, ``ndim >= 2``), a pytree of bools that is a
  prefix of ``params`` (a bool for a whole subtree), or a callable ``params -> such a
  pytree``. The bools must be static (Python or NumPy), as in ``optax.masked``.
  """
  params = _tree.unwrap(params)
  if mask is None:
    mask = default_mask
  if callable(mask):
    mask = mask(params)
  try:
    full = _broadcast_prefix(mask, params)
  except (ValueError, TypeError) as e:
    # A plain-dict mask for a Flax NNX State: match it against the State's pure dict,
    # which has the same keys and flattens in the same order.
    pure, full = _tree.nnx_pure_dict(params), None
    if pure is not None:
      try:
        full = _broadcast_prefix(mask, pure)
      except (ValueError, TypeError):
        pass
    if full is None:
      raise ValueError(
          f"{owner}: `mask` must be a pytree of bools with the structure of the params (or "
          "a prefix of it: one bool for a whole subtree), or a callable params -> such a "
          f"pytree. Its structure does not fit the params:\n  mask:   "
          f"{jax.tree.structure(mask)}\n  params: {jax.tree.structure(params)}\nFor "
          "example mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)."
      ) from e
  flags = []
  for path, flag in zip(_tree.leaf_paths(params), jax.tree.leaves(full)):
    try:
      flags.append(bool(flag))
    except jax.errors.ConcretizationTypeError as e:
      raise ValueError(
          f"{owner}: the mask value for {path!r} is a traced array; masks must be static "
          "Python bools computed from shapes or paths, not from values."
      ) from e
  return tuple(flags)


def _broadcast_prefix(mask: Any, params: Any) -> Any:
  """Each leaf of ``params`` paired with the bool of the ``mask`` leaf above it."""
  return jax.tree.map(
      lambda m, sub: jax.tree.map(lambda _: m, sub), mask, params,
      is_leaf=lambda x: x is None,
  )


def check_layer_dtypes(flat: _tree.Flat, is_layer: Sequence[bool], owner: str) -> None:
  """Layers are rotated in real space: integer, boolean or complex kernels are an error."""
  for path, leaf, layer in zip(flat.paths, flat.leaves, is_layer):
    dtype = jnp.result_type(leaf)
    if layer and not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f"{owner}: layer leaf {path!r} has dtype {dtype}; Layca rotates real "
          "floating-point weights only. Exclude it from the layers, e.g. "
          f"mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2 and "
          "jnp.issubdtype(x.dtype, jnp.floating), p), or store it as float32."
      )


def layer_indices(
    paths: Sequence[str],
    is_layer: Sequence[bool],
    layer_order: Sequence[str] | None,
    owner: str,
    num_slices: Sequence[int] | None = None,
) -> tuple[int | None, ...]:
  """The depth index of each leaf's first layer (0 = input side), ``None`` for non-layers.

  With ``layer_order=None`` layers are taken in natural order of their paths (digit runs
  compared as numbers). Otherwise ``layer_order`` lists paths from input to output, for
  example ``forward_order(...)``; it may name non-layer leaves (they are skipped) but must
  name every layer leaf once and nothing that is not in the params. A stacked leaf holds
  ``num_slices`` layers (default 1 each), consecutive in depth at the leaf's place.
  """
  layers = [p for p, flag in zip(paths, is_layer) if flag]
  if layer_order is None:
    ordered = sorted(layers, key=natural_key)
  else:
    ordered = _ordered_layers(layer_order, paths, layers, owner)
  slices = dict(zip(paths, num_slices or [1] * len(paths)))
  starts, depth = {}, 0
  for path in ordered:
    starts[path] = depth
    depth += slices[path]
  return tuple(starts.get(p) if flag else None for p, flag in zip(paths, is_layer))


def _ordered_layers(
    layer_order: Sequence[str], paths: Sequence[str], layers: list[str], owner: str
) -> list[str]:
  if isinstance(layer_order, str) or not all(isinstance(p, str) for p in layer_order):
    raise TypeError(
        f"{owner}: `layer_order` must be a list of path strings such as "
        f"['Conv_0/kernel', 'Dense_0/kernel'], got {layer_order!r}."
    )
  layer_order = list(layer_order)
  known = set(paths)
  for path in layer_order:
    if path not in known:
      close = difflib.get_close_matches(path, paths, n=3)
      hint = f" Did you mean {close}?" if close else ""
      raise ValueError(
          f"{owner}: `layer_order` names {path!r}, which is not a leaf path of the "
          f"params.{hint} Paths look like {list(paths[:3])}; get them all, in depth "
          "order, with layca_optax.forward_order(apply_fn, params, example_input)."
      )
  duplicates = sorted({p for p in layer_order if layer_order.count(p) > 1})
  if duplicates:
    raise ValueError(f"{owner}: `layer_order` names {duplicates} more than once.")
  listed = set(layer_order)
  missing = [p for p in layers if p not in listed]
  if missing:
    raise ValueError(
        f"{owner}: layer leaves {missing} are missing from `layer_order`; every layer "
        "needs a depth. Pass the full order, e.g. layca_optax.forward_order(apply_fn, "
        "params, example_input), or exclude those leaves from the layers with `mask`."
    )
  is_layer = set(layers)
  return [p for p in layer_order if p in is_layer]


def check_alpha(alpha: Any, owner: str) -> None:
  """Raises for a concrete alpha outside ``[-1, 1]`` (traced values are clipped later)."""
  value = concrete_float(alpha)
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


def concrete_float(x: Any) -> float | None:
  """``float(x)`` when ``x`` is a concrete number, ``None`` when it is traced."""
  # float('0.1') would parse a string: a number given as text is a bug to report.
  if isinstance(x, (jax.core.Tracer, str, bytes)):
    return None
  try:
    return float(x)
  except (jax.errors.ConcretizationTypeError, TypeError):
    return None


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


def traced_multipliers(num_layers: int, alpha, depth_exponent) -> jax.Array:
  """``alpha_multipliers`` in float32 for a possibly traced alpha (inject_hyperparams).

  A traced alpha cannot be validated; it is clipped to ``[-1, 1]`` so that a bad injected
  value cannot turn the multipliers into NaN (concrete values raise instead).
  """
  alpha = jnp.clip(jnp.asarray(alpha, jnp.float32), -1.0, 1.0)
  exponent = jnp.asarray(depth_exponent, jnp.float32)
  return _multipliers(num_layers, alpha, exponent, jnp).astype(jnp.float32)


class LayerPlan(NamedTuple):
  """What every Layca transform needs to know about a params tree, resolved once."""

  is_layer: tuple[bool, ...]
  depth: tuple[int | None, ...]  # index of the leaf's first layer, input side first
  num_layers: int  # a stacked leaf counts one layer per slice
  axes: tuple[_axes.LeafAxes, ...]  # how each leaf splits into rotating vectors


def plan_layers(
    flat: _tree.Flat,
    params: Any,
    mask: MaskOrFn,
    layer_order: Sequence[str] | None,
    owner: str,
    rotation_axes: _axes.AxesOrFn = None,
) -> LayerPlan:
  """Resolves mask, dtypes, rotation axes and depth order for ``params`` (as ``flat``)."""
  is_layer = resolve_mask(mask, params, owner)
  check_layer_dtypes(flat, is_layer, owner)
  axes = _axes.resolve_axes(rotation_axes, flat, params, owner)
  slices = [a.num_slices for a in axes]
  depth = layer_indices(flat.paths, is_layer, layer_order, owner, slices)
  num_layers = sum(n for n, layer in zip(slices, is_layer) if layer)
  return LayerPlan(is_layer, depth, num_layers, axes)
