"""The benchmark harness: optimizer step time, compile time and state size, side by side.

    python -m benchmarks.run            # the full suite (about 10 minutes on 2 CPU cores)
    python -m benchmarks.run --quick    # tiny trees, a few rounds: seconds

What is timed, for each optimizer: a jitted ``step(params, opt_state, grads)`` that runs
``tx.update`` and ``optax.apply_updates``, with ``donate_argnums=(0, 1)``, over gradients
that cycle through 4 random sets (the protocol of ``shared/bench/accelerator_step.py``: a
fixed gradient would turn every layer parallel to it, Layca's rare case). Candidates are
timed in alternating rounds (A B C A B C ...), each round a batch of calls after a warm-up,
and every figure is the median over rounds of (candidate time / ``optax.sgd(momentum=0.9)``
time in the same round), so that the machine's drift cancels. Compile time is
``jax.jit(step).lower(...).compile()``; ``bytes/param`` is XLA's ``cost_analysis()`` of
that executable ("bytes accessed") over the number of params, a figure any machine can
check without a clock; state bytes are summed over ``jax.eval_shape(tx.init, params)``. The
end-to-end part times a full forward, backward and update step of the C10-CNN1 model. The
results print as tables and are written as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import layca_optax as lo
from benchmarks import trees

REFERENCE = "sgd_momentum"
LR = 3.0**-3


def _chain(lr):
  return optax.chain(
      lo.project_orthogonal(),
      lo.normalize_rotation(),
      lo.scale_by_layer_rates(lr),
      lo.project_to_sphere(),
  )


def _layca_floor(lr):
  """The bare one-pass Layca formula, as a lower bound for ``layca``: not for training.

  Per layer (``ndim >= 2``) the three sums ``w.w``, ``s.w``, ``s.s`` and the update
  ``a w + b s``, nothing else: no cancellation guard, schedule, alpha, mask, zero-norm
  handling or initial norms (it keeps each layer's current norm). What ``layca`` costs
  beyond this is the price of those; what this costs beyond ``sgd_momentum`` is the
  backend's (XLA:CPU runs the three sums as three kernels: four reads per layer).
  """
  cos = 1.0 / math.sqrt(1.0 + lr * lr)

  def update(grads, state, params):
    def leaf(s, w):
      if w.ndim < 2:
        return -lr * s
      ww, sw, ss = jnp.sum(w * w), jnp.sum(s * w), jnp.sum(s * s)
      k = sw / ww
      beta = lr * jnp.sqrt(ww) / jnp.sqrt(ss - k * sw)
      return (cos * (1.0 + beta * k) - 1.0) * w - cos * beta * s

    return jax.tree.map(leaf, grads, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


#: name -> optimizer factory. Every one is an optax transform timed through `_make_step`.
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "sgd": lambda: optax.sgd(LR),
    "sgd_momentum": lambda: optax.sgd(LR, momentum=0.9),
    "lars": lambda: optax.lars(LR),
    "adam": lambda: optax.adam(LR),
    "layca": lambda: lo.layca(LR),
    "layca_momentum": lambda: lo.layca(LR, base_optimizer=optax.trace(0.9)),
    "layca_adam": lambda: lo.layca(LR, base_optimizer=optax.scale_by_adam()),
    "composable_chain": lambda: _chain(LR),
    "layca_floor": lambda: _layca_floor(LR),
    # Monitoring: the angle of every layer's step recorded in the optimizer state.
    "sgd_momentum_measure": lambda: optax.chain(
        optax.sgd(LR, momentum=0.9), lo.measure_rotation()
    ),
}



def _stacked_kernels(params):
  """Layers of `trees.transformer_stacked`: the embeddings and the stacked (3-D) kernels.

  The stacked biases and LayerNorm parameters (2-D: blocks x d) are not layers.
  """
  mask = jax.tree.map(lambda x: x.ndim >= 2, params)
  mask["blocks"] = jax.tree.map(lambda x: x.ndim >= 3, params["blocks"])
  return mask


def _stacked_axes(params):
  """Each block's kernel its own layer (`stacked_layer_axes`), other leaves whole."""
  axes = {k: None for k in params}
  axes["blocks"] = lo.stacked_layer_axes(params["blocks"])
  return axes


#: tree name -> extra candidates for that tree only (name -> optimizer factory).
TREE_OPTIMIZERS: dict[str, dict[str, Callable[[], optax.GradientTransformation]]] = {
    "transformer_stacked": {
        "layca_per_block": lambda: lo.layca(
            LR, mask=_stacked_kernels, rotation_axes=_stacked_axes
        ),
        "layca_momentum_per_block": lambda: lo.layca(
            LR, base_optimizer=optax.trace(0.9), mask=_stacked_kernels, rotation_axes=_stacked_axes
        ),
    },
}

#: Measurements that are not optimizer steps, timed in the same rounds:
#: ``cosine_distance(moved, params)`` for two ``moved`` trees (see `_moved`).
MEASUREMENTS = ("cosine_distance", "cosine_distance_step")


@dataclasses.dataclass(frozen=True)
class Settings:
  rounds: int  # alternating rounds per tree
  round_seconds: float  # target duration of one candidate's batch of calls in a round
  max_calls_per_round: int
  warmup_calls: int
  compile_repeats: int
  e2e_batch: int
  e2e_image: int
  e2e_width: int  # channel divisor of the end-to-end model
  e2e_rounds: int


FULL = Settings(
    rounds=15, round_seconds=0.4, max_calls_per_round=50, warmup_calls=3, compile_repeats=1,
    e2e_batch=32, e2e_image=32, e2e_width=1, e2e_rounds=9,
)
QUICK = Settings(
    rounds=2, round_seconds=0.002, max_calls_per_round=16, warmup_calls=1, compile_repeats=1,
    e2e_batch=2, e2e_image=8, e2e_width=8, e2e_rounds=2,
)


# -- candidates ---------------------------------------------------------------------------


def _make_step(tx: optax.GradientTransformation):
  def step(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


def _tree_bytes(tree) -> int:
  return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def bytes_accessed(compiled) -> float | None:
  """XLA's estimate of the bytes an executable reads and writes (``cost_analysis()``)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # a backend without cost analysis
    return None
  if isinstance(cost, (list, tuple)):  # one entry per device program in older jax
    cost = cost[0] if cost else {}
  value = (cost or {}).get("bytes accessed")
  return None if value is None else float(value)


def _compile(fn, args, donate, repeats: int):
  """``jax.jit(fn).lower(*args).compile()``: the executable and the median seconds it took."""
  times, compiled = [], None
  for _ in range(repeats):
    # A fresh Python function each time: no jit cache hit, a real trace + lower + compile.
    fresh = lambda *a, _fn=fn: _fn(*a)
    start = time.perf_counter()
    compiled = jax.jit(fresh, donate_argnums=donate).lower(*args).compile()
    times.append(time.perf_counter() - start)
  return compiled, statistics.median(times)


class Candidate:
  """One thing to time: ``run(n)`` makes ``n`` calls and waits for the result."""

  name: str
  compile_s: float
  state_bytes: int | None
  bytes_accessed: float | None = None

  def run(self, n: int) -> None:
    raise NotImplementedError


class OptimizerCandidate(Candidate):

  def __init__(self, name, tx, params_np, grads, settings: Settings):
    self.name = name
    params = jax.tree.map(jnp.array, params_np)  # its own copy: the buffers get donated
    state = tx.init(params)
    step = _make_step(tx)
    self.state_bytes = _tree_bytes(jax.eval_shape(tx.init, params))
    self._step, self.compile_s = _compile(
        step, (params, state, grads[0]), (0, 1), settings.compile_repeats
    )
    self.bytes_accessed = bytes_accessed(self._step)
    self._params, self._state, self._grads = params, state, grads
    self._calls = 0

  def run(self, n: int) -> None:
    params, state = self._params, self._state
    for _ in range(n):  # the gradients cycle through their sets
      params, state = self._step(params, state, self._grads[self._calls % len(self._grads)])
      self._calls += 1
    jax.block_until_ready((params, state))
    self._params, self._state = params, state


class FunctionCandidate(Candidate):
  """A jitted function of fixed arguments, nothing donated (e.g. ``cosine_distance``)."""

  def __init__(self, name, fn, args, settings: Settings):
    self.name = name
    self.state_bytes = None
    self._fn, self.compile_s = _compile(fn, args, (), settings.compile_repeats)
    self.bytes_accessed = bytes_accessed(self._fn)
    self._args = args

  def run(self, n: int) -> None:
    out = None
    for _ in range(n):
      out = self._fn(*self._args)
    jax.block_until_ready(out)


def _moved(name, params, grads):
  """The tree that ``cosine_distance`` compares with ``params`` in measurement ``name``.

  ``cosine_distance``: every leaf scaled by 1.01 and shifted by 0.001, a change mostly of
  norm (the slow, exact path of ``cosine_distance``); ``cosine_distance_step``: params
  after a gradient-like step ``params - 0.1 * grads``, a change mostly of direction, as
  between training checkpoints (the one-pass path).
  """
  if name == "cosine_distance":
    return jax.tree.map(lambda x: x * 1.01 + 0.001, params)
  return jax.tree.map(lambda x, g: x - 0.1 * g, params, grads)


def _cosine_distance_candidate(name, params_np, grads, settings):
  params = jax.tree.map(jnp.array, params_np)
  moved = _moved(name, params, grads[0])
  return FunctionCandidate(
      name, lambda p, p0: lo.cosine_distance(p, p0), (moved, params), settings
  )


# -- timing -------------------------------------------------------------------------------


def time_alternating(
    candidates: list[Candidate], reference: str, settings: Settings, rounds: int
) -> dict[str, dict[str, float]]:
  """Median seconds per call and median ratio to ``reference`` over alternating rounds."""
  for c in candidates:
    c.run(settings.warmup_calls)
  ref = next(c for c in candidates if c.name == reference)
  start = time.perf_counter()
  ref.run(1)
  per_call = max(time.perf_counter() - start, 1e-6)
  calls = max(1, min(settings.max_calls_per_round, round(settings.round_seconds / per_call)))
  seconds: dict[str, list[float]] = {c.name: [] for c in candidates}
  for r in range(rounds):
    # Rotate the order each round so that no candidate always follows the same one.
    order = candidates[r % len(candidates):] + candidates[:r % len(candidates)]
    for c in order:
      start = time.perf_counter()
      c.run(calls)
      seconds[c.name].append((time.perf_counter() - start) / calls)
  out = {}
  for c in candidates:
    ratios = [t / t_ref for t, t_ref in zip(seconds[c.name], seconds[reference])]
    # Inclusive quartiles stay within the measured ratios (the default, exclusive, method
    # extrapolates: with the 2 rounds of --quick, q1 can come out negative).
    q1, _, q3 = (
        statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1
        else ratios * 3
    )
    out[c.name] = {
        "seconds": seconds[c.name],  # per round, for ratios to other candidates
        "step_ms": 1e3 * statistics.median(seconds[c.name]),
        "ratio": statistics.median(ratios),
        "ratio_q1": q1,
        "ratio_q3": q3,
    }
  out["_calls_per_round"] = calls
  return out


def bench_tree(
    name: str, params_np, settings: Settings, log, only: list[str] | None = None
) -> dict[str, Any]:
  # Four gradient sets, cycled: no layer ever lines up with "the" gradient.
  grads = [jax.tree.map(jnp.array, trees.random_like(params_np, seed=1 + i)) for i in range(4)]
  wanted = lambda n: only is None or n in only or n == REFERENCE
  candidates: list[Candidate] = []
  for opt_name, factory in {**OPTIMIZERS, **TREE_OPTIMIZERS.get(name, {})}.items():
    if wanted(opt_name):
      log(f"  compiling {opt_name}")
      candidates.append(OptimizerCandidate(opt_name, factory(), params_np, grads, settings))
  for measurement in MEASUREMENTS:
    if wanted(measurement):
      log(f"  compiling {measurement}")
      candidates.append(_cosine_distance_candidate(measurement, params_np, grads, settings))
  log(f"  timing {len(candidates)} candidates x {settings.rounds} rounds")
  timing = time_alternating(candidates, REFERENCE, settings, settings.rounds)
  calls = timing.pop("_calls_per_round")
  ref = next(c for c in candidates if c.name == REFERENCE)
  result = {
      "leaves": trees.count_leaves(params_np),
      "params": trees.count_params(params_np),
      "param_bytes": 4 * trees.count_params(params_np),
      "calls_per_round": calls,
      "candidates": {},
  }
  for c in candidates:
    entry = dict(timing[c.name])
    entry["compile_s"] = c.compile_s
    entry["compile_ratio"] = c.compile_s / ref.compile_s
    entry["bytes_per_param"] = (
        None if c.bytes_accessed is None else c.bytes_accessed / result["params"]
    )
    entry["state_bytes"] = c.state_bytes
    result["candidates"][c.name] = entry
  result["layca_extra_state_bytes"] = _layca_extra_state(params_np)
  return result


def _layca_extra_state(params_np) -> dict[str, int]:
  """State bytes of layca beyond its base optimizer's, for each base."""
  params = jax.tree.map(jnp.array, params_np)
  out = {}
  for name, base in [("none", None), ("trace", optax.trace(0.9)),
                     ("adam", optax.scale_by_adam())]:
    full = _tree_bytes(jax.eval_shape(lo.layca(LR, base_optimizer=base).init, params))
    base_bytes = 0 if base is None else _tree_bytes(jax.eval_shape(base.init, params))
    out[name] = full - base_bytes
  return out


# -- end to end: the C10-CNN1 model -------------------------------------------------------


def c10_cnn1_loss(params, x, y):
  """C10-CNN1 forward pass: conv -> ReLU -> BatchNorm without scale/offset, 4 stages."""
  h = x
  for stage in range(4):
    for i in range(6):
      k = params[f"stage{stage}_conv{i}"]["kernel"]
      h = jax.lax.conv_general_dilated(
          h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
      h = jax.nn.relu(h)
      mean = jnp.mean(h, axis=(0, 1, 2), keepdims=True)
      var = jnp.var(h, axis=(0, 1, 2), keepdims=True)
      h = (h - mean) * jax.lax.rsqrt(var + 1e-5)
    if stage < 3:
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  h = jnp.mean(h, axis=(1, 2))
  logits = h @ params["dense"]["kernel"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


class TrainStepCandidate(Candidate):

  def __init__(self, name, tx, params_np, x, y, settings: Settings):
    self.name = name
    params = jax.tree.map(jnp.array, params_np)
    state = tx.init(params)

    def step(params, opt_state, x, y):
      grads = jax.grad(c10_cnn1_loss)(params, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    self.state_bytes = _tree_bytes(jax.eval_shape(tx.init, params))
    self._step, self.compile_s = _compile(step, (params, state, x, y), (0, 1), 1)
    self._params, self._state, self._x, self._y = params, state, x, y

  def run(self, n: int) -> None:
    params, state = self._params, self._state
    for _ in range(n):
      params, state = self._step(params, state, self._x, self._y)
    jax.block_until_ready((params, state))
    self._params, self._state = params, state


def bench_end_to_end(settings: Settings, log) -> dict[str, Any]:
  params_np = trees.c10_cnn1(width=settings.e2e_width)
  rng = np.random.default_rng(0)
  shape = (settings.e2e_batch, settings.e2e_image, settings.e2e_image, 3)
  x = jnp.asarray(rng.standard_normal(shape, np.float32))
  y = jnp.asarray(rng.integers(0, 10, settings.e2e_batch))
  names = ["sgd_momentum", "layca", "layca_momentum"]
  candidates = []
  for n in names:
    log(f"  compiling train step with {n}")
    candidates.append(TrainStepCandidate(n, OPTIMIZERS[n](), params_np, x, y, settings))
  log(f"  timing {len(candidates)} train steps x {settings.e2e_rounds} rounds")
  timing = time_alternating(candidates, REFERENCE, settings, settings.e2e_rounds)
  timing.pop("_calls_per_round")
  return {
      "model": "c10_cnn1",
      "batch": list(shape),
      "params": trees.count_params(params_np),
      "candidates": timing,
  }


# -- targets of issue 21 -------------------------------------------------------------------


def ratio_to(tree: dict[str, Any], name: str, other: str) -> float | None:
  """Median over rounds of (``name`` time / ``other`` time), both timed in those rounds."""
  a, b = tree["candidates"].get(name), tree["candidates"].get(other)
  if a is None or b is None:
    return None
  return statistics.median(x / y for x, y in zip(a["seconds"], b["seconds"]))


#: Bytes per float32 parameter of one step, the bandwidth model of issue 21: a pass for
#: the reductions fused with the base's state update, one for the step (read p, g and
#: the state; write p and the state).
MODEL_BYTES = {"sgd_momentum": 20, "layca": 20, "layca_momentum": 28, "adam": 28,
               "layca_adam": 40}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
  """Issue 21's targets, on whatever backend ran: set for a GPU, reported everywhere."""

  def row(name, measured, op, threshold):
    met = measured is not None and (
        measured <= threshold if op == "<=" else measured >= threshold
    )
    return {"target": name, "measured": measured, "op": op, "threshold": threshold,
            "met": bool(met)}

  rows = []
  for tree_name, t in results["trees"].items():
    c = t["candidates"]
    if "layca" in c:
      rows.append(row(f"{tree_name}: layca / sgd_momentum step", c["layca"]["ratio"],
                      "<=", 1.1))
    if "layca_momentum" in c:
      rows.append(row(f"{tree_name}: layca(trace) / sgd_momentum step",
                      c["layca_momentum"]["ratio"], "<=", 1.5))
    adam_ratio = ratio_to(t, "layca_adam", "adam")
    if adam_ratio is not None:
      rows.append(row(f"{tree_name}: layca(scale_by_adam) / adam step", adam_ratio,
                      "<=", 1.5))
    if tree_name in ("blocks288", "blocks302m") and "layca" in c:
      rows.append(row(f"{tree_name}: layca / sgd_momentum compile",
                      c["layca"]["compile_ratio"], "<=", 3.0))
  return rows


# -- report -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
  model = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {
      "cpu": model,
      "cores": os.cpu_count(),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
      "optax": optax.__version__,
      "devices": [str(d) for d in jax.devices()],
  }


def _jaxlib_version():
  try:
    import jaxlib
    return jaxlib.__version__
  except Exception:
    return None


def format_report(results: dict[str, Any]) -> str:
  lines = []
  for tree_name, t in results["trees"].items():
    lines.append(
        f"\n{tree_name}: {t['params']:,} params in {t['leaves']} leaves "
        f"({t['param_bytes'] / 2**20:.1f} MiB float32)"
    )
    lines.append(
        f"  {'candidate':<26}{'step ms':>10}{'x sgd_mom':>11}{'(q1-q3)':>14}"
        f"{'bytes/param':>13}{'compile s':>11}{'x sgd_mom':>11}{'state MiB':>11}"
    )
    for name, c in t["candidates"].items():
      state = "-" if c["state_bytes"] is None else f"{c['state_bytes'] / 2**20:.2f}"
      per_param = c.get("bytes_per_param")
      per_param = "-" if per_param is None else f"{per_param:.1f}"
      lines.append(
          f"  {name:<26}{c['step_ms']:>10.3f}{c['ratio']:>11.2f}"
          f"{'(' + format(c['ratio_q1'], '.2f') + '-' + format(c['ratio_q3'], '.2f') + ')':>14}"
          f"{per_param:>13}{c['compile_s']:>11.3f}{c['compile_ratio']:>11.2f}{state:>11}"
      )
    lines.append(f"  layca state beyond its base (bytes): {t['layca_extra_state_bytes']}")
  e2e = results.get("end_to_end", {"model": None, "batch": None, "candidates": {}})
  lines.append(f"\nend to end: {e2e['model']} train step, batch {e2e['batch']}")
  for name, c in e2e["candidates"].items():
    lines.append(f"  {name:<18}{c['step_ms']:>10.2f} ms{c['ratio']:>8.3f} x sgd_momentum")
  lines.append("\ntargets:")
  for t in results["targets"]:
    lines.append(
        f"  [{'met' if t['met'] else 'NOT met':>7}] {t['target']}: "
        f"{t['measured'] if t['measured'] is None else format(t['measured'], '.3g')} "
        f"(target {t['op']} {t['threshold']})"
    )
  return "\n".join(lines)


def run(
    quick: bool = False,
    tree_names: list[str] | None = None,
    log=print,
    only: list[str] | None = None,
    end_to_end: bool = True,
) -> dict[str, Any]:
  settings = QUICK if quick else FULL
  tree_names = tree_names or list(trees.TREES)
  results: dict[str, Any] = {
      "mode": "quick" if quick else "full",
      "machine": machine_info(),
      "settings": dataclasses.asdict(settings),
      "reference": REFERENCE,
      "learning_rate": LR,
      "trees": {},
  }
  start = time.perf_counter()
  for name in tree_names:
    full_builder, quick_builder = {**trees.TREES, **trees.ACCELERATOR_TREES}[name]
    log(f"tree {name}")
    results["trees"][name] = bench_tree(
        name, (quick_builder if quick else full_builder)(), settings, log, only
    )
  if end_to_end:
    log("end to end")
    results["end_to_end"] = bench_end_to_end(settings, log)
  results["targets"] = targets(results)
  results["wall_seconds"] = time.perf_counter() - start
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny trees, few rounds")
  parser.add_argument(
      "--trees", nargs="*", choices=[*trees.TREES, *trees.ACCELERATOR_TREES], default=None,
      help="default: every CPU-sized tree (the accelerator-sized ones only when named)",
  )
  parser.add_argument("--only", nargs="*", default=None,
                      help="candidates to time (sgd_momentum, the reference, always is)")
  parser.add_argument("--no-end-to-end", action="store_true")
  parser.add_argument("--out", default=None,
                      help="JSON path (default benchmarks/results[_quick].json)")
  args = parser.parse_args(argv)
  out = args.out or os.path.join(
      os.path.dirname(__file__), "results_quick.json" if args.quick else "results.json"
  )
  log = lambda msg: print(msg, file=sys.stderr, flush=True)
  results = run(quick=args.quick, tree_names=args.trees, log=log, only=args.only,
                end_to_end=not args.no_end_to_end)
  print(format_report(results))
  with open(out, "w") as f:
    json.dump(results, f, indent=1, allow_nan=False)
  print(f"\nwrote {out} ({results['wall_seconds']:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
