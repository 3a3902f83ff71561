"""Adaptive gradient methods with and without Layca (the paper's Section 5.4, Figure 6).

The paper's claim: plain adaptive methods (Adam, RMSProp, Adagrad) rotate the layers
little and unevenly (some layers barely move, often the first ones) and generalise worse
than SGD + Layca; applied as Layca's base optimizer, so that every layer rotates by
arctan(rho) per step, they reach SGD's accuracy and their layer rotation curves look
like SGD + Layca's.

This script trains the experiments' CNN from one initialisation, on the same minibatches,
with each method of ``--methods`` (default all three):

  (a) the plain method at a typical rate (``--adam-lr 1e-3``, ``--rmsprop-lr 1e-3``,
      ``--adagrad-lr 0.1``);
  (b) ``layca(rho, base_optimizer=<the method's scaling>)`` with rho(0) = 3**-4 (``--layca-lr``);
  (c) with ``--sgd-reference``, also SGD + Layca at rho(0) = 3**-3;

all with the rate x0.2 after 80 % of the epochs. It writes ``layer_rotation.png`` (a grid:
plain methods on the first row, with Layca on the second), ``results.json`` (with each
run's spread of final rotations) and ``summary.md``.

The rates come from a 3-epoch probe on 2,000 digits (seed 0; test accuracy). The paper's
Layca rate for adaptive bases, 3**-5 (ALGORITHM.md section 2), is meant for 100-epoch
runs, about 250 times more steps than here: in the probe it left every layer within a
cosine distance of 0.005 of its initialisation and under-fitted (Adam / RMSProp / Adagrad
+ Layca 80 / 76 / 77 %), while 3**-4 gave 95.6 / 94.1 / 94.2 % (3**-3: Adam + Layca 93.4 %);
``--layca-lr 0.0041`` runs the paper's rate. Plain Adagrad at its usual 1e-2 barely moved
(0.0001 to 0.0008, 46 %): 0.1 gave 95.3 %. Plain Adam 1e-3 gave 89.8 %, RMSProp 1e-3
94.8 %; in the three plain runs the first layer's cosine distance was 20 to 150 times
below the most rotated layer's (Adam 0.0002 vs 0.029), with Layca 2 to 3 times. MNIST is
easy: expect accuracy gaps of a few points at most, not the paper's CIFAR gaps.

Run from the repository root::

  python -m examples.adaptive          # 6 runs x 5 epochs: about 5 minutes on 2 CPU cores
  python -m examples.adaptive --methods adam,rmsprop --epochs 3 --out /tmp/adaptive
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

import layca_optax
from examples import experiment, optimizers, training

#: The plain methods' rates: the usual defaults, but Adagrad's 1e-2 barely trains here.
PLAIN_LR = {"Adam": 1e-3, "RMSProp": 1e-3, "Adagrad": 1e-1}
#: The paper's rho(0) on adaptive bases is 3**-5, for runs ~250x longer (see above).
LAYCA_LR = 3.0**-4
SGD_LAYCA_LR = 3.0**-3  # the paper's best rho(0) for SGD + Layca
SGD_REFERENCE = "SGD + Layca"
EPOCHS = 5


def layca_name(method: str) -> str:
  return f"{method} + Layca"


def method_names(text: str) -> tuple[str, ...]:
  """``'adam,rmsprop'`` -> ``('Adam', 'RMSProp')`` (names of ``ADAPTIVE_BASES``, any case)."""
  by_lower = {name.lower(): name for name in optimizers.ADAPTIVE_BASES}
  names = tuple(by_lower.get(word.strip().lower()) for word in text.split(","))
  if None in names or not names:
    raise argparse.ArgumentTypeError(
        f"unknown method in {text!r}; choose among {', '.join(by_lower)}"
    )
  return names


def runs(
    methods: Sequence[str] = tuple(PLAIN_LR),
    plain_lr: Mapping[str, float] = PLAIN_LR,
    layca_lr: float = LAYCA_LR,
    sgd_reference_lr: float | None = None,
) -> dict[str, experiment.OptimizerFactory]:
  """The plain methods, then the same methods as Layca bases (then SGD + Layca if a rate
  is given); every rate x0.2 after 80 % of the epochs."""
  def plain(method):
    return lambda c: optimizers.ADAPTIVE_BASES[method][1](c.decayed(plain_lr[method]))

  def with_layca(method, rate):
    base = optimizers.ADAPTIVE_BASES[method][0] if method else None
    return lambda c: layca_optax.layca(
        c.decayed(rate), base_optimizer=base() if base else None, layer_order=c.layer_order
    )

  out = {method: plain(method) for method in methods}
  out.update({layca_name(method): with_layca(method, layca_lr) for method in methods})
  if sgd_reference_lr is not None:
    out[SGD_REFERENCE] = with_layca(None, sgd_reference_lr)
  return out


def rotation_spread(history: training.History) -> dict[str, float]:
  """The smallest and largest final cosine distance over the layers, and their ratio."""
  finals = list(history.final_cosine_distances().values())
  low, high = min(finals), max(finals)
  return {"min": low, "max": high, "min_over_max": low / high if high > 0 else 1.0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = experiment.parser(
      "adaptive",
      "Adam, RMSProp and Adagrad with and without Layca: accuracy and layer "
      "rotation (paper Figure 6).",
      epochs=EPOCHS,
  )
  parser.add_argument(
      "--methods", type=method_names, default=tuple(PLAIN_LR),
      help="comma-separated subset of adam,rmsprop,adagrad (default: all)",
  )
  for method, rate in PLAIN_LR.items():
    parser.add_argument(
        f"--{method.lower()}-lr", type=float, default=rate,
        help=f"rate of plain {method} (default {rate:g})",
    )
  parser.add_argument(
      "--layca-lr", type=float, default=LAYCA_LR, help="rho(0) of Layca on the adaptive bases"
  )
  parser.add_argument(
      "--sgd-reference", action="store_true",
      help="also train SGD + Layca (rho(0) = --sgd-layca-lr) for comparison",
  )
  parser.add_argument("--sgd-layca-lr", type=float, default=SGD_LAYCA_LR)
  return parser.parse_args(argv)


def summary_notes(histories: Mapping[str, training.History], methods) -> list[str]:
  def cells(history):
    return (f"{100 * history.final_test_accuracy:.1f} %",
            f"{rotation_spread(history)['min_over_max']:.2f}")

  header = ("method", "plain: test acc", "plain: min/max rotation", "+ Layca: test acc",
            "+ Layca: min/max rotation")
  rows = [
      (m, *cells(histories[m]), *cells(histories[layca_name(m)])) for m in methods
  ]
  return [
      "Accuracy and the spread of the final layer rotations (smallest / largest final "
      "cosine distance over the layers; 1 = all layers rotated alike):", "",
      *experiment.markdown_table(header, rows),
  ]


def main(argv: Sequence[str] | None = None) -> dict[str, training.History]:
  args = parse_args(argv)
  plain_lr = {method: getattr(args, f"{method.lower()}_lr") for method in PLAIN_LR}
  data, histories = experiment.train_cnn(args, runs(
      args.methods, plain_lr, args.layca_lr,
      sgd_reference_lr=args.sgd_layca_lr if args.sgd_reference else None,
  ))
  experiment.report(
      args.out, histories, experiment.jsonable_config(args, data),
      title="Adaptive methods with and without Layca", columns=len(args.methods),
      notes=summary_notes(histories, args.methods),
      extra={"rotation_spread": {n: rotation_spread(h) for n, h in histories.items()}},
  )
  return histories


if __name__ == "__main__":
  main()
