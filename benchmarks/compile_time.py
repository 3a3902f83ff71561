"""Where Layca's compile time goes on a tree of many layers, part by part.

    python -m benchmarks.compile_time              # transformer_1000's kernels, ~3 minutes
    python -m benchmarks.compile_time --quick      # a tiny tree, seconds

The literal core compiles every layer's kernels on their own (BENCHMARKS.md: 22-32 s for
the 1,000-leaf tree on XLA:CPU, 44 s for the first literal core, against 6.5 s for the
previous core, which grouped same-shaped layers). This script compiles, over the layer
kernels of a tree (``ndim >= 2``, nothing else), the step's parts and the alternatives,
each a fresh ``jax.jit(...).lower().compile()`` (median of ``--repeats``), and counts the
fusions (kernels) in XLA's optimised program:

- ``sgd_momentum``: ``m' = 0.9 m + s``, ``w' = w - 0.1 m'`` (the reference);
- ``three_sums``: ``w.w``, ``s.w``, ``s.s`` per layer and nothing else;
- ``one_pass``: Algorithm 1 per layer from the one-pass sums (``_layca._from_sums`` and
  ``_layca._rotate``), the sums kept with size-1 axes as the core keeps them: the step
  without the nearly-parallel guard;
- ``one_pass_scalar_sums``: the same with each layer's sums reduced to scalars (faster to
  compile, slower to run on vgg18m: ``_numerics.sum_of_products``, so not adopted);
- ``one_pass_traced_multipliers``: the alpha multipliers computed in the step and read back
  per layer, as before 53920b2 for every alpha (now only for an injected, traced one);
- ``guarded``: the one-pass step with ``_layca.tangent_parts`` (its one ``lax.cond`` for
  the tree): what ``layca`` compiles;
- ``stacked_coefficients``: the one-pass step with the per-layer scalar arithmetic done
  once on vectors of all layers' sums, each layer's update reading its three coefficients
  back (fewer kernels; the question is whether XLA compiles that faster).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from benchmarks import trees
from layca_optax import _layca, _plan

# The alternatives round differently: a few float32 ulps of the weights' scale
# (2^-23 each), far below any algorithmic difference (an update is 0.1 of that scale).
EPS_BOUND = 16 * 2.0**-23


def _sgd_momentum(ws, ss, ms, radii, rate):
  new_ms = [0.9 * m + s for m, s in zip(ms, ss)]
  return [w - rate * m for w, m in zip(ws, new_ms)], new_ms


def _all_axes(w):
  """A whole-leaf layer's vector axes: every axis (the core's default ``rotation_axes``)."""
  return tuple(range(w.ndim))


def _three_sums(ws, ss, ms, radii, rate):
  return [_layca._from_sums(s, w, _all_axes(w), None)[:3] for w, s in zip(ws, ss)]


def _step(w, s, t, radius, rate, layer_rate=None):
  radius = jnp.reshape(radius, (1,) * w.ndim)  # as ``LeafPlan.expand`` gives it
  return w + _layca._rotate(s, w, t, radius, rate if layer_rate is None else layer_rate, rate)


def _one_pass(ws, ss, ms, radii, rate):
  return [
      _step(w, s, _layca._from_sums(s, w, _all_axes(w), None), r, rate)
      for w, s, r in zip(ws, ss, radii)
  ]


def _one_pass_scalar_sums(ws, ss, ms, radii, rate):
  """``one_pass`` with each layer's sums reduced to scalars (``axes=None``)."""
  return [
      w + _layca._rotate(s, w, _layca._from_sums(s, w, None, None), r, rate, rate)
      for w, s, r in zip(ws, ss, radii)
  ]


def _one_pass_traced_multipliers(ws, ss, ms, radii, rate):
  """``one_pass`` with rho_l = m_l rho, ``m`` computed in the step (alpha = 0), as before
  53920b2 for every alpha (now only for an injected, traced one)."""
  m = _plan.traced_multipliers(len(ws), 0.0, 5.0)
  return [
      _step(w, s, _layca._from_sums(s, w, _all_axes(w), None), r, rate, m[i] * rate)
      for i, (w, s, r) in enumerate(zip(ws, ss, radii))
  ]


def _guarded(ws, ss, ms, radii, rate):
  tangents = _layca.tangent_parts(ss, ws, [_all_axes(w) for w in ws])
  return [_step(w, s, t, r, rate) for w, s, t, r in zip(ws, ss, tangents, radii)]


def _stacked_coefficients(ws, ss, ms, radii, rate):
  sums = [_layca._from_sums(s, w, None, None) for w, s in zip(ws, ss)]
  t = _layca.Tangent(*[jnp.stack(field) for field in zip(*sums)])
  # _rotate's coefficients of u = a w - b (s - k w), for all layers at once, read off
  # its update line: s = 1, w = 0 gives -b; s = 0, w = 1 gives a + b k (k = t.k where
  # b != 0, and k does not matter where b = 0).
  ones, zeros = jnp.ones_like(t.ww), jnp.zeros_like(t.ww)
  radius = jnp.stack(radii)
  b = -_layca._rotate(ones, zeros, t, radius, rate, rate)
  a = _layca._rotate(zeros, ones, t, radius, rate, rate) - b * t.k
  k = t.k
  return [w + (a[i] * w - b[i] * (s - k[i] * w)) for i, (w, s) in enumerate(zip(ws, ss))]


PARTS: dict[str, Callable] = {
    "sgd_momentum": _sgd_momentum,
    "three_sums": _three_sums,
    "one_pass": _one_pass,
    "one_pass_scalar_sums": _one_pass_scalar_sums,
    "one_pass_traced_multipliers": _one_pass_traced_multipliers,
    "guarded": _guarded,
    "stacked_coefficients": _stacked_coefficients,
}


def compile_seconds(fn: Callable, args, repeats: int) -> tuple[float, int]:
  """Median seconds of a fresh trace, lowering and compile; fusions in the optimised program."""
  times, text = [], ""
  for _ in range(repeats):
    fresh = lambda *a: fn(*a)  # a new function: no jit cache hit
    start = time.perf_counter()
    compiled = jax.jit(fresh).lower(*args).compile()
    times.append(time.perf_counter() - start)
    text = compiled.as_text()
  return statistics.median(times), len(re.findall(r"\bfusion\(", text))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="a tiny tree, one repeat")
  parser.add_argument("--blocks", type=int, default=83,
                      help="transformer blocks (83: transformer_1000, 500 kernels)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  blocks, repeats = (2, 1) if args.quick else (args.blocks, args.repeats)
  params = trees.transformer(blocks=blocks, dim=8 if args.quick else 64)
  ws = [jnp.asarray(x) for x in jax.tree.leaves(params) if x.ndim >= 2]
  ss = [jnp.asarray(x) for x in jax.tree.leaves(trees.random_like(params, seed=1))
        if x.ndim >= 2]
  ms = [jnp.zeros_like(s) for s in ss]
  # Traced, as in Layca's step (constants would let XLA fold the per-layer arithmetic).
  radii = [jnp.linalg.norm(w) for w in ws]
  rate = jnp.float32(0.1)
  args = (ws, ss, ms, radii, rate)
  expected = jax.jit(_one_pass)(*args)
  alternatives = [name for name in PARTS if name not in ("sgd_momentum", "three_sums")]
  for name in alternatives:  # the same step, checked before timing
    got = jax.jit(PARTS[name])(*args)
    error = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(got, expected))
    scale = max(float(jnp.max(jnp.abs(a))) for a in expected)
    if not error <= EPS_BOUND * scale:
      raise AssertionError(f"{name} differs from one_pass by {error:.3g} (scale {scale:.3g})")
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}: {len(ws)} kernels "
        f"({sum(w.size for w in ws):,} params), compile = trace + lower + compile, "
        f"median of {repeats}")
  reference = None
  for name, fn in PARTS.items():
    seconds, fusions = compile_seconds(fn, args, repeats)
    reference = reference or seconds
    print(f"  {name:<28} {seconds:7.2f} s  x{seconds / reference:5.1f}  "
          f"{fusions / len(ws):4.1f} fusions per kernel", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
