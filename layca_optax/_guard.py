"""Rare exact paths behind as few ``lax.cond`` as possible.

Layca's step and ``cosine_distance`` each have a one-pass formula for the common case and
an exact one, with more passes over the arrays, for a rare case (a step nearly parallel
to the weights; a change mostly of norm). Each leaf (or stack of leaves) needs its own
cond, so that only the leaves in the rare case pay for the exact path. On XLA:CPU each
executed cond costs about 0.1 ms and is a barrier between the reductions before it and
the elementwise pass after it: 17 conds were ~12 % of a Layca step on the 18.4M-parameter
benchmark tree (BENCHMARKS.md). So the per-leaf conds sit inside one outer cond on "any
leaf in the rare case": the common step runs one cond. Callers may pass the common-case
values packed in one vector (``_groups.Packer``); they are split per item only inside the
cond.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

__all__ = ["rarely_exact"]


def _keep(operands: Any, fast: Any) -> Any:
  del operands
  return fast


def rarely_exact(
    any_rare: jax.Array,
    rare: Sequence[Callable[[Any], jax.Array]],
    exact: Sequence[Callable[[Any, Any], Any]],
    operands: Sequence[Any],
    fast: Any,
    split: Callable[[Any], Sequence[Any]] = list,
    join: Callable[[list[Any]], Any] = list,
) -> Any:
  """``fast``, with item ``i`` replaced by ``exact[i](operands[i], fast_i)`` where rare.

  Args:
    any_rare: boolean scalar: is any item in the rare case?
    rare: per item, ``operands -> bool``: does this item need its exact path? Only
      evaluated when ``any_rare``.
    exact: per item, ``(operands, fast_i) -> value`` with the structure of ``fast_i``.
    operands: per item, a pytree of arrays that ``rare[i]`` and ``exact[i]`` read.
    fast: the common-case values, one per item as ``split(fast)`` gives them (by
      default a list), e.g. one packed vector for all items.
    split: ``fast -> per-item values``; called inside the cond only.
    join: per-item values -> the structure of ``fast``.

  Returns:
    A value with the structure of ``fast``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._guard import rarely_exact
    >>> flags = [jnp.array(False), jnp.array(True)]
    >>> out = rarely_exact(
    ...     any_rare=flags[0] | flags[1],
    ...     rare=[lambda o: o[1]] * 2,
    ...     exact=[lambda o, fast: o[0]] * 2,
    ...     operands=[(jnp.float32(10.0), flags[0]), (jnp.float32(20.0), flags[1])],
    ...     fast=[jnp.float32(1.0), jnp.float32(2.0)],
    ... )
    >>> [float(x) for x in out]  # item 1 took its exact path
    [1.0, 20.0]
  """
  operands = list(operands)
  if not operands:
    return fast

  def each(operands, fast):
    return join([
        jax.lax.cond(r(o), e, _keep, o, f)
        for r, e, o, f in zip(rare, exact, operands, split(fast))
    ])

  if len(operands) == 1:  # the per-item cond alone
    (o,), (f,) = operands, split(fast)
    return join([jax.lax.cond(any_rare, exact[0], _keep, o, f)])
  return jax.lax.cond(any_rare, each, _keep, operands, fast)
