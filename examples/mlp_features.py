"""What layer rotation does to the features of a one-hidden-layer MLP (paper Section 6, Fig. 8).

The paper trains a 1-hidden-layer MLP (784 hidden neurons) on a reduced MNIST (1,000
images per class, to make the network overparameterised) with Layca at four learning
rates, from one initialisation. All four reach 100 % training accuracy, but the larger
the rate, the larger the hidden layer's rotation and the better the test accuracy; the
hidden neurons' incoming weights, shown as 28x28 images, go from noisy (the random
initialisation still shows) to clean, digit-like strokes as layer rotation grows. Its
claim: layer rotation does not change *which* features are learned but *how far* they
are learned.

This script does the same at CPU scale, with Flax **Linen** and
``flax.training.train_state.TrainState`` (``examples/linen.py``): the MLP of
``linen.MLP`` (784 hidden units, no biases, He-uniform init, BatchNorm without scale or
offset after the hidden layer as in the authors' experiment) on MNIST 5k (4,000 training
images, 400 per class), trained with SGD + Layca at rho(0) = 3**-2, 3**-2.5, 3**-3 and
3**-4 (the authors' four rates), x0.2 after 90 % of the epochs, same initial weights and
minibatches for every rate. It writes

* ``features.png``: the incoming weights of 5 hidden neurons (chosen with ``--seed``, the
  same for every row) as images, first at initialisation, then after training at each
  rate; each row is labelled with the rate, the hidden layer's final cosine distance to
  its initialisation, and the test accuracy;
* ``layer_rotation.png``: the layer rotation curves of each run;
* ``results.json`` (with the neurons and each run's hidden-layer cosine distance) and
  ``summary.md``.

One default run (seed 0, 76 s wall time on 2 shared, busy CPU cores): every rate reaches
100 % training accuracy; the hidden layer's final cosine distance is 0.96 / 0.78 / 0.42 /
0.10 from the largest rate to the smallest, and the features go from smooth digit-like
strokes (3**-2) to the initialisation's noise barely changed (3**-4), as in Figure 8.
Test accuracies (95.7 / 95.1 / 94.8 / 95.3 %) are within a point of each other: on
1,000 test digits and a run ~10 times shorter than the paper's, the generalisation gap of
Figure 8 does not show; the features do.

Run from the repository root::

  python -m examples.mlp_features            # 4 runs x 30 epochs: about 1-2 minutes on 2 CPU cores
  python -m examples.mlp_features --epochs 10 --out /tmp/mlp_features
  python -m examples.mlp_features --data fashion-mnist --data-limit 10000
"""

from __future__ import annotations

import argparse
import math
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

import layca_optax
from examples import data as data_lib
from examples import experiment, linen, optimizers, plotting, training
from examples.experiment import rate_list

RATES = (3.0**-2, 3.0**-2.5, 3.0**-3, 3.0**-4)  # rho(0), largest rotation first
EPOCHS = 30
BATCH_SIZE = 128
HIDDEN = 784  # the paper's width
NEURONS = 5  # features shown per rate
DECAY_AT = 0.9  # x0.2 after 90 % of the epochs (the authors' escape from loss plateaus)
INITIAL_ROW = "initialisation"


def run_name(rate: float) -> str:
  """``'Layca, rho(0) = 3^-2.5'`` for powers of 3 (halves included), else the number."""
  exponent = math.log(rate, 3)
  if abs(2 * exponent - round(2 * exponent)) < 1e-6:
    return f"Layca, rho(0) = 3^{round(2 * exponent) / 2:g}"
  return f"Layca, rho(0) = {rate:.3g}"


def hidden_features(params: Mapping, neurons: Sequence[int], image_shape) -> np.ndarray:
  """The incoming weight vectors of ``neurons`` as images ``(len(neurons), *image_shape)``."""
  kernel = np.asarray(params["hidden"]["kernel"])  # (inputs, hidden)
  return kernel[:, list(neurons)].T.reshape(len(neurons), *image_shape)


def choose_neurons(hidden: int, count: int = NEURONS, seed: int = 0) -> list[int]:
  """``count`` distinct hidden neurons drawn with a seeded RNG, in increasing order."""
  rng = np.random.default_rng(seed)
  return sorted(int(i) for i in rng.choice(hidden, size=min(count, hidden), replace=False))


def run(
    data: data_lib.Dataset,
    *,
    rates: Sequence[float] = RATES,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    hidden: int = HIDDEN,
    batch_norm: bool = True,
    neurons: int = NEURONS,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict[str, training.History], dict[str, np.ndarray], list[int]]:
  """Trains the Linen MLP with Layca at every rate from one initialisation.

  Returns:
    The histories (one per rate, named by :func:`run_name`), the chosen neurons'
    features ``{row name: (neurons, H, W, C) array}`` starting with
    ``'initialisation'``, and the neurons' indices.
  """
  model = linen.MLP(hidden=hidden, num_classes=data.num_classes, batch_norm=batch_norm)
  variables = linen.init_variables(model, data.x_train, seed)
  chosen = choose_neurons(hidden, neurons, seed)
  image_shape = data.x_train.shape[1:]
  features = {INITIAL_ROW: hidden_features(variables["params"], chosen, image_shape)}
  steps_per_epoch = data_lib.num_batches(len(data.x_train), batch_size)
  histories = {}
  for rate in rates:
    name = run_name(rate)
    schedule = optimizers.step_decay(rate, epochs, steps_per_epoch, at=(DECAY_AT,))
    state = linen.create_state(model, variables, layca_optax.layca(schedule))
    state, histories[name] = linen.train_state_loop(
        state, data, epochs=epochs, batch_size=batch_size, seed=seed,
        progress=progress, description=name,
    )
    features[name] = hidden_features(state.params, chosen, image_shape)
  return histories, features, chosen


def _as_image(feature: np.ndarray) -> tuple[np.ndarray, dict]:
  """A feature ready for ``imshow``: grey levels centred on 0, or RGB scaled to [0, 1]."""
  if feature.shape[-1] == 1:
    limit = float(np.max(np.abs(feature))) or 1.0
    return feature[..., 0], dict(cmap="RdBu_r", vmin=-limit, vmax=limit)
  low, high = feature.min(), feature.max()
  return (feature - low) / ((high - low) or 1.0), {}


def row_label(name: str, histories: Mapping[str, training.History]) -> str:
  if name not in histories:
    return name
  history = histories[name]
  hidden = history.final_cosine_distances()[history.layer_paths[0]]
  rate = name.split("rho(0) = ")[-1]
  return (
      f"rho(0) = {rate}\ncos. dist. {hidden:.2f}\n"
      f"test {100 * history.final_test_accuracy:.1f} %"
  )


def save_features_figure(
    path: str | pathlib.Path,
    features: Mapping[str, np.ndarray],
    histories: Mapping[str, training.History],
    neurons: Sequence[int],
) -> Figure:
  """Saves the grid: one row per run (initialisation first), one column per neuron.

  Each image has its own colour scale, symmetric around 0 (red positive, blue negative).
  """
  rows, columns = len(features), len(neurons)
  fig = Figure(figsize=(1.6 * columns + 1.7, 1.6 * rows + 0.4), layout="constrained")
  axes = fig.subplots(rows, columns, squeeze=False)
  for r, (name, images) in enumerate(features.items()):
    for c, image in enumerate(images):
      ax = axes[r, c]
      pixels, style = _as_image(image)
      ax.imshow(pixels, interpolation="nearest", **style)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(f"neuron {neurons[c]}", fontsize="small")
    axes[r, 0].set_ylabel(
        row_label(name, histories), rotation=0, ha="right", va="center", fontsize="small"
    )
  fig.suptitle("Hidden features (incoming weights) after training with Layca")
  plotting.save_figure(fig, path)
  return fig


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = experiment.parser(
      "mlp_features",
      "Hidden features of a one-hidden-layer MLP (Flax Linen) trained with "
      "Layca at four learning rates (paper Figure 8).",
      epochs=EPOCHS, model=False,
  )
  parser.set_defaults(batch_size=BATCH_SIZE)
  parser.add_argument(
      "--rates", type=rate_list, default=RATES,
      help="Layca's rho(0) per run, comma separated, e.g. 3^-2,3^-3 (default: 3^-2, "
      "3^-2.5, 3^-3, 3^-4)",
  )
  parser.add_argument("--hidden", type=int, default=HIDDEN, help="hidden neurons")
  parser.add_argument(
      "--no-batch-norm", dest="batch_norm", action="store_false",
      help="no BatchNorm after the hidden layer",
  )
  parser.add_argument("--neurons", type=int, default=NEURONS, help="features shown per run")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, training.History]:
  args = parse_args(argv)
  data = experiment.load_data(args)
  histories, features, neurons = run(
      data, rates=args.rates, hidden=args.hidden, batch_norm=args.batch_norm,
      neurons=args.neurons, **experiment.common_settings(args),
  )
  figure = args.out / "features.png"
  save_features_figure(figure, features, histories, neurons)
  print(f"wrote {figure}")
  hidden_distance = {
      name: h.final_cosine_distances()[h.layer_paths[0]] for name, h in histories.items()
  }
  notes = [
      f"Features of hidden neurons {neurons} in `features.png` (initialisation first).",
      "",
      *experiment.markdown_table(
          ("run", "hidden layer's final cosine distance", "test accuracy"),
          [(name, f"{hidden_distance[name]:.3f}",
            f"{100 * histories[name].final_test_accuracy:.1f} %") for name in histories],
      ),
  ]
  experiment.report(
      args.out, histories, experiment.jsonable_config(args, data),
      title="Layer rotation and the features of a one-hidden-layer MLP (Linen)",
      notes=notes,
      extra={"neurons": neurons, "hidden_cosine_distance": hidden_distance},
  )
  return histories


if __name__ == "__main__":
  main()
