"""What every experiment script shares: options, runs from one initialisation, outputs.

An experiment is a set of named runs. Each run is an optimizer factory, called with the
:class:`RunContext` (epochs, steps per epoch, the kernels' forward order) so that
schedules and alpha can be built for the data at hand. :func:`run_all` trains a copy of
the same initial model for each run on the same minibatches; :func:`save_outputs` writes
the layer rotation curves (PNG), the numbers (``results.json``) and a markdown summary
(``summary.md``) to the output directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import optax
from flax import nnx

from examples import data as data_lib
from examples import models, optimizers, plotting, training


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What an optimizer factory may need to know about the training run."""

  epochs: int
  steps_per_epoch: int
  layer_order: tuple[str, ...]  # the kernels' paths, input layer first

  def decayed(self, rate: float) -> optax.Schedule:
    """``rate`` times 0.2 after 80 % of the epochs (:func:`examples.optimizers.step_decay`)."""
    return optimizers.step_decay(rate, self.epochs, self.steps_per_epoch)


OptimizerFactory = Callable[[RunContext], optax.GradientTransformation]


def number_list(text: str, cast=float) -> tuple:
  """Comma-separated numbers, e.g. ``-0.6,0,0.6`` (empty items skipped)."""
  return tuple(cast(w) for w in text.split(",") if w.strip())


def _int_tuple(text: str) -> tuple[int, ...]:
  return number_list(text, int)


def parse_rate(text: str) -> float:
  """A rate written ``3^-3``, ``3**-3``, ``3^-2.5`` or as a number (``0.037``)."""
  base, sep, exponent = text.strip().replace("**", "^").partition("^")
  return float(base) ** float(exponent) if sep else float(text)


def rate_list(text: str) -> tuple[float, ...]:
  """Comma-separated rates (see :func:`parse_rate`), e.g. ``3^-2,3^-3,0.01``."""
  return tuple(parse_rate(w) for w in text.split(",") if w.strip())


def format_rate(rate: float) -> str:
  """``3^-3`` for a power of 3 (to 1e-6 relative), else the number itself."""
  exponent = round(math.log(rate, 3)) if rate > 0 else None
  if exponent is not None and math.isclose(rate, 3.0**exponent, rel_tol=1e-6):
    return f"3^{exponent}"
  return f"{rate:g}"


def add_run_arguments(
    parser: argparse.ArgumentParser, *, out: str, batch_size: int = 128
) -> argparse.ArgumentParser:
  """``--batch-size --seed --out --no-progress``: the options of every experiment."""
  parser.add_argument(
      "--batch-size", type=int, default=batch_size,
      help="minibatch size (default %(default)s)",
  )
  parser.add_argument(
      "--seed", type=int, default=0,
      help="seed of the initialisation, the split and the batches (default %(default)s)",
  )
  parser.add_argument(
      "--out", type=pathlib.Path, default=pathlib.Path(out),
      help="output directory for the figures, results.json and summary.md "
      "(default %(default)s)",
  )
  parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
  return parser


def add_common_arguments(
    parser: argparse.ArgumentParser, *, epochs: int, out: str, model: bool = True,
    checkpoints: bool = False,
) -> argparse.ArgumentParser:
  """``--epochs --batch-size --seed --out --no-progress``, the data options, the CNN's size;
  with ``checkpoints``, ``--checkpoint-dir`` (pass it to :func:`run_all`)."""
  parser.add_argument(
      "--epochs", type=int, default=epochs, help="epochs of each run (default %(default)s)"
  )
  add_run_arguments(parser, out=out)
  data_lib.add_data_arguments(parser)  # --data, --data-dir, --data-limit
  if model:
    parser.add_argument(
        "--stages", type=_int_tuple, default=(16, 32, 64),
        help="filters per stage of the VGG-style CNN, comma separated (default 16,32,64)",
    )
    parser.add_argument(
        "--convs-per-stage", type=int, default=2,
        help="3x3 convolutions per stage (default %(default)s)",
    )
  if checkpoints:
    parser.add_argument(
        "--checkpoint-dir", type=pathlib.Path, default=None,
        help="save each run's params with orbax at step 0 and after every epoch, one "
        "directory per run: DIR/<run name with every run of characters other than "
        "letters, digits, '.', '+' and '-' replaced by '_'> (the main job's are DIR/Layca_SGD "
        "and DIR/SGD); read them with python -m layca_optax.report DIR/Layca_SGD",
    )
  return parser


def parser(
    name: str, description: str, *, epochs: int, model: bool = True,
    checkpoints: bool = False,
) -> argparse.ArgumentParser:
  """The command line of ``python -m examples.<name>``: its common options
  (:func:`add_common_arguments`, output in ``out/<name>``); add the experiment's own."""
  command = argparse.ArgumentParser(prog=f"python -m examples.{name}", description=description)
  return add_common_arguments(
      command, epochs=epochs, out=f"out/{name}", model=model, checkpoints=checkpoints
  )


def print_written(paths: Iterable[str | pathlib.Path]) -> None:
  """``wrote <path>`` for each file an experiment wrote besides its report."""
  for path in paths:
    print(f"wrote {path}")


def common_settings(args: argparse.Namespace) -> dict[str, Any]:
  """The run settings of ``add_common_arguments``: ``epochs, batch_size, seed, progress``."""
  return dict(
      epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
      progress=not args.no_progress,
  )


def load_data(args: argparse.Namespace) -> data_lib.Dataset:
  """The dataset the options name (``--data``...); prints its size."""
  data = data_lib.dataset_from_args(args)
  print(
      f"{data.name}: {len(data.x_train)} training and {len(data.x_test)} test images "
      f"{data.x_train.shape[1:]}, {data.num_classes} classes"
  )
  return data


def vgg_from_args(args: argparse.Namespace, data: data_lib.Dataset) -> models.VGGNet:
  """The experiments' CNN: the paper's C10-CNN1 design at the size the options give."""
  return models.VGGNet(
      args.stages, args.convs_per_stage, data.num_classes,
      in_channels=data.x_train.shape[-1], rngs=nnx.Rngs(args.seed),
  )


def train_cnn(
    args: argparse.Namespace, runs: Mapping[str, OptimizerFactory], **train_kwargs: Any
) -> tuple[data_lib.Dataset, dict[str, training.History]]:
  """Every run of ``runs`` on the data and CNN the options name: ``(data, histories)``.

  The settings come from ``add_common_arguments`` (see :func:`run_all`, which gets
  ``train_kwargs`` too).
  """
  data = load_data(args)
  histories = run_all(
      data, runs, vgg_from_args(args, data), **common_settings(args), **train_kwargs
  )
  return data, histories


def run_all(
    data: data_lib.Dataset,
    runs: Mapping[str, OptimizerFactory],
    model: nnx.Module,
    *,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: pathlib.Path | None = None,
    **train_kwargs: Any,
) -> dict[str, training.History]:
  """Trains a copy of ``model`` (same initial weights) with each run's optimizer.

  Every run sees the same minibatches (same ``seed``). ``train_kwargs`` go to
  :func:`examples.training.train` (e.g. ``record_rotation_rates=True``). With
  ``checkpoint_dir``, run ``name`` saves its params in ``checkpoint_dir /
  run_directory(name)``.
  """
  context = RunContext(
      epochs=epochs,
      steps_per_epoch=data_lib.num_batches(len(data.x_train), batch_size),
      layer_order=tuple(training.kernel_paths(model, data.x_train[:1])),
  )
  histories = {}
  for name, make_optimizer in runs.items():
    histories[name] = training.train(
        nnx.clone(model), make_optimizer(context), data, epochs=epochs,
        batch_size=batch_size, seed=seed, progress=progress, description=name,
        checkpoint_dir=None if checkpoint_dir is None
        else pathlib.Path(checkpoint_dir) / run_directory(name),
        **train_kwargs,
    )
  return histories


def run_directory(name: str) -> str:
  """A directory name for a run: ``'Layca (SGD)'`` -> ``'Layca_SGD'``."""
  return re.sub(r"[^A-Za-z0-9.+-]+", "_", name).strip("_") or "run"


def results_table(histories: Mapping[str, training.History]) -> str:
  """Accuracies (in %) and times per run, then each layer's final cosine distance per run."""
  names = list(histories)
  width = max(12, *(len(name) for name in names))
  lines = [f"{'run':<{width}} {'test acc':>9} {'train acc':>9} {'time (s)':>9}"]
  for name, history in histories.items():
    lines.append(
        f"{name:<{width}} {100 * history.final_test_accuracy:>7.1f} % "
        f"{100 * history.final_train_accuracy:>7.1f} % {history.wall_time:>9.1f}"
    )
  paths = histories[names[0]].layer_paths
  path_width = max(len("layer"), *(len(path) for path in paths))
  lines += ["", "Final cosine distance to the initialisation, input layer first:"]
  lines.append(f"{'layer':<{path_width}} " + " ".join(f"{n:>{width}}" for n in names))
  finals = {name: history.final_cosine_distances() for name, history in histories.items()}
  for path in paths:
    values = " ".join(f"{finals[name][path]:>{width}.4f}" for name in names)
    lines.append(f"{path:<{path_width}} {values}")
  return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
  """The lines of a markdown table: ``header``, the separator, one line per row."""
  line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"
  return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def markdown_summary(
    title: str, histories: Mapping[str, training.History], config: Mapping[str, Any],
    notes: Sequence[str] = (),
) -> str:
  """A markdown report: the configuration, one row per run, and free-form notes."""
  lines = [f"# {title}", ""]
  lines += [f"- {key}: `{value}`" for key, value in config.items()]
  header = ("run", "test accuracy", "train accuracy",
            "final cosine distance (first -> last layer)", "time (s)")
  rows = [
      (name, f"{100 * h.final_test_accuracy:.1f} %", f"{100 * h.final_train_accuracy:.1f} %",
       ", ".join(f"{d:.2f}" for d in h.final_cosine_distances().values()),
       f"{h.wall_time:.0f}")
      for name, h in histories.items()
  ]
  lines += ["", *markdown_table(header, rows)]
  if notes:
    lines += ["", *notes]
  return "\n".join(lines) + "\n"


def jsonable_config(args: argparse.Namespace, data: data_lib.Dataset) -> dict[str, Any]:
  """The command-line options (paths as text) and the dataset's name and sizes."""
  config = {
      key: str(value) if isinstance(value, pathlib.Path) else value
      for key, value in vars(args).items()
  }
  config.update(
      dataset=data.name, train_size=len(data.x_train), test_size=len(data.x_test)
  )
  return config


def save_outputs(
    out_dir: pathlib.Path,
    histories: Mapping[str, training.History],
    config: Mapping[str, Any],
    *,
    title: str,
    figure_name: str = "layer_rotation.png",
    columns: int | None = None,
    zoom: bool = False,
    notes: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> list[pathlib.Path]:
  """Writes the curves figure, ``results.json`` and ``summary.md``; returns their paths.

  ``zoom`` adds a row of zoomed panels to the figure (see
  :func:`examples.plotting.save_comparison_figure`). ``extra`` adds entries to the JSON
  (e.g. an experiment's own measurements).
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  figure_path = out_dir / figure_name
  plotting.save_comparison_figure(figure_path, histories, columns=columns, zoom=zoom)
  json_path = out_dir / "results.json"
  results = {
      "config": dict(config),
      "runs": {name: history.to_dict() for name, history in histories.items()},
      **(extra or {}),
  }
  json_path.write_text(json.dumps(results, indent=1))
  summary_path = out_dir / "summary.md"
  summary_path.write_text(markdown_summary(title, histories, config, notes))
  return [figure_path, json_path, summary_path]


#: The summary's last note of an experiment that writes :func:`save_step_figures`.
STEP_FIGURES_NOTE = (
    "Figures: `layer_rotation.png` (curves per epoch), `rotation_rates.png` (each "
    "layer's rotation per step), `training.png` (training curves per epoch)."
)


def save_step_figures(
    out_dir: pathlib.Path, histories: Mapping[str, training.History],
    columns: int | None = None,
) -> None:
  """Writes ``rotation_rates.png`` (each layer's rotation per step) and ``training.png``."""
  rates_path, training_path = out_dir / "rotation_rates.png", out_dir / "training.png"
  plotting.save_rotation_rates_figure(rates_path, histories, columns=columns)
  plotting.save_training_curves_figure(training_path, histories)
  print_written((rates_path, training_path))


def report(
    out_dir: pathlib.Path, histories: Mapping[str, training.History],
    config: Mapping[str, Any], **save_kwargs: Any,
) -> None:
  """Prints the results table and saves the outputs (see :func:`save_outputs`)."""
  print()
  print(results_table(histories))
  print_written(save_outputs(out_dir, histories, config, **save_kwargs))
