"""Layer rotation rate configurations with Layca (the paper's Section 4, Figures 1 and 9).

The paper trains with SGD + Layca under many layer rotation rate configurations: a
global rate rho(0) and a layer-wise prioritisation alpha (negative: the first layers
rotate fastest; positive: the last layers do; 0: every layer at the same rate). Its claim:
the larger every layer's rotation, the better the test accuracy; the best configuration
(alpha = 0, a large rho(0) such as 3**-3) takes every layer far from its initialisation,
while a small rho(0) or a large |alpha| leaves some layers barely rotated and generalises
worse, although every configuration fits the training set.

This script trains the experiments' CNN from one initialisation, on the same minibatches,
with SGD + Layca (``layca_optax.layca`` in forward layer order, rate x0.2 after 80 % of
the epochs) in two sweeps that share their alpha = 0, rho(0) = 3**-3 run:

  (a) rho(0) in ``--rates`` (default 3**-2, 3**-3, 3**-4, 3**-5) at alpha = 0;
  (b) alpha in ``--alphas`` (default -0.6, 0, 0.6) at rho(0) = ``--alpha-rate`` (3**-3),
      with the authors' depth exponent 5 (``--depth-exponent``): alpha = +-0.6 runs the
      slowest layer at 0.4**5 = 1 % of rho(0).

The default runs are the five columns of the paper's Figure 1 (alpha = 0.6, alpha = -0.6,
rho(0) = 3**-5, 3**-4, and the best, alpha = 0 with rho(0) = 3**-3) plus rho(0) = 3**-2:
these runs are about 300 times shorter than the paper's, so 3**-3 cannot take the layers
far here, and 3**-2 tests "larger rotation, better accuracy" one step further. (3**-1
turns every layer by 18 degrees per step: in a 16-step trial it stayed near chance while
3**-3 reached 54 %, the paper's caveat of rotations that do not decrease the loss.)

It writes ``rho_sweep.png`` and ``alpha_sweep.png`` (the layer rotation curves of each
sweep, one panel per run titled with its test accuracy, y zoomed on the sweep's largest
value), ``layer_rotation.png`` (every run, y from 0 to 1 as in the paper),
``accuracy.png`` (test accuracy, and the smallest and mean final cosine distance over the
layers, against rho(0) and against alpha), ``results.json`` and ``summary.md``, whose
notes name the best configuration and compare it with the one whose layers rotated
furthest.

MNIST is easy: the accuracy differences between configurations can be a fraction of a
point (1,000 test digits: one digit is 0.1 point), small against the paper's 30 points,
so read them with the rotations, and with more epochs or seeds if they are close.

Run from the repository root::

  python -m examples.rate_configurations   # 6 runs x 4 epochs: about 4 minutes on 2 CPU cores
  python -m examples.rate_configurations --rates 3^-1,3^-3 --alphas=-0.3,0,0.3 --epochs 6
  python -m examples.rate_configurations --epochs 2 --data-limit 2000 --out /tmp/rates
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

import layca_optax
from examples import experiment, plotting, training
from examples.experiment import format_rate, parse_rate, rate_list

RATES = (3.0**-2, 3.0**-3, 3.0**-4, 3.0**-5)  # rho(0) at alpha = 0
ALPHAS = (-0.6, 0.0, 0.6)  # at ALPHA_RATE
ALPHA_RATE = 3.0**-3  # the paper's best rho(0), with alpha = 0
DEPTH_EXPONENT = 5.0  # the authors' exponent factor (ALGORITHM.md section 3)
EPOCHS = 4


@dataclasses.dataclass(frozen=True)
class Configuration:
  """One layer rotation rate configuration: rho_l(0) = alpha_multipliers(...)_l * rho."""

  rho: float
  alpha: float = 0.0

  @property
  def name(self) -> str:
    return f"rho(0)={format_rate(self.rho)}, alpha={self.alpha:g}"


def sweeps(
    rates: Sequence[float] = RATES,
    alphas: Sequence[float] = ALPHAS,
    alpha_rate: float = ALPHA_RATE,
) -> dict[str, list[Configuration]]:
  """The two sweeps: rho(0) at alpha = 0 (largest first), alpha at ``alpha_rate``."""
  return {
      "rho": [Configuration(rho) for rho in sorted(rates, reverse=True)],
      "alpha": [Configuration(alpha_rate, alpha) for alpha in sorted(alphas)],
  }


def configurations(sweeps_: Mapping[str, Sequence[Configuration]]) -> list[Configuration]:
  """The sweeps' configurations, each once (the sweeps may share one), in order."""
  return list(dict.fromkeys(c for sweep in sweeps_.values() for c in sweep))


def runs(
    configs: Sequence[Configuration], depth_exponent: float = DEPTH_EXPONENT
) -> dict[str, experiment.OptimizerFactory]:
  """SGD + Layca per configuration, in forward layer order, x0.2 after 80 % of training."""
  def make(config: Configuration) -> experiment.OptimizerFactory:
    return lambda c: layca_optax.layca(
        c.decayed(config.rho), alpha=config.alpha, depth_exponent=depth_exponent,
        layer_order=c.layer_order,
    )

  return {config.name: make(config) for config in configs}


def rotation_summary(history: training.History) -> dict[str, float]:
  """Test accuracy and the smallest and mean final cosine distance over the layers."""
  finals = list(history.final_cosine_distances().values())
  return {
      "test_accuracy": history.final_test_accuracy,
      "min_cosine_distance": float(np.min(finals)),
      "mean_cosine_distance": float(np.mean(finals)),
  }


def sweep_results(
    histories: Mapping[str, training.History],
    sweeps_: Mapping[str, Sequence[Configuration]],
) -> dict[str, list[dict]]:
  """Per sweep, one entry per configuration: rho, alpha, run name, rotation_summary."""
  return {
      sweep: [
          {"rho": c.rho, "alpha": c.alpha, "run": c.name,
           **rotation_summary(histories[c.name])}
          for c in configs
      ]
      for sweep, configs in sweeps_.items()
  }


def _ranks(values: Sequence[float]) -> np.ndarray:
  """Ranks from 0, tied values sharing their mean rank."""
  values = np.asarray(values, dtype=float)
  ranks = np.empty(len(values))
  ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
  for value in np.unique(values):
    ranks[values == value] = ranks[values == value].mean()
  return ranks


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rank correlation; nan for fewer than 3 points or a constant sequence."""
  if len(x) < 3:
    return float("nan")
  rx, ry = _ranks(x), _ranks(y)
  if np.std(rx) == 0 or np.std(ry) == 0:
    return float("nan")
  return float(np.corrcoef(rx, ry)[0, 1])


def claim_notes(histories: Mapping[str, training.History]) -> list[str]:
  """The summary's notes, computed from the results: best run, rotations, the claim."""
  summaries = {name: rotation_summary(h) for name, h in histories.items()}
  best = max(summaries, key=lambda name: summaries[name]["test_accuracy"])
  furthest = max(summaries, key=lambda name: summaries[name]["min_cosine_distance"])
  least = min(summaries, key=lambda name: summaries[name]["min_cosine_distance"])

  def finals(name):
    return ", ".join(f"{d:.3f}" for d in histories[name].final_cosine_distances().values())

  def accuracy(name):
    return f"{100 * summaries[name]['test_accuracy']:.1f} %"

  names = list(summaries)
  correlation = rank_correlation(
      [summaries[n]["min_cosine_distance"] for n in names],
      [summaries[n]["test_accuracy"] for n in names],
  )
  verdict = (
      "the best configuration is also the one whose least-rotated layer rotated furthest, "
      "as the paper's rule of thumb predicts"
      if best == furthest else
      f"the best configuration is not the one whose least-rotated layer rotated furthest "
      f"({furthest}, {accuracy(furthest)}): the rule of thumb does not hold exactly here"
  )
  return [
      f"- Best test accuracy: **{best}** ({accuracy(best)}); its final cosine distances, "
      f"input layer first: {finals(best)}.",
      f"- Least-rotated layer rotated furthest in: {furthest} (smallest final cosine "
      f"distance {summaries[furthest]['min_cosine_distance']:.3f}; {accuracy(furthest)}); "
      f"least in: {least} ({summaries[least]['min_cosine_distance']:.4f}; "
      f"{accuracy(least)}).",
      f"- So {verdict}.",
      f"- Rank correlation (Spearman, over the {len(names)} runs) between the smallest final "
      f"cosine distance over the layers and the test accuracy: {correlation:.2f}.",
      "- Figures: `rho_sweep.png`, `alpha_sweep.png` (curves per sweep, y zoomed), "
      "`layer_rotation.png` (every run, y from 0 to 1), `accuracy.png` (accuracy and "
      "rotation per sweep).",
  ]


def save_accuracy_figure(path: pathlib.Path, results: Mapping[str, list[dict]]) -> Figure:
  """Test accuracy (left axis) and final cosine distances (right) vs rho(0) and vs alpha."""
  fig = Figure(figsize=(9.0, 3.4), layout="constrained")
  axes = fig.subplots(1, 2, squeeze=False).ravel()
  for ax, (sweep, label) in zip(axes, (("rho", "rho(0)"), ("alpha", "alpha"))):
    entries = sorted(results[sweep], key=lambda e: e[sweep])
    x = [e[sweep] for e in entries]
    ax.plot(x, [100 * e["test_accuracy"] for e in entries], "o-", color="C0")
    ax.set_ylabel("Test accuracy (%)", color="C0")
    ax.set_xlabel(label)
    twin = ax.twinx()
    twin.plot(x, [e["min_cosine_distance"] for e in entries], "s--", color="C1",
              label="smallest over layers")
    twin.plot(x, [e["mean_cosine_distance"] for e in entries], "^:", color="C2",
              label="mean over layers")
    twin.set_ylabel("Final cosine distance")
    twin.legend(fontsize="small", loc="lower center")
    if sweep == "rho":
      ax.set_xscale("log", base=3)
      ax.set_title("alpha = 0")
    elif entries:
      ax.set_title(f"rho(0) = {format_rate(entries[0]['rho'])}")
    ax.grid(alpha=0.3)
  plotting.save_figure(fig, path)
  return fig


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = experiment.parser(
      "rate_configurations",
      "SGD + Layca under several layer rotation rate configurations (rho(0), "
      "alpha): layer rotation and test accuracy (paper Figures 1 and 9).",
      epochs=EPOCHS,
  )
  parser.add_argument(
      "--rates", type=rate_list, default=RATES,
      help="rho(0) values at alpha = 0, comma separated (default 3^-2,3^-3,3^-4,3^-5)",
  )
  parser.add_argument(
      "--alphas", type=experiment.number_list, default=ALPHAS,
      help="alpha values at --alpha-rate, comma separated; write --alphas=-0.6,0,0.6 "
      "(the default) when the first is negative",
  )
  parser.add_argument(
      "--alpha-rate", type=parse_rate, default=ALPHA_RATE,
      help="rho(0) of the alpha sweep (default 3^-3)",
  )
  parser.add_argument("--depth-exponent", type=float, default=DEPTH_EXPONENT)
  args = parser.parse_args(argv)
  if not args.rates and not args.alphas:
    parser.error("give at least one of --rates and --alphas")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, training.History]:
  args = parse_args(argv)
  sweeps_ = sweeps(args.rates, args.alphas, args.alpha_rate)
  data, histories = experiment.train_cnn(
      args, runs(configurations(sweeps_), args.depth_exponent)
  )
  results = sweep_results(histories, sweeps_)
  config = experiment.jsonable_config(args, data)
  config.update(  # 3^-3 rather than 0.037037037037037035
      rates=[format_rate(r) for r in args.rates], alpha_rate=format_rate(args.alpha_rate)
  )
  experiment.report(
      args.out, histories, config,
      title="Layer rotation rate configurations of SGD + Layca",
      columns=max(len(configs) for configs in sweeps_.values()),
      notes=claim_notes(histories), extra={"sweeps": results},
  )
  paths = []
  for sweep, configs in sweeps_.items():
    if not configs:
      continue
    path = args.out / f"{sweep}_sweep.png"
    swept = {c.name: histories[c.name] for c in configs}
    # Two panels a row: four side by side are too small to read at page width.
    plotting.save_comparison_figure(path, swept, ylim=plotting.zoom_limits(swept), columns=2)
    paths.append(path)
  paths.append(args.out / "accuracy.png")
  save_accuracy_figure(paths[-1], results)
  experiment.print_written(paths)
  return histories


if __name__ == "__main__":
  main()
