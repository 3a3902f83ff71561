"""How fast can XLA reduce a layer? The per-layer sums Layca needs, written several ways.

    python -m benchmarks.reductions            # vgg18m, ~2 minutes on 2 CPU cores
    python -m benchmarks.reductions --quick    # tiny tree, seconds

Layca needs ``w.w``, ``s.w`` and ``s.s`` for every layer. Read once, that is two arrays per
layer; XLA:CPU computes each sum as its own kernel, which reads four (``w``; ``s`` and
``w``; ``s``). This script times, side by side with an ``optax.sgd(momentum=0.9)`` step
(same harness, same rounds, median of same-round ratios), the ways we tried to get one
pass. Everything is jitted over the kernels of the tree, nothing donated; every candidate
returns the same three numbers per layer (checked before timing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import run, trees


def _kernels(tree) -> list[jax.Array]:
  return [x for x in jax.tree.leaves(tree) if x.ndim >= 2]


def three_sums(w, s):
  """Three ``jnp.sum`` of products: what ``layca`` does."""
  return jnp.stack([jnp.sum(w * w), jnp.sum(s * w), jnp.sum(s * s)])


def variadic_reduce(w, s):
  """One ``lax.reduce`` over three operands (a single HLO reduce with three outputs)."""
  zero = jnp.float32(0)
  sums = jax.lax.reduce(
      (w * w, s * w, s * s), (zero, zero, zero),
      lambda x, y: tuple(a + b for a, b in zip(x, y)), tuple(range(w.ndim)),
  )
  return jnp.stack(sums)


def stacked_sum(w, s):
  """One sum over a stack of the three products (a reduce of a concatenation)."""
  return jnp.sum(jnp.stack([w * w, s * w, s * s]), axis=tuple(range(1, w.ndim + 1)))


def gram_matmul(w, s):
  """The 2x2 Gram matrix of ``[w; s]``: one matmul over a stacked copy."""
  a = jnp.stack([w.ravel(), s.ravel()])
  g = jnp.dot(a, a.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.stack([g[0, 0], g[0, 1], g[1, 1]])


def one_sum(w, s):
  """Only ``s.w``: one kernel reading both arrays once (the one-pass ideal's traffic)."""
  return jnp.sum(s * w)[None]


def computed_input(w, s):
  """``s.s`` of an array computed in the same jit (``0.9 s + w``, as a momentum base's
  output would be): XLA fuses the producer into the reduction or materialises it."""
  m = 0.9 * s + w
  return jnp.sum(m * m)[None]


FORMS: dict[str, Callable] = {
    "three_sums": three_sums,
    "variadic_reduce": variadic_reduce,
    "stacked_sum": stacked_sum,
    "gram_matmul": gram_matmul,
    "one_sum": one_sum,
    "computed_input": computed_input,
}


def _over_tree(form):
  return lambda p, g: [form(w, s) for w, s in zip(_kernels(p), _kernels(g))]


def check_forms(params, grads) -> None:
  """The first four forms must agree (else their timings compare different things).

  Up to float32 summation order: 1e-2 of ``|w| |s|``, the scale of every sum (``s.w``
  of unrelated arrays is a small difference of large terms). The variadic reduce is the
  least accurate: ~1.5e-3 relative on the 2.4M-element layers (its summation order).
  """
  expected = [np.asarray(x) for x in jax.jit(_over_tree(three_sums))(params, grads)]
  for name in ("variadic_reduce", "stacked_sum", "gram_matmul"):
    got = jax.jit(_over_tree(FORMS[name]))(params, grads)
    for e, g in zip(expected, got):
      scale = np.array([e[0], np.sqrt(e[0] * e[2]), e[2]])
      np.testing.assert_array_less(np.abs(np.asarray(g) - e), 1e-2 * scale + 1e-30,
                                   err_msg=name)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny tree, two rounds")
  args = parser.parse_args(argv)
  settings = run.QUICK if args.quick else run.FULL
  params_np = trees.TREES["vgg18m"][1 if args.quick else 0]()
  params = jax.tree.map(jnp.array, params_np)
  grads = jax.tree.map(jnp.array, trees.random_like(params_np))
  check_forms(params, grads)
  candidates: list[run.Candidate] = [run.OptimizerCandidate(
      run.REFERENCE, run.OPTIMIZERS[run.REFERENCE](), params_np, [grads], settings
  )]
  for name, form in FORMS.items():
    candidates.append(run.FunctionCandidate(name, _over_tree(form), (params, grads), settings))
  timing = run.time_alternating(candidates, run.REFERENCE, settings, settings.rounds)
  n = trees.count_params(params_np)
  print(f"vgg18m{' (quick)' if args.quick else ''}: {n:,} params; the kernels' sums, "
        "timed against one sgd_momentum step")
  print(f"  {'form':18s} {'ms':>8s} {'x sgd_mom':>10s} {'(q1-q3)':>13s}")
  for c in candidates:
    t = timing[c.name]
    print(f"  {c.name:18s} {t['step_ms']:8.2f} {t['ratio']:10.2f} "
          f"({t['ratio_q1']:.2f}-{t['ratio_q3']:.2f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
