"""Pytree plumbing shared by every module: leaf paths, Flax NNX variables, structure checks.

Paths are strings with keys joined by ``'/'`` (``'Conv_0/kernel'``), exactly what
``jax.tree_util.keystr(path, simple=True, separator='/')`` gives. Flax NNX ``Variable``
objects (what an optimizer's ``init`` sees inside an ``nnx.Optimizer``) are treated as
leaves and unwrapped, so that a ``State`` of Variables and the ``State`` of arrays seen at
``update`` have the same paths and the same structure.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

__all__: list[str] = []  # private module

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


_DIGIT_RUN = re.compile(r"(\d+)")


def natural_key(path: str) -> tuple[tuple[str | int, ...], str]:
  """Sort key of ``path`` comparing digit runs as numbers (``'Dense_2'`` before ``'Dense_10'``).

  ``re.split`` with a capturing group alternates text (even positions) and digit runs
  (odd positions), so two keys only ever compare ``str`` with ``str`` and ``int`` with
  ``int``. The path itself breaks the ties between ``'a01'`` and ``'a1'``.
  """
  parts = _DIGIT_RUN.split(path)
  return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), path


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
  ``layer_order``, ``forward_order`` and ``natural_order`` use. (Deprecated as
  ``layca_optax.leaf_paths``.)

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._tree import leaf_paths
    >>> leaf_paths({'Dense_0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}})
    ['Dense_0/bias', 'Dense_0/kernel']
  """
  return list(flatten(tree).paths)


def leaves_by_path(tree: Any) -> dict[str, Any]:
  """``{path: leaf}`` for every leaf of ``tree`` (``None`` leaves are skipped).

  Handy to read per-layer results such as ``cosine_distance(...)`` by name. (Deprecated
  as ``layca_optax.leaves_by_path``.)

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._tree import leaves_by_path
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


def _plain_states(tree: Any, is_leaf: Callable[[Any], bool] = lambda x: False) -> Any:
  """``tree`` with every Flax NNX ``State`` replaced by a plain dict (recursively).

  A ``State`` flattens like the dict of its items (same keys, same order), so a prefix
  written with plain dicts (``{'blocks': ..., 'head': None}``) and a ``State`` of params,
  or a prefix that mixes both (``stacked_layer_axes(p['blocks'])`` returns a ``State``
  when ``p`` is one), line up once both sides are plain.
  """
  nnx = sys.modules.get("flax.nnx")
  if nnx is None:
    return tree

  def plain(x):
    if is_leaf(x):
      return x
    if isinstance(x, nnx.State) or type(x) is dict:  # OrderedDict keeps its own order
      return {k: plain(v) for k, v in x.items()}
    return x

  return plain(tree)


def broadcast_prefix(
    prefix: Any, tree: Any, is_leaf: Callable[[Any], bool]
) -> list[Any] | None:
  """One value per leaf of ``tree``: the ``prefix`` leaf above it; ``None`` if no fit.

  ``prefix`` is a pytree whose structure is a prefix of ``tree``'s (one value for a whole
  subtree); ``is_leaf`` says which of its nodes are values (tuples of axes, schedules,
  ``None``...). Flax NNX ``State`` containers on either side are matched as plain dicts.
  Used for every prefix argument: ``mask``, ``rotation_axes`` and per-leaf rates.

  Examples:
    >>> from layca_optax._tree import broadcast_prefix
    >>> broadcast_prefix({'a': 1, 'b': 2}, {'a': [0, 0], 'b': 0}, is_leaf=lambda x: False)
    [1, 1, 2]
  """
  target = _plain_states(unwrap(tree))
  prefix = _plain_states(prefix, is_leaf)
  try:
    boxed = jax.tree.map(
        lambda v, sub: jax.tree.map(lambda _: _Boxed(v), sub), prefix, target,
        is_leaf=is_leaf,
    )
  except (ValueError, TypeError):
    return None
  return [b.value for b in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, _Boxed))]


def check_same_structure(
    updates: Flat, params: Flat, owner: str, names: tuple[str, str], fix: str
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
