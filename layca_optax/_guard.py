"""Rare exact paths behind as few ``lax.cond`` as possible.

Layca's step and ``cosine_distance`` each have a one-pass formula for the common case and
an exact one, with more passes over the arrays, for a rare case (a step nearly parallel
to the weights; a change mostly of norm). Each leaf (or stack of leaves) needs its own
cond, so that only the leaves in the rare case pay for the exact path. On XLA:CPU each
executed cond costs about 0.1 ms and is a barrier between the reductions before it and
the elementwise pass after it: 17 conds were ~12 % of a Layca step on the 18.4M-parameter
benchmark tree (BENCHMARKS.md). So the per-leaf conds sit inside one outer cond on "any
leaf in the rare case": the common step runs one cond.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["rarely_exact"]


def _keep(operands: Any, fast: Any) -> Any:
  del operands
  return fast


def rarely_exact(
    rare: Sequence[jax.Array],
    exact: Sequence[Callable[[Any, Any], Any]],
    operands: Sequence[Any],
    fast: Sequence[Any],
) -> list[Any]:
  """``[exact[i](operands[i], fast[i]) if rare[i] else fast[i] for each i]``.

  Args:
    rare: one boolean scalar per item: does it need its exact path?
    exact: per item, ``(operands, fast) -> value`` with the structure of ``fast[i]``.
    operands: per item, a pytree of arrays that ``exact[i]`` reads.
    fast: per item, the common-case value (a pytree of arrays).

  Returns:
    The list of values, in order.
  """

  def each(operands, fast):
    return [
        jax.lax.cond(r, e, _keep, o, f)
        for r, e, o, f in zip(rare, exact, operands, fast)
    ]

  operands, fast = list(operands), list(fast)
  if len(fast) <= 1:
    return each(operands, fast)
  return jax.lax.cond(jnp.any(jnp.stack(list(rare))), each, _keep, operands, fast)
