"""Layca beyond CNNs: a byte-level transformer language model, per-block Layca against AdamW.

Trains :class:`examples.transformer_model.TransformerLM` (4 pre-LayerNorm blocks of width
64, stacked with ``nnx.vmap``/``nnx.scan``) on the Python standard library's own source
files (one file in ten held out; nothing to download) or on any ``--text FILE``, from
one initialisation and on the same batches, with:

* ``AdamW``: ``optax.adamw`` (peak rate 3e-2, b2 = 0.99), weight decay 0.1 on the layers
  (kernels and embeddings, not the LayerNorm leaves); the usual transformer baseline.
* ``Layca-Adam``: ``layca_optax.layca(rho, base_optimizer=optax.scale_by_adam(b2=0.99))``,
  rho = 3^-3, with ``rotation_axes`` from ``stacked_layer_axes`` on the blocks: each
  block's ``q``, ``k``, ``v``, ``out``, ``mlp_in``, ``mlp_out`` kernel is its own layer
  (plus the embeddings and the head: 27 layers at the defaults), and ``mask=layer_mask``
  says which leaves are layers (see ``transformer_model``'s docstring: kernels and
  embeddings yes, LayerNorm scales and biases no; they take Adam's step at rate rho).
* ``Layca-SGDm``: the same with an SGD-momentum base (``optax.trace(0.9)``), rho = 3^-3.
* optionally ``Layca-Adam per neuron`` (``--runs ...,layca-adam-neuron``): one vector per
  output unit of every layer instead of one per block kernel.

Every rate follows the same schedule: a linear warm-up from 0 over the first 5 % of the
steps, then a cosine decay to a tenth of the peak. Each rate option takes a comma list
(``--adamw-lr 1e-3,3e-3``) to compare several in one run. Every optimizer ends with
``layca_optax.measure_rotation`` (per block), so the per-step rotation of every block
kernel is recorded for each run; tokens per second include that monitor.

Outputs in ``--out`` (default ``out/transformer``): ``results.json``, ``summary.md``,
``block_rotation.png`` (the layer rotation curves: one panel per kernel kind, one line per
block, one row per run), ``block_rotation_rates.png`` (each block kernel's rotation per
step, smoothed) and ``training_curves.png`` (training and validation bits per byte).

Run from the repository root::

  python -m examples.transformer          # 3 runs x 600 steps, ~4 min each on 2 busy cores
  python -m examples.transformer --runs adamw --adamw-lr 1e-3,3e-3,1e-2 --steps 300
  python -m examples.transformer --d-model 256 --blocks 8 --seq-len 256 --steps 5000

The measured results and the choices behind the defaults are in
``docs/experiments/transformer.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from matplotlib import ticker
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import layca_optax
from examples import data as data_lib
from examples import experiment, plotting, training
from examples import transformer_model as tm

STEPS = 600
BATCH_SIZE = 32
SEQ_LEN = 64
ADAMW_LR = 3e-2  # tuned: 3e-3 / 1e-2 / 3e-2 / 1e-1 at 600 steps (see the docs page)
WEIGHT_DECAY = 0.1
LAYCA_ADAM_LR = 3.0**-3  # tuned: 3^-4 / 3^-3 / 3^-2
LAYCA_SGDM_LR = 3.0**-3  # tuned at 200 steps: 3^-3 / 3^-2
MOMENTUM = 0.9
ADAM_B2 = 0.99
WARMUP_FRACTION = 0.05
FINAL_RATE_FRACTION = 0.1
EVAL_WINDOWS = 256
NUM_EVALS = 10
SMOOTHING = 25  # steps in the moving averages of the figures
PROGRESS_REFRESH_STEPS = 10

#: --runs keyword -> display name.
RUN_NAMES = {
    "adamw": "AdamW",
    "layca-adam": "Layca-Adam",
    "layca-sgdm": "Layca-SGDm",
    "layca-adam-neuron": "Layca-Adam per neuron",
}
DEFAULT_RUNS = ("adamw", "layca-adam", "layca-sgdm")


def run_keywords(text: str) -> tuple[str, ...]:
  """``'adamw,layca-adam'`` -> ``('adamw', 'layca-adam')``, checked against :data:`RUN_NAMES`."""
  words = tuple(w.strip().lower() for w in text.split(",") if w.strip())
  unknown = [w for w in words if w not in RUN_NAMES]
  if unknown or not words:
    raise argparse.ArgumentTypeError(
        f"unknown run {unknown or text!r}; choose among {', '.join(RUN_NAMES)}, e.g. "
        "--runs adamw,layca-adam"
    )
  return words


def warmup_cosine(peak: float, steps: int, warmup_fraction: float = WARMUP_FRACTION):
  r"""Linear warm-up from 0 to ``peak`` over ``warmup_fraction`` of the steps, then cosine
  decay to ``peak / 10`` at ``steps``.

  Examples:
    >>> from examples.transformer import warmup_cosine
    >>> schedule = warmup_cosine(1.0, steps=100)
    >>> [round(float(schedule(s)), 3) for s in (0, 5, 100)]
    [0.0, 1.0, 0.1]
  """
  warmup = max(1, round(warmup_fraction * steps))
  return optax.warmup_cosine_decay_schedule(
      0.0, peak, warmup, max(steps, warmup + 1), end_value=FINAL_RATE_FRACTION * peak
  )


def make_optimizer(
    kind: str, rate: float, steps: int, *, weight_decay: float = WEIGHT_DECAY,
    momentum: float = MOMENTUM, alpha: float = 0.0, layer_order: Sequence[str] | None = None,
) -> optax.GradientTransformation:
  """The optimizer of one run (``kind`` a key of :data:`RUN_NAMES`), on the params dict."""
  schedule = warmup_cosine(rate, steps)
  if kind == "adamw":
    return optax.adamw(schedule, b2=ADAM_B2, weight_decay=weight_decay, mask=tm.layer_mask)
  base = optax.trace(momentum) if kind == "layca-sgdm" else optax.scale_by_adam(b2=ADAM_B2)
  axes = tm.per_neuron_axes if kind == "layca-adam-neuron" else tm.per_block_axes
  return layca_optax.layca(
      schedule, base_optimizer=base, mask=tm.layer_mask, rotation_axes=axes, alpha=alpha,
      layer_order=layer_order,
  )


@dataclasses.dataclass
class LMHistory:
  """What one language-model run measured.

  Attributes:
    train_bpb: every step's training loss in bits per byte.
    eval_steps: the steps after which the validation loss and the curves were recorded
      (0 = the initialisation).
    val_bpb: validation bits per byte at each of ``eval_steps``.
    curve_names: one per layer vector, depth order: ``'tok/embedding'``,
      ``'blocks/q/kernel[0]'`` ... ``'blocks/mlp_out/kernel[3]'``, ``'head/kernel'``.
    cosine_distances: per ``eval_steps`` entry, one value per curve.
    rotation_rates: ``{curve: every step's rotation angle, radians}``.
    initial_norms, final_norms: ``{curve: norm}`` at step 0 and at the end.
    tokens_per_second: training throughput, steps after the first (compilation) only.
    compile_time, wall_time: seconds (the first step; the whole run, evaluation included).
  """

  train_bpb: list[float] = dataclasses.field(default_factory=list)
  eval_steps: list[int] = dataclasses.field(default_factory=list)
  val_bpb: list[float] = dataclasses.field(default_factory=list)
  curve_names: list[str] = dataclasses.field(default_factory=list)
  cosine_distances: list[list[float]] = dataclasses.field(default_factory=list)
  rotation_rates: dict[str, list[float]] = dataclasses.field(default_factory=dict)
  initial_norms: dict[str, float] = dataclasses.field(default_factory=dict)
  final_norms: dict[str, float] = dataclasses.field(default_factory=dict)
  tokens_per_second: float = float("nan")
  compile_time: float = 0.0
  wall_time: float = 0.0

  @property
  def final_val_bpb(self) -> float:
    return self.val_bpb[-1]

  def final_train_bpb(self, last: int = 50) -> float:
    """Mean training bits per byte over the ``last`` steps."""
    return float(np.mean(self.train_bpb[-last:]))

  def final_cosine_distances(self) -> dict[str, float]:
    return dict(zip(self.curve_names, self.cosine_distances[-1]))

  def curves(self) -> layca_optax.LayerRotationCurves:
    """The recorded layer rotation curves (x in steps)."""
    columns = zip(*self.cosine_distances)
    return layca_optax.LayerRotationCurves.from_values(
        self.eval_steps, dict(zip(self.curve_names, columns))
    )

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "final_val_bpb": self.final_val_bpb}


def bits_per_byte(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean cross-entropy in bits: ``-log2 p(target)`` averaged over the bytes."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return jnp.mean(losses) / math.log(2.0)


def curve_norms(params: dict[str, Any], names: Sequence[str]) -> dict[str, float]:
  """Each curve's vector norm (per block for ``blocks/...[i]``), float64 on the host."""
  leaves = training.by_path(params)
  norms = {}
  for name in names:
    path, index = name.split("[")[0], tm.block_index(name)
    leaf = np.asarray(jax.device_get(leaves[path]), np.float64)
    norms[name] = float(np.linalg.norm(leaf if index is None else leaf[index]))
  return norms


def rate_columns(records: Sequence[Any]) -> dict[str, list[float]]:
  """Stacked ``rotation_rates`` pytrees -> ``{'blocks/q/kernel[i]': [per step]}``."""
  stacked = jax.device_get(jax.tree.map(lambda *a: jnp.stack(a), *records))
  columns = {}
  for path, series in training.by_path(stacked).items():
    if series is None:
      continue
    series = np.asarray(series)
    if series.ndim == 1:
      columns[path] = series.tolist()
    else:
      for i in range(series.shape[1]):
        columns[f"{path}[{i}]"] = series[:, i].tolist()
  return columns


def train_lm(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    text: data_lib.TextData,
    *,
    steps: int,
    batch_size: int = BATCH_SIZE,
    seq_len: int = SEQ_LEN,
    seed: int = 0,
    eval_every: int | None = None,
    eval_windows: int = EVAL_WINDOWS,
    progress: bool = True,
    description: str | None = None,
) -> LMHistory:
  """Trains a copy of ``model``'s params with ``tx`` on random windows of ``text.train``.

  The step is a jitted pure function of the params dict (``transformer_model.split_params``)
  and the optimizer state. Every ``eval_every`` steps (and at 0 and the end): validation
  bits per byte on ``eval_windows`` fixed windows spread over ``text.test``, and each
  layer vector's cosine distance to its initialisation (``LayerRotationCurves`` with
  ``per_block_axes``). ``measure_rotation`` (per block) is chained after ``tx``.
  """
  if steps < 1:
    raise ValueError(f"steps must be at least 1, got {steps}.")
  start = time.perf_counter()
  graphdef, params = tm.split_params(model)
  apply = tm.apply_fn(graphdef)
  eval_every = eval_every or max(1, steps // NUM_EVALS)
  tx = optax.chain(
      tx, layca_optax.measure_rotation(mask=tm.layer_mask, rotation_axes=tm.per_block_axes)
  )
  opt_state = tx.init(params)
  order = layca_optax.forward_order(apply, params, jnp.zeros((1, seq_len), jnp.int32))
  curves = layca_optax.LayerRotationCurves(
      params, layer_order=order, mask=tm.layer_mask, rotation_axes=tm.per_block_axes
  )
  history = LMHistory(curve_names=curves.paths)
  history.initial_norms = curve_norms(params, curves.paths)

  def loss_fn(params, windows):
    return bits_per_byte(apply(params, windows[:, :-1]), windows[:, 1:])

  @jax.jit
  def train_step(params, opt_state, windows):
    loss, grads = jax.value_and_grad(loss_fn)(params, windows)
    updates, opt_state = tx.update(grads, opt_state, params)
    angles = layca_optax.rotation_rates(opt_state)
    return optax.apply_updates(params, updates), opt_state, loss, angles

  eval_loss = jax.jit(loss_fn)
  held_out = data_lib.spread_windows(
      text.test, -(-eval_windows // batch_size) * batch_size, seq_len
  )

  def evaluate(params) -> float:
    chunks = [held_out[i : i + batch_size] for i in range(0, len(held_out), batch_size)]
    return float(np.mean([float(eval_loss(params, chunk)) for chunk in chunks]))

  def record(step: int, params) -> None:
    history.eval_steps.append(step)
    history.val_bpb.append(evaluate(params))
    curves.record(step, params)
    history.cosine_distances.append([curves.values[p][-1] for p in curves.paths])

  record(0, params)
  rng = np.random.default_rng(seed)
  losses, angles, step_time = [], [], 0.0
  with tqdm(total=steps, desc=description, disable=not progress, leave=True) as bar:
    segment_start = time.perf_counter()
    for step in range(1, steps + 1):
      windows = data_lib.random_windows(text.train, batch_size, seq_len, rng)
      params, opt_state, loss, rates = train_step(params, opt_state, windows)
      losses.append(loss)
      angles.append(rates)
      if step == 1:
        jax.block_until_ready(loss)
        history.compile_time = time.perf_counter() - segment_start
        segment_start = time.perf_counter()
      bar.update()
      if progress and step % PROGRESS_REFRESH_STEPS == 0:
        bar.set_postfix(bpb=f"{float(loss):.3f}")
      if step % eval_every == 0 or step == steps:
        jax.block_until_ready(params)
        step_time += time.perf_counter() - segment_start
        record(step, params)
        bar.set_postfix(bpb=f"{float(loss):.3f}", val_bpb=f"{history.val_bpb[-1]:.3f}")
        segment_start = time.perf_counter()
  history.train_bpb = [float(x) for x in jax.device_get(losses)]
  history.rotation_rates = rate_columns(angles)
  history.final_norms = curve_norms(params, curves.paths)
  if steps > 1 and step_time > 0:
    history.tokens_per_second = (steps - 1) * batch_size * seq_len / step_time
  history.wall_time = time.perf_counter() - start
  return history


# ---------------------------------------------------------------------------------------
# Figures.

PANEL = (2.3, 2.0)  # inches per panel of the per-kind grids


def kind_groups(names: Sequence[str]) -> dict[str, list[str]]:
  """Curve names grouped by kernel kind (``q``... ``mlp_out``, then ``embeddings & head``)."""
  groups: dict[str, list[str]] = {kind: [] for kind in tm.BLOCK_KERNELS}
  groups["embeddings & head"] = []
  for name in names:
    kind = tm.kernel_kind(name)
    groups[kind if kind in groups else "embeddings & head"].append(name)
  return {kind: members for kind, members in groups.items() if members}


def moving_average(values: Sequence[float], window: int = SMOOTHING) -> np.ndarray:
  """Trailing mean over ``window`` values (shorter at the start): same length as ``values``."""
  values = np.asarray(values, np.float64)
  sums = np.cumsum(np.concatenate([[0.0], values]))
  ends = np.arange(1, len(values) + 1)
  starts = np.maximum(0, ends - window)
  return (sums[ends] - sums[starts]) / (ends - starts)


def _grid(runs: Mapping[str, LMHistory]):
  groups = kind_groups(next(iter(runs.values())).curve_names)
  width, height = PANEL
  fig = Figure(
      figsize=(width * len(groups) + 0.8, height * len(runs) + 0.3), layout="constrained"
  )
  axes = fig.subplots(len(runs), len(groups), squeeze=False, sharex=True, sharey=True)
  return fig, axes, groups


def _label_grid(fig, axes, groups, runs) -> None:
  """Kinds as column titles, runs as row labels, one colour bar from the first block."""
  for row, name in zip(axes, runs):
    row[0].set_ylabel(f"{name}\n{row[0].get_ylabel()}", fontsize="small")
    for ax in row[1:]:
      ax.set_ylabel("")
  for ax, kind in zip(axes[0], groups):
    ax.set_title(kind, fontsize="medium")
  for ax in axes[:-1].ravel():
    ax.set_xlabel("")
  for ax in axes.ravel():
    ax.tick_params(labelsize="x-small")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(3))
  # The last column holds tok, pos, head (its legend); the others one line per block.
  axes[0, -1].legend(fontsize="xx-small", loc="best")
  num_blocks = max(len(m) for k, m in groups.items() if k in tm.BLOCK_KERNELS)
  plotting.add_depth_colour_bar(fig, list(axes.ravel()), num_blocks)
  fig.axes[-1].set_ylabel("first block -> last block")


def save_block_curves_figure(path, runs: Mapping[str, LMHistory]) -> Figure:
  """Layer rotation curves: a row per run, a panel per kernel kind, a line per block.

  Drawn with ``layca_optax.plot_layer_rotation_curves`` (viridis: first block dark). The
  last panel holds the token and position embeddings and the head (in that order). The
  y axis is shared, from 0 to the largest distance (at least 0.05).
  """
  fig, axes, groups = _grid(runs)
  top = 0.05
  for row, history in zip(axes, runs.values()):
    curves = history.curves()
    for ax, members in zip(row, groups.values()):
      subset = layca_optax.LayerRotationCurves.from_values(
          curves.steps, {m: curves.values[m] for m in members}
      )
      layca_optax.plot_layer_rotation_curves(subset, ax, colorbar=False)
      top = max(top, *(max(curves.values[m]) for m in members))
  axes[0, 0].set_ylim(0.0, 1.05 * top)
  _label_grid(fig, axes, groups, runs)
  plotting.save_figure(fig, path)
  return fig


def save_block_rates_figure(path, runs: Mapping[str, LMHistory]) -> Figure:
  """Each block kernel's rotation per step (degrees, log scale, moving average of
  :data:`SMOOTHING` steps): a row per run, a panel per kernel kind, a line per block.

  The shared y axis starts below the smallest rate after the warm-up (the first steps'
  near-zero rates would stretch it over decades).
  """
  fig, axes, groups = _grid(runs)
  bottom = math.inf
  for row, history in zip(axes, runs.values()):
    for ax, members in zip(row, groups.values()):
      rates = {m: moving_average(history.rotation_rates[m]) for m in members}
      num_steps = len(next(iter(rates.values())))
      layca_optax.plot_rotation_rates(
          rates, ax, layer_order=members, steps=range(1, num_steps + 1), log_scale=True,
          colorbar=False,
      )
      after_warmup = min(round(2 * WARMUP_FRACTION * num_steps), num_steps - 1)
      bottom = min(bottom, *(np.degrees(np.min(r[after_warmup:])) for r in rates.values()))
  if np.isfinite(bottom) and bottom > 0:
    axes[0, 0].set_ylim(bottom=0.5 * bottom)
  _label_grid(fig, axes, groups, runs)
  plotting.save_figure(fig, path)
  return fig


def save_training_curves_figure(path, runs: Mapping[str, LMHistory]) -> Figure:
  """Training bits per byte (moving average) and validation bits per byte, per step."""
  width, height = plotting.PANEL_SIZE
  fig = Figure(figsize=(2 * width, height), layout="constrained")
  train_ax, val_ax = fig.subplots(1, 2)
  for name, history in runs.items():
    steps = np.arange(1, len(history.train_bpb) + 1)
    train_ax.plot(steps, moving_average(history.train_bpb), label=name, linewidth=1.2)
    val_ax.plot(history.eval_steps[1:], history.val_bpb[1:], marker="o", markersize=3,
                label=f"{name}: {history.final_val_bpb:.3f}")
  train_ax.set_ylabel(f"Training bits per byte ({SMOOTHING}-step mean)")
  val_ax.set_ylabel("Validation bits per byte")
  for ax in (train_ax, val_ax):
    ax.set_xlabel("Step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  plotting.save_figure(fig, path)
  return fig


# ---------------------------------------------------------------------------------------
# Summaries.


def block_rotation_spread(history: LMHistory) -> dict[str, Any]:
  """How unevenly the block kernels rotate: mean rotation per step (degrees) of each block
  kernel, and the smallest and largest of them with their ratio."""
  means = {
      name: math.degrees(float(np.mean(history.rotation_rates[name])))
      for name in history.curve_names if tm.block_index(name) is not None
  }
  low, high = min(means, key=means.get), max(means, key=means.get)
  return {
      "mean_degrees_per_step": means, "slowest": low, "fastest": high,
      "max_over_min": means[high] / means[low] if means[low] > 0 else float("inf"),
  }


def kind_table(history: LMHistory, values: Mapping[str, float], fmt: str) -> list[str]:
  """A markdown table of per-block ``values``: a row per kernel kind, a column per block."""
  groups = kind_groups(history.curve_names)
  blocks = max(len(groups[k]) for k in tm.BLOCK_KERNELS if k in groups)
  rows = [
      (kind, *(format(values[m], fmt) for m in groups[kind]))
      for kind in tm.BLOCK_KERNELS if kind in groups
  ]
  return experiment.markdown_table(("kernel", *(f"block {i}" for i in range(blocks))), rows)


def results_rows(histories: Mapping[str, LMHistory]) -> list[tuple]:
  def spread(h):
    finals = [d for n, d in h.final_cosine_distances().items() if tm.block_index(n) is not None]
    return f"{min(finals):.3f} - {max(finals):.3f}"

  return [
      (name, f"{h.final_val_bpb:.3f}", f"{h.final_train_bpb():.3f}",
       f"{h.tokens_per_second:,.0f}", spread(h),
       f"{block_rotation_spread(h)['max_over_min']:.1f}", f"{h.wall_time:.0f}")
      for name, h in histories.items()
  ]


RESULTS_HEADER = (
    "run", "val bits/byte", "train bits/byte (last 50 steps)", "tokens/s",
    "block kernels' final cosine distance (min - max)",
    "block rotation per step, fastest / slowest", "time (s)",
)


def summary_markdown(
    histories: Mapping[str, LMHistory], config: Mapping[str, Any]
) -> str:
  lines = ["# Transformer language model: AdamW and per-block Layca", ""]
  lines += [f"- {key}: `{value}`" for key, value in config.items()]
  lines += ["", *experiment.markdown_table(RESULTS_HEADER, results_rows(histories)), ""]
  for name, history in histories.items():
    spread = block_rotation_spread(history)
    lines += [
        f"## {name}", "",
        "Final cosine distance to the initialisation of each block kernel:", "",
        *kind_table(history, history.final_cosine_distances(), ".3f"), "",
        "Mean rotation per step (degrees):", "",
        *kind_table(history, spread["mean_degrees_per_step"], ".4f"), "",
        "Norm at the end over norm at step 0:", "",
        *kind_table(history, {
            n: history.final_norms[n] / history.initial_norms[n] for n in history.curve_names
        }, ".3f"), "",
    ]
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The command line.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m examples.transformer",
      description="A byte-level transformer language model trained with AdamW and with "
      "per-block Layca, on the Python standard library's source (offline).",
  )
  experiment.add_run_arguments(parser, out="out/transformer", batch_size=BATCH_SIZE)
  data_lib.add_text_arguments(parser)
  parser.add_argument("--steps", type=int, default=STEPS)
  parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
  parser.add_argument("--d-model", type=int, default=64)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--blocks", type=int, default=4)
  parser.add_argument("--mlp-ratio", type=int, default=4)
  parser.add_argument(
      "--runs", type=run_keywords, default=DEFAULT_RUNS,
      help=f"comma list of {', '.join(RUN_NAMES)} (default {','.join(DEFAULT_RUNS)})",
  )
  parser.add_argument(
      "--adamw-lr", type=experiment.rate_list, default=(ADAMW_LR,),
      help=f"AdamW's peak rate(s), comma list (default {ADAMW_LR:g})",
  )
  parser.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
  parser.add_argument(
      "--layca-adam-lr", type=experiment.rate_list, default=(LAYCA_ADAM_LR,),
      help="Layca-Adam's peak rho (also per neuron), e.g. 3^-3 (default)",
  )
  parser.add_argument(
      "--layca-sgdm-lr", type=experiment.rate_list, default=(LAYCA_SGDM_LR,),
      help="Layca-SGDm's peak rho, e.g. 3^-3 (default)",
  )
  parser.add_argument("--momentum", type=float, default=MOMENTUM)
  parser.add_argument("--alpha", type=float, default=0.0, help="Layca's layer-wise alpha")
  parser.add_argument(
      "--eval-every", type=int, default=None, help=f"default: steps / {NUM_EVALS}"
  )
  parser.add_argument("--eval-windows", type=int, default=EVAL_WINDOWS)
  args = parser.parse_args(argv)
  for option in ("steps", "seq_len", "d_model", "heads", "blocks", "batch_size"):
    if getattr(args, option) < 1:
      parser.error(f"--{option.replace('_', '-')} must be at least 1")
  return args


def planned_runs(args: argparse.Namespace) -> dict[str, tuple[str, float]]:
  """``{display name: (run keyword, peak rate)}``; the rate joins the name when an option
  lists several."""
  rates = {
      "adamw": args.adamw_lr, "layca-adam": args.layca_adam_lr,
      "layca-sgdm": args.layca_sgdm_lr, "layca-adam-neuron": args.layca_adam_lr,
  }
  runs = {}
  for kind in args.runs:
    for rate in rates[kind]:
      name = RUN_NAMES[kind]
      if len(rates[kind]) > 1:
        name += f" {experiment.format_rate(rate)}"
      runs[name] = (kind, rate)
  return runs


def main(argv: Sequence[str] | None = None) -> dict[str, LMHistory]:
  args = parse_args(argv)
  text = data_lib.text_from_args(args)
  print(f"{text.name}: {len(text.train):,} training and {len(text.test):,} held-out bytes")
  model = tm.TransformerLM(
      d_model=args.d_model, num_heads=args.heads, num_blocks=args.blocks,
      mlp_ratio=args.mlp_ratio, max_len=args.seq_len, rngs=nnx.Rngs(args.seed),
  )
  _, params = tm.split_params(model)
  print(f"model: {sum(x.size for x in jax.tree.leaves(params)):,} parameters")
  apply = tm.apply_fn(nnx.graphdef(model))
  order = layca_optax.forward_order(apply, params, jnp.zeros((1, args.seq_len), jnp.int32))
  histories = {}
  for name, (kind, rate) in planned_runs(args).items():
    tx = make_optimizer(
        kind, rate, args.steps, weight_decay=args.weight_decay, momentum=args.momentum,
        alpha=args.alpha, layer_order=order,
    )
    histories[name] = train_lm(
        model, tx, text, steps=args.steps, batch_size=args.batch_size,
        seq_len=args.seq_len, seed=args.seed, eval_every=args.eval_every,
        eval_windows=args.eval_windows, progress=not args.no_progress, description=name,
    )
  config = {
      key: str(value) if not isinstance(value, (int, float, str, tuple, type(None)))
      else value for key, value in vars(args).items()
  }
  config.update(text=text.name, train_bytes=len(text.train), test_bytes=len(text.test))
  report(args.out, histories, config)
  return histories


def report(out, histories: Mapping[str, LMHistory], config: Mapping[str, Any]) -> None:
  """Prints the results table and writes ``results.json``, ``summary.md`` and the figures."""
  out.mkdir(parents=True, exist_ok=True)
  print()
  print("\n".join(experiment.markdown_table(RESULTS_HEADER, results_rows(histories))))
  results = {
      "config": dict(config),
      "runs": {name: h.to_dict() for name, h in histories.items()},
      "block_rotation_spread": {n: block_rotation_spread(h) for n, h in histories.items()},
  }
  paths = [out / "results.json", out / "summary.md"]
  paths[0].write_text(json.dumps(results, indent=1))
  paths[1].write_text(summary_markdown(histories, config))
  figures: dict[str, Callable] = {
      "block_rotation.png": save_block_curves_figure,
      "block_rotation_rates.png": save_block_rates_figure,
      "training_curves.png": save_training_curves_figure,
  }
  for filename, save in figures.items():
    save(out / filename, histories)
    paths.append(out / filename)
  experiment.print_written(paths)


if __name__ == "__main__":
  main()
