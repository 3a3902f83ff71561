"""Pytree plumbing shared by every module: leaf paths, Flax NNX variables, structure checks.

Paths are strings with keys joined by ``'/'`` (``'Conv_0/kernel'``), exactly what
``jax.tree_util.keystr(path, simple=True, separator='/')`` gives. Flax NNX ``Variable``
objects (what an optimizer's ``init`` sees inside an ``nnx.Optimizer``) are treated as
leaves and unwrapped, so that a ``State`` of Variables and the ``State`` of arrays seen at
``update`` have the same paths and the same structure.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp

__all__: list[str] = []  # private module

#: A mesh axis name, or a tuple of them, as ``jax.lax.psum`` takes.
AxisName = Union[Hashable, tuple[Hashable, ...]]


def is_variable(x: Any) -> bool:
  """True for a Flax NNX ``Variable`` (without importing Flax when it is not loaded)."""
  nnx = sys.modules.get("flax.nnx")
  return nnx is not None and isinstance(x, nnx.Variable)


def unwrap(tree: Any) -> Any:
  """Replaces Flax NNX Variables by their values; every other pytree is returned as is."""
  if "flax.nnx" not in sys.modules:
    return tree
  return jax.tree.map(
      lambda x: _value(x) if is_variable(x) else x, tree, is_leaf=is_variable
  )


def nnx_pure_dict(tree: Any) -> dict | None:
  """A Flax NNX ``State`` as nested plain dicts (same leaves, same order); else None."""
  nnx = sys.modules.get("flax.nnx")
  if nnx is None or not isinstance(tree, nnx.State):
    return None
  return nnx.to_pure_dict(tree)


def _value(variable: Any) -> Any:
  get_value = getattr(variable, "get_value", None)  # Flax >= 0.11; `.value` before.
  return get_value() if get_value is not None else variable.value


def path_str(path: tuple[Any, ...]) -> str:
  """``'/'``-joined string of a key path, e.g. ``'Conv_0/kernel'``."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


class Flat(NamedTuple):
  """A pytree flattened once: its paths, its leaves and how to rebuild it."""

  paths: tuple[str, ...]
  leaves: tuple[Any, ...]
  treedef: Any

  def unflatten(self, leaves) -> Any:
    return jax.tree_util.tree_unflatten(self.treedef, list(leaves))


def flatten(tree: Any) -> Flat:
  """Flattens ``tree`` (NNX Variables unwrapped) into paths, leaves and a treedef."""
  with_path, treedef = jax.tree_util.tree_flatten_with_path(unwrap(tree))
  paths = tuple(path_str(p) for p, _ in with_path)
  return Flat(paths, tuple(x for _, x in with_path), treedef)


def leaf_paths(tree: Any) -> list[str]:
  """The path of every leaf of ``tree``, in JAX's flattening order.

  Paths join keys with ``'/'``; Flax NNX Variables count as leaves. These are the strings
  ``layer_order``, ``forward_order`` and ``natural_order`` use.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import leaf_paths
    >>> leaf_paths({'Dense_0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}})
    ['Dense_0/bias', 'Dense_0/kernel']
  """
  return list(flatten(tree).paths)


def leaves_by_path(tree: Any) -> dict[str, Any]:
  """``{path: leaf}`` for every leaf of ``tree`` (``None`` leaves are skipped).

  Handy to read per-layer results such as ``cosine_distance(...)`` by name.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import leaves_by_path
    >>> leaves_by_path({'a': {'w': 1.0}, 'b': [2.0, None]})
    {'a/w': 1.0, 'b/0': 2.0}
  """
  flat = flatten(tree)
  return dict(zip(flat.paths, flat.leaves))


class _Boxed:
  """Keeps one prefix value whole while it is spread over a subtree."""

  __slots__ = ("value",)

  def __init__(self, value):
    self.value = value


def broadcast_prefix(
    prefix: Any, tree: Any, is_leaf: Callable[[Any], bool]
) -> list[Any] | None:
  """One value per leaf of ``tree``: the ``prefix`` leaf above it; ``None`` if no fit.

  ``prefix`` is a pytree whose structure is a prefix of ``tree``'s (one value for a whole
  subtree); ``is_leaf`` says which of its nodes are values (tuples of axes, schedules,
  ``None``...). A Flax NNX ``State`` is also matched through its pure dict, so plain dicts
  work as prefixes of a ``State``.
  """
  targets = [unwrap(tree)]
  pure = nnx_pure_dict(targets[0])
  if pure is not None:
    targets.append(pure)
  for target in targets:
    try:
      boxed = jax.tree.map(
          lambda v, sub: jax.tree.map(lambda _: _Boxed(v), sub), prefix, target,
          is_leaf=is_leaf,
      )
    except (ValueError, TypeError):
      continue
    return [b.value for b in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, _Boxed))]
  return None


def check_params(params: Any, owner: str) -> None:
  """Raises the optax-style error for a transform that needs ``params``."""
  if params is None:
    raise ValueError(
        f"{owner} needs the current parameters: call "
        "`tx.update(grads, opt_state, params)` (optax.MultiSteps, optax.chain and "
        "nnx.Optimizer pass them on). Got params=None."
    )


_GRADIENTS_FIX = "Pass the gradients of exactly the params tree the optimizer was initialised with."


def check_same_structure(
    updates: Flat,
    params: Flat,
    owner: str,
    names: tuple[str, str] = ("updates", "params"),
    fix: str = _GRADIENTS_FIX,
) -> None:
  """Raises a ValueError naming the first path where two flattened trees differ."""
  if updates.treedef == params.treedef:
    return
  first, second = names
  for i, (pu, pp) in enumerate(zip(updates.paths, params.paths)):
    if pu != pp:
      raise ValueError(
          f"{owner}: the {first} and the {second} have different structures; the first "
          f"difference is leaf {i}: {first} have {pu!r} where {second} have {pp!r}. {fix}"
      )
  nu, np_ = len(updates.paths), len(params.paths)
  if nu != np_:
    longer, name = (updates, first) if nu > np_ else (params, second)
    raise ValueError(
        f"{owner}: the {first} have {nu} leaves and the {second} {np_}; the first leaf "
        f"only in the {name} is {longer.paths[min(nu, np_)]!r}. {fix}"
    )
  raise ValueError(
      f"{owner}: the {first} and the {second} have the same paths but different pytree "
      f"types:\n  {first}: {updates.treedef}\n  {second}: {params.treedef}\nConvert "
      "both to the same container types."
  )


def as_f32(x: jax.Array) -> jax.Array:
  """``x`` in float32 (the precision of every Layca reduction, whatever the param dtype).

  Complex leaves (never layers, but they may be biases or other non-layer leaves) become
  complex64 rather than losing their imaginary part. The ``float0`` gradient that
  ``jax.grad(..., allow_int=True)`` gives an integer leaf has no values: it raises.
  """
  dtype = jnp.result_type(x)
  if dtype == jax.dtypes.float0:
    raise TypeError(
        "Got a float0 gradient (what jax.grad(..., allow_int=True) returns for an "
        "integer leaf); it has no values to step with. Differentiate with respect to the "
        "floating-point leaves only, or give the integer leaves a zero update with "
        "optax.partition({'train': tx, 'frozen': optax.set_to_zero()}, labels) and "
        "float gradients."
    )
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return jnp.asarray(x, jnp.complex64)
  return jnp.asarray(x, jnp.float32)


def sum_of_products(
    a: jax.Array,
    b: jax.Array,
    axis_name: AxisName | None = None,
    axes: tuple[int, ...] | None = None,
) -> jax.Array:
  """``sum(a * b)`` in float32, summed over the named mesh axis ``axis_name`` if given.

  ``axes=None`` sums everything into a scalar; a tuple of axes sums over those only and
  keeps them as size-1 axes (one value per rotating vector, broadcastable to ``a``).

  Written as an elementwise product and a sum, not ``jnp.vdot``: dot products of float32
  arrays may run at reduced precision on accelerators (TF32, bf16 passes) and ``vdot`` of
  leaves sharded on a 2-D mesh raises, while this form is exact float32 everywhere.
  Complex leaves count as real vectors of twice the length: ``sum(real(a * conj(b)))``.
  Inside ``shard_map`` (or ``pmap``) each device holds a slice of a leaf: ``axis_name``
  sums the slices' partial results so every device gets the whole leaf's value (over the
  axes the leaf is sharded on, see ``summed_axes``).
  """
  a, b = as_f32(a), as_f32(b)
  if jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
    # The real inner product of C^n seen as R^2n: norms and angles stay real.
    product = jnp.real(a * jnp.conj(b))
  else:
    product = a * b
  total = jnp.sum(product, axis=axes, keepdims=axes is not None)
  if axis_name is None:
    return total
  axes = summed_axes(total, axis_name)
  return jax.lax.psum(total, axes) if axes else total


def _varying_axes(x: Any) -> frozenset | None:
  """The mesh axes over which ``x`` varies inside ``shard_map``; ``None`` if unknown.

  JAX tracks it in the abstract value (``vma`` in jax 0.6-0.9, ``manual_axis_type``
  later) unless ``shard_map(..., check_vma=False)``, ``pmap`` or ``vmap``, where every
  set is empty.
  """
  typeof = getattr(jax, "typeof", None)
  if typeof is None:
    return None
  aval = typeof(x)
  varying = getattr(aval, "vma", None)
  if varying is None:
    varying = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
  return None if varying is None else frozenset(varying)


def summed_axes(total: jax.Array, axis_name: AxisName) -> tuple[Hashable, ...]:
  """The axes of ``axis_name`` that ``psum`` must sum ``total``'s partial results over.

  A leaf replicated over a named axis (a bias next to sharded kernels) already holds its
  whole value there: summing its copies would count it once per device, and ``psum``
  over a mix of axes a value does and does not vary over raises. Where JAX tracks which
  axes vary (``shard_map``'s default ``check_vma=True``) only those axes are summed;
  where it does not (``check_vma=False``, ``pmap``, ``vmap``) every named axis is, and each
  device must hold a distinct slice.
  """
  names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  varying = _varying_axes(total)
  if varying is None:
    return names
  # jax.lax.axis_index varies over its axis exactly when JAX tracks that axis.
  tracked = lambda name: name in (_varying_axes(jax.lax.axis_index(name)) or ())
  return tuple(n for n in names if n in varying or not tracked(n))


def reducer(
    axis_name: AxisName | None, axes: tuple[int, ...] | None = None
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``sum_of_products`` bound to ``axis_name`` and ``axes``: the one reduction used."""
  return functools.partial(sum_of_products, axis_name=axis_name, axes=axes)
