"""AdaptCopy: SGD_AMom + Layca replaying Adam's layer rotation rates (paper Figure 7).

The paper's claim (Section 5.4): what an adaptive method changes is mostly *how fast each
layer rotates*. Record each layer's rotation angle at every step of an Adam run, then
train SGD_AMom + Layca from the same initialisation with the per-layer, per-step rates
``rho_l(t) = tan(recorded angle_l(t))`` (``layca_optax.replay_rates``): one Layca step
rotates a layer by exactly arctan(rho), so this copy has Adam's layer rotation without
parameter-level adaptivity, and the paper finds its training curves (and generalisation)
nearly indistinguishable from Adam's, unlike those of SGD with its own rotation.

This script trains the experiments' CNN from one initialisation, on the same minibatches,
recording every layer's rotation at every step:

  (a) Adam (``--adam-lr``, default 1e-3);
  (b) AdaptCopy: SGD_AMom + Layca with Adam's recorded rates (no schedule of its own:
      the replayed angles already hold Adam's decay). As in the paper (its footnote 4),
      the copy's base has Adam's momentum scheme without adaptivity, SGD_AMom:
      ``optax.ema(0.9, debias=False)`` (``--copy-momentum``; 0 gives plain SGD): with
      the raw gradient the replayed steps point in noisier directions, and the layers
      end up rotated less far from their initialisation than Adam's;
  (c) unless ``--no-reference``, SGD + Layca at its own rate, rho(0) = 3**-3;

with the rates of (a) and (c) x0.2 after 80 % of the epochs. It checks that the copy
rotated every layer by Adam's angle at every step, and writes ``layer_rotation.png`` (the
curves per epoch: Adam's and the copy's should look alike), ``rotation_rates.png`` (each
layer's rotation per step), ``training.png`` (training loss and accuracies per epoch),
``results.json`` (with the replay error) and ``summary.md``.

Run from the repository root::

  python -m examples.adaptcopy         # 3 runs x 8 epochs: about 4 minutes on 2 CPU cores
  python -m examples.adaptcopy --epochs 3 --no-reference --out /tmp/adaptcopy
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

import layca_optax
from examples import experiment, training

ADAM_LR = 1e-3
SGD_LAYCA_LR = 3.0**-3  # the paper's best rho(0) for SGD + Layca
EPOCHS = 8
COPY_MOMENTUM = 0.9  # Adam's b1: SGD_AMom's m (Supplementary B.4)
ADAM, COPY, REFERENCE = "Adam", "AdaptCopy (SGD_AMom + Layca)", "SGD + Layca"


def replayed_angles(params: Any, rotation_rates: Mapping[str, Sequence[float]]) -> Any:
  """The recorded per-step angles as a pytree for ``layca_optax.replay_rates``.

  Args:
    params: the model's parameters (an NNX ``State``, or any pytree).
    rotation_rates: ``History.rotation_rates``: ``{'/'-joined path: [angle per step]}``.

  Returns:
    The params' structure (an NNX ``State`` as its pure nested dict) with a 1-D float
    array of angles at each recorded leaf and ``None`` at the others.
  """
  tree = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
  _, treedef = jax.tree.flatten(tree)
  paths = list(training.by_path(tree))
  unknown = set(rotation_rates) - set(paths)
  if unknown:
    raise ValueError(f"recorded paths {sorted(unknown)} are not leaves of the params {paths}")
  angles = [
      np.asarray(rotation_rates[path], np.float64) if path in rotation_rates else None
      for path in paths
  ]
  return jax.tree.unflatten(treedef, angles)


def sgd_amom(momentum: float = COPY_MOMENTUM) -> optax.GradientTransformation:
  """SGD_AMom's direction: ``v = m v + (1 - m) g`` (Adam's first moment, no debiasing)."""
  return optax.ema(momentum, debias=False) if momentum else optax.identity()


def adaptcopy(
    params: Any, rotation_rates: Mapping[str, Sequence[float]],
    layer_order: Sequence[str] | None = None, momentum: float = COPY_MOMENTUM,
) -> optax.GradientTransformation:
  """SGD_AMom + Layca whose layers rotate by the recorded angles; other leaves frozen."""
  angles = replayed_angles(params, rotation_rates)
  return layca_optax.layca(
      layca_optax.replay_rates(angles), base_optimizer=sgd_amom(momentum), layer_order=layer_order
  )


def replay_error(copy: training.History, original: training.History) -> dict[str, float]:
  """Per layer: the largest |copy's angle - original's angle| over the steps, in degrees."""
  return {
      path: float(np.degrees(np.max(np.abs(
          np.asarray(copy.rotation_rates[path]) - np.asarray(original.rotation_rates[path])
      ))))
      for path in original.layer_paths
  }


def run(
    data, model, *, epochs: int = EPOCHS, adam_lr: float = ADAM_LR,
    reference_lr: float | None = SGD_LAYCA_LR, copy_momentum: float = COPY_MOMENTUM,
    batch_size: int = 128, seed: int = 0, progress: bool = True,
) -> dict[str, training.History]:
  """Adam, then its AdaptCopy (then SGD + Layca unless ``reference_lr`` is None)."""
  settings = dict(
      epochs=epochs, batch_size=batch_size, seed=seed, progress=progress,
      record_rotation_rates=True,
  )
  histories = experiment.run_all(
      data, {ADAM: lambda c: optax.adam(c.decayed(adam_lr))}, model, **settings
  )
  params = training.params_of(model)
  recorded = histories[ADAM].rotation_rates
  later = {COPY: lambda c: adaptcopy(params, recorded, c.layer_order, copy_momentum)}
  if reference_lr is not None:
    later[REFERENCE] = lambda c: layca_optax.layca(
        c.decayed(reference_lr), layer_order=c.layer_order
    )
  histories.update(experiment.run_all(data, later, model, **settings))
  return histories


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = experiment.parser(
      "adaptcopy",
      "Adam vs SGD_AMom + Layca replaying Adam's layer rotation rates (paper "
      "Figure 7).",
      epochs=EPOCHS,
  )
  parser.add_argument("--adam-lr", type=float, default=ADAM_LR)
  parser.add_argument(
      "--copy-momentum", type=float, default=COPY_MOMENTUM,
      help="m of the copy's SGD_AMom base (0: plain SGD)",
  )
  parser.add_argument(
      "--sgd-layca-lr", type=float, default=SGD_LAYCA_LR, help="rho(0) of the reference"
  )
  parser.add_argument(
      "--no-reference", action="store_true", help="skip the SGD + Layca reference run"
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, training.History]:
  args = parse_args(argv)
  data = experiment.load_data(args)
  histories = run(
      data, experiment.vgg_from_args(args, data), adam_lr=args.adam_lr,
      reference_lr=None if args.no_reference else args.sgd_layca_lr,
      copy_momentum=args.copy_momentum, **experiment.common_settings(args),
  )
  error = replay_error(histories[COPY], histories[ADAM])
  notes = [
      f"Largest difference between the copy's and Adam's rotation of a layer in one step: "
      f"{max(error.values()):.2e} degrees (per layer in results.json, `replay_error_degrees`).",
      "", "Test accuracy per epoch (%):", "",
      *experiment.markdown_table(
          ("run", *histories[ADAM].epochs),
          [(name, *("-" if a is None else f"{100 * a:.1f}" for a in h.test_accuracy))
           for name, h in histories.items()],
      ),
      "", experiment.STEP_FIGURES_NOTE,
  ]
  experiment.report(
      args.out, histories, experiment.jsonable_config(args, data),
      title="AdaptCopy: SGD_AMom + Layca replaying Adam's layer rotation rates", notes=notes,
      extra={"replay_error_degrees": error},
  )
  experiment.save_step_figures(args.out, histories)
  return histories


if __name__ == "__main__":
  main()
