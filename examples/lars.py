"""LARS / NG_adap, Layca without its operations 1 and 4 (paper Supplementary A.4, Fig. 12).

Layca (Algorithm 1) projects the step orthogonally to the weights (operation 1),
normalises it to the weights' norm (2), steps (3) and projects the weights back on the
sphere of their initial norm (4). The paper observes that operations 1 and 4 are not
needed in practice: a layer has so many parameters that the step is nearly orthogonal to
the weights anyway, and the norm only has to be kept from blowing up. Without them Layca
is LARS (You et al.) / NG_adap (Yu et al.):

    w' = w - rho_l(t) * s * ||w|| / ||s||,  with ||w'|| <= ||w|| + 1e-4 ||w_0||

(the paper capped the norm increase per step at 1e-4 times the initial norm; decreases
are not capped). Its Figure 12 (alpha = 0, rho(0) = 3**-3) shows layer rotation curves
indistinguishable from Layca's and test accuracies within 0.1 point of Layca's. Its LARS
experiment also scaled the initial kernels by 1/4.

This script trains the experiments' CNN twice from the same initial weights (kernels
scaled by ``--init-scale``, default 1/4 as in the paper) on the same minibatches:

  (a) SGD + Layca, alpha = 0, rho(0) = 3**-3;
  (b) LARS / NG_adap (``optimizers.lars_ng_adap``), same rho(0);

both x0.2 after 80 % of the epochs. It writes ``layer_rotation.png`` (the curves),
``weight_norms.png`` (each layer's norm relative to its initial norm, per epoch: constant
for Layca, slowly growing or shrinking for LARS), ``results.json`` (with the norms) and
``summary.md`` (with the accuracy gap and the largest per-layer difference in final
cosine distance). On the default data the cap allows at most 31 x 10 x 1e-4 = +3.1 % of
norm growth in 10 epochs.

With the kernels at 1/4 scale, BatchNorm's running variances (which start at 1) are far
above the true ones at first, and they take about a hundred steps to forget that start:
much shorter runs (a few epochs of ``--data-limit 1000``) evaluate at chance level in
eval mode for both optimizers, while training accuracy rises normally. Use
``--init-scale 1`` for such short runs.

Run from the repository root::

  python -m examples.lars                   # 2 runs x 10 epochs: about 3-4 minutes on 2 CPU cores
  python -m examples.lars --epochs 3 --init-scale 1 --out /tmp/lars
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib
from flax import nnx
from matplotlib import ticker
from matplotlib.figure import Figure

import layca_optax
from examples import data as data_lib
from examples import experiment, optimizers, plotting, training

RHO = 3.0**-3  # the paper's rho(0) for Figure 12 (alpha = 0)
INIT_SCALE = 0.25  # the paper's LARS experiment scaled the initial kernels by 1/4
MAX_GROWTH = 1e-4  # cap on the norm increase per step, times ||w_0||
EPOCHS = 10
LAYCA_RUN = "Layca (SGD)"
LARS_RUN = "LARS / NG_adap"


def runs(rho: float = RHO, max_growth: float = MAX_GROWTH) -> dict:
  """Layca and LARS / NG_adap at the same rho(0), both x0.2 after 80 % of the epochs."""
  return {
      LAYCA_RUN: lambda c: layca_optax.layca(c.decayed(rho), layer_order=c.layer_order),
      LARS_RUN: lambda c: optimizers.lars_ng_adap(
          c.decayed(rho), max_growth=max_growth, layer_order=c.layer_order
      ),
  }


def scale_kernels(model: nnx.Module, factor: float) -> nnx.Module:
  """A copy of ``model`` whose kernels (params with ``ndim >= 2``) are multiplied by ``factor``."""
  model = nnx.clone(model)
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda w: w * factor if w.ndim >= 2 else w, params))
  return model


def kernel_norms(model: nnx.Module) -> dict[str, float]:
  """The norm of each kernel of ``model`` (params with ``ndim >= 2``), by path."""
  params = training.by_path(training.params_of(model))
  return {
      path: float(jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)))))
      for path, w in params.items() if w.ndim >= 2
  }


class NormRecorder:
  """An ``epoch_callback`` for ``training.train``: each kernel's norm at every record.

  A record at epoch 0 starts a new run, so one recorder serves the successive runs of
  ``experiment.run_all``: ``runs[i]`` is ``{path: [norm at epoch 0, 1, ...]}`` of run i.
  """

  def __init__(self):
    self.runs: list[dict[str, list[float]]] = []

  def __call__(self, epoch: int, model: nnx.Module) -> None:
    norms = kernel_norms(model)
    if epoch == 0:
      self.runs.append({path: [] for path in norms})
    for path, norm in norms.items():
      self.runs[-1][path].append(norm)


def run(
    data: data_lib.Dataset,
    model: nnx.Module,
    *,
    epochs: int = EPOCHS,
    rho: float = RHO,
    init_scale: float = INIT_SCALE,
    max_growth: float = MAX_GROWTH,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict[str, training.History], dict[str, dict[str, list[float]]]]:
  """Trains Layca and LARS from ``model`` with its kernels scaled by ``init_scale``.

  Returns:
    The histories, and each run's kernel norms per epoch ``{run: {path: [norms]}}``
    (epoch 0 first).
  """
  recorder = NormRecorder()
  histories = experiment.run_all(
      data, runs(rho, max_growth), scale_kernels(model, init_scale), epochs=epochs,
      batch_size=batch_size, seed=seed, progress=progress, epoch_callback=recorder,
  )
  return histories, dict(zip(histories, recorder.runs))


def relative_norms(norms: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
  """Each layer's norms divided by its initial norm."""
  return {path: [n / values[0] for n in values] for path, values in norms.items()}


def save_norms_figure(
    path: str | pathlib.Path,
    norms: Mapping[str, Mapping[str, Sequence[float]]],
    histories: Mapping[str, training.History],
) -> Figure:
  """Saves each run's kernel norms relative to their initial norms (one panel per run)."""
  width, height = plotting.PANEL_SIZE
  fig = Figure(figsize=(width * len(norms) + 0.8, height), layout="constrained")
  axes = fig.subplots(1, len(norms), sharey=True, squeeze=False).ravel()
  for ax, (name, run_norms) in zip(axes, norms.items()):
    history = histories[name]
    depth = len(history.layer_paths)
    colours = matplotlib.colormaps[plotting.CMAP]([i / max(depth - 1, 1) for i in range(depth)])
    relative = relative_norms(run_norms)
    for colour, layer in zip(colours, history.layer_paths):
      ax.plot(history.record_epochs, relative[layer], color=colour)
    ax.set_title(name)
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("||w(t)|| / ||w(0)||")
  num_layers = max(len(histories[name].layer_paths) for name in norms)
  plotting.add_depth_colour_bar(fig, list(axes), num_layers)
  plotting.save_figure(fig, path)
  return fig


def comparison(
    histories: Mapping[str, training.History],
    norms: Mapping[str, Mapping[str, Sequence[float]]],
) -> dict[str, float]:
  """LARS minus Layca: test accuracy gap, largest |difference| of final cosine distance
  over the layers, and the range of LARS's final relative norms."""
  layca, lars = histories[LAYCA_RUN], histories[LARS_RUN]
  layca_final, lars_final = layca.final_cosine_distances(), lars.final_cosine_distances()
  final_norms = [values[-1] for values in relative_norms(norms[LARS_RUN]).values()]
  return {
      "test_accuracy_gap": lars.final_test_accuracy - layca.final_test_accuracy,
      "max_cosine_distance_gap": max(
          abs(lars_final[p] - layca_final[p]) for p in layca.layer_paths
      ),
      "lars_min_relative_norm": min(final_norms),
      "lars_max_relative_norm": max(final_norms),
  }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = experiment.parser(
      "lars",
      "LARS / NG_adap (Layca without operations 1 and 4) next to Layca: "
      "accuracy, layer rotation and weight norms (paper Figure 12).",
      epochs=EPOCHS,
  )
  parser.add_argument("--rho", type=float, default=RHO, help="rho(0) of both runs")
  parser.add_argument(
      "--init-scale", type=float, default=INIT_SCALE,
      help="multiply the initial kernels by this (default 0.25, as in the paper)",
  )
  parser.add_argument(
      "--max-growth", type=float, default=MAX_GROWTH,
      help="LARS's cap on the norm increase per step, in units of ||w_0||",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, training.History]:
  args = parse_args(argv)
  data = experiment.load_data(args)
  histories, norms = run(
      data, experiment.vgg_from_args(args, data), rho=args.rho, init_scale=args.init_scale,
      max_growth=args.max_growth, **experiment.common_settings(args),
  )
  figure = args.out / "weight_norms.png"
  save_norms_figure(figure, norms, histories)
  print(f"wrote {figure}")
  gaps = comparison(histories, norms)
  notes = [
      f"LARS minus Layca: test accuracy {100 * gaps['test_accuracy_gap']:+.1f} points; "
      f"largest per-layer difference of final cosine distance "
      f"{gaps['max_cosine_distance_gap']:.3f}.",
      f"LARS's final kernel norms are {gaps['lars_min_relative_norm']:.4f} to "
      f"{gaps['lars_max_relative_norm']:.4f} times their initial norms (Layca keeps "
      "them at 1); see `weight_norms.png`.",
  ]
  print("\n".join(notes))
  experiment.report(
      args.out, histories, experiment.jsonable_config(args, data),
      title="LARS / NG_adap vs Layca", notes=notes,
      extra={"weight_norms": norms, "comparison": gaps},
  )
  return histories


if __name__ == "__main__":
  main()
