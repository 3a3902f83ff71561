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
  """The path of every leaf of ``tree``, in JAX's flattening order."""
  return list(flatten(tree).paths)


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
  """``x`` in float32 (the precision of every Layca reduction, whatever the param dtype)."""
  return jnp.asarray(x, jnp.float32)


def sum_of_products(
    a: jax.Array, b: jax.Array, axis_name: AxisName | None = None
) -> jax.Array:
  """``sum(a * b)`` in float32, summed over the named mesh axis ``axis_name`` if given.

  Written as an elementwise product and a sum, not ``jnp.vdot``: dot products of float32
  arrays may run at reduced precision on accelerators (TF32, bf16 passes) and ``vdot`` of
  leaves sharded on a 2-D mesh raises, while this form is exact float32 everywhere.
  Inside ``shard_map`` (or ``pmap``) each device holds a slice of a leaf: ``axis_name``
  sums the slices' partial results so every device gets the whole leaf's value.
  """
  total = jnp.sum(as_f32(a) * as_f32(b))
  return total if axis_name is None else jax.lax.psum(total, axis_name)


def reducer(axis_name: AxisName | None) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``sum_of_products`` bound to ``axis_name``: the one reduction every module uses."""
  return functools.partial(sum_of_products, axis_name=axis_name)
