"""What Layca's one guard costs: the nearly-parallel second pass behind one ``lax.cond``.

    python -m benchmarks.guard [--quick] [--trees vgg18m transformer_1000]

Times, side by side in alternating rounds (``benchmarks.run``'s protocol), ``layca`` as it
is and ``layca`` with ``_layca.tangent_parts`` reduced to its one-pass sums (no cond, no
second pass: wrong for a step nearly parallel to the weights, so not an option, only the
measure of what the guard costs), next to ``optax.sgd(momentum=0.9)``: step time, compile
time and XLA's bytes accessed per parameter.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import optax

import layca_optax as lo
from benchmarks import run, trees
from layca_optax import _layca, _numerics


def _one_pass_only(xs, ws, vector_axes, axis_name=None):
  """``tangent_parts`` without its guard: the sums' ``||p||^2`` everywhere."""
  return [
      _layca._from_sums(_numerics.as_f32(x), _numerics.as_f32(w), axes, axis_name)
      for x, w, axes in zip(xs, ws, vector_axes)
  ]


class _Unguarded(run.OptimizerCandidate):
  """``layca`` traced and compiled with the one-pass ``tangent_parts``."""

  def __init__(self, *args, **kwargs):
    guarded = _layca.tangent_parts
    _layca.tangent_parts = _one_pass_only
    try:
      super().__init__(*args, **kwargs)
    finally:
      _layca.tangent_parts = guarded


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--trees", nargs="*", default=["vgg18m", "blocks288", "transformer_1000"],
                      choices=list(trees.TREES))
  args = parser.parse_args(argv)
  settings = run.QUICK if args.quick else run.FULL
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
  for name in args.trees:
    full, quick = trees.TREES[name]
    params_np = (quick if args.quick else full)()
    grads = [jax.tree.map(jnp.array, trees.random_like(params_np, seed=1 + i)) for i in range(4)]
    candidates = [
        run.OptimizerCandidate(run.REFERENCE, optax.sgd(run.LR, momentum=0.9), params_np,
                               grads, settings),
        run.OptimizerCandidate("layca", lo.layca(run.LR), params_np, grads, settings),
        _Unguarded("layca_without_guard", lo.layca(run.LR), params_np, grads, settings),
    ]
    timing = run.time_alternating(candidates, run.REFERENCE, settings, settings.rounds)
    n = trees.count_params(params_np)
    print(f"\n{name}: {n:,} params in {trees.count_leaves(params_np)} leaves")
    for c in candidates:
      t = timing[c.name]
      print(f"  {c.name:<22} step x sgd_mom {t['ratio']:5.2f} ({t['ratio_q1']:.2f}-"
            f"{t['ratio_q3']:.2f})  compile {c.compile_s:6.2f} s  bytes/param "
            f"{c.bytes_accessed / n:5.1f}")
    guarded = timing["layca"]["seconds"]
    bare = timing["layca_without_guard"]["seconds"]
    ratios = sorted(a / b for a, b in zip(guarded, bare))
    print(f"  guard's cost: step x{ratios[len(ratios) // 2]:.3f} (median of same-round "
          f"ratios), compile {candidates[1].compile_s - candidates[2].compile_s:+.2f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
