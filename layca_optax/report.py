"""Layer rotation report of a finished run, from its orbax checkpoints.

Run::

  python -m layca_optax.report CHECKPOINT_DIR --out OUT_DIR

``CHECKPOINT_DIR`` is the directory given to ``orbax.checkpoint.CheckpointManager``
during training (one sub-directory per saved step). The command reads the params of
every step, one at a time (:func:`layca_optax.curves_from_checkpoints`), and writes to
``OUT_DIR``:

* ``curves.json``: the curves (``layca_optax.LayerRotationCurves.load`` reads it back),
  plus a ``"checkpoints"`` entry saying what was read and which steps were skipped;
* ``layer_rotation.png``: the paper's figure, one cosine-distance line per layer,
  first layer dark (viridis) to last yellow;
* ``summary.md``: per layer the final cosine distance and the first step where it
  exceeded 0.5 and 0.9, the most and least rotated layers, the skipped steps.

Needs the ``checkpoint`` extra: ``pip install "layca_optax[checkpoint]"`` (orbax,
matplotlib, tqdm).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from layca_optax import _checkpoints, _curves, _plotting

__all__ = ["Report", "first_step_above", "main", "summary_markdown", "write_report"]

THRESHOLDS = (0.5, 0.9)
CURVES_FILE = "curves.json"
FIGURE_FILE = "layer_rotation.png"
SUMMARY_FILE = "summary.md"
FIGURE_DPI = 150
MAX_LEGEND_LAYERS = 10  # more layers: the colour bar alone says which line is which


@dataclasses.dataclass
class Report:
  """What :func:`write_report` read and wrote.

  Attributes:
    curves: the layer rotation curves, one record per step read.
    skipped: the steps that could not be read and were skipped (``--skip-bad``).
    info: ``directory``, ``params_path``, ``reference_step``, ``layer_order_source``.
    axes: the matplotlib Axes saved as the figure (one line per layer).
    files: the written files: curves, figure, summary.
  """

  curves: _curves.LayerRotationCurves
  skipped: list[_checkpoints.SkippedStep]
  info: dict[str, Any]
  axes: Any
  files: list[pathlib.Path]


def first_step_above(steps: Sequence[int], values: Sequence[float], threshold: float):
  """The first step whose value exceeds ``threshold``, or ``None``.

  Examples:
    >>> from layca_optax.report import first_step_above
    >>> first_step_above([0, 10, 20, 30], [0.0, 0.4, 0.6, 0.95], 0.5)
    20
    >>> first_step_above([0, 10], [0.0, 0.4], 0.9) is None
    True
  """
  return next((s for s, v in zip(steps, values) if v > threshold), None)


def _format_step(step: int | None, steps_per_epoch: float | None) -> str:
  if step is None:
    return "never"
  if steps_per_epoch is None:
    return str(step)
  return f"{step} (epoch {step / steps_per_epoch:g})"


def summary_markdown(
    curves: _curves.LayerRotationCurves,
    skipped: Sequence[_checkpoints.SkippedStep],
    info: Mapping[str, Any],
    *,
    steps_per_epoch: float | None = None,
) -> str:
  """The report's ``summary.md``: what was read, then one row per layer.

  Each row gives the layer's final cosine distance (at the last step read) and the
  first step where it exceeded each of :data:`THRESHOLDS` ("never" if it did not);
  then the most and least rotated layers at the end, and every skipped step.
  """
  steps = curves.steps
  finals = curves.latest()
  params_path = f"`{info['params_path']}`" if info["params_path"] else "the whole tree"
  lines = [
      f"# Layer rotation of `{info['directory']}`",
      "",
      f"- steps read: {len(steps)} ({steps[0]} to {steps[-1]})",
      (f"- reference step: {info['reference_step']} (cosine distance to the params "
       "saved then)"),
      (f"- params: {params_path}, {len(finals)} layers "
       f"(order: {info['layer_order_source']}, input layer first)"),
      f"- skipped steps: {len(skipped) or 'none'}",
      "",
  ]
  header = ["layer", "final cosine distance",
            *(f"first step > {t:g}" for t in THRESHOLDS)]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "---|" * len(header))
  for name, values in curves.values.items():
    crossings = [
        _format_step(first_step_above(steps, values, t), steps_per_epoch)
        for t in THRESHOLDS
    ]
    lines.append(f"| `{name}` | {values[-1]:.4f} | " + " | ".join(crossings) + " |")
  most = max(finals, key=lambda name: finals[name])
  least = min(finals, key=lambda name: finals[name])
  lines += [
      "",
      (f"Most rotated layer: `{most}` ({finals[most]:.4f}); least rotated: "
       f"`{least}` ({finals[least]:.4f})."),
  ]
  if skipped:
    lines += ["", "Skipped steps (could not be read):", ""]
    lines += [f"- step {s.step} at `{s.path}`: {s.reason}" for s in skipped]
  return "\n".join(lines) + "\n"


def _save_curves(
    path: pathlib.Path, curves: _curves.LayerRotationCurves,
    skipped: Sequence[_checkpoints.SkippedStep], info: Mapping[str, Any],
) -> None:
  """``curves.save`` (readable by ``LayerRotationCurves.load``) plus what was read."""
  curves.save(path)
  data = json.loads(path.read_text())
  data["checkpoints"] = {
      **info, "skipped": [dataclasses.asdict(s) for s in skipped]
  }
  path.write_text(json.dumps(data, indent=1))


def write_report(
    directory: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    *,
    params_path: str | None = None,
    reference_step: int | None = None,
    layer_order: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    steps_per_epoch: float | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    title: str | None = None,
    mask: Any = None,
    rotation_axes: Any = None,
) -> Report:
  """Reads a checkpoint directory and writes the curves, the figure and the summary.

  Args:
    directory: the checkpoint directory (given to ``CheckpointManager`` in training).
    out_dir: where to write ``curves.json``, ``layer_rotation.png``, ``summary.md``
      (created if needed).
    params_path, reference_step, layer_order, steps, mask, rotation_axes, skip_bad,
      progress: as in :func:`layca_optax.curves_from_checkpoints`.
    steps_per_epoch: if given, the figure's x axis is in epochs and the summary adds
      the epoch of each step.
    title: the figure's title (default: the directory's name).

  Returns:
    A :class:`Report`.
  """
  _plotting._matplotlib("layca_optax.report")  # checked before the (long) read
  curves, skipped, info = _checkpoints.read_curves(
      directory, params_path=params_path, reference_step=reference_step, mask=mask,
      layer_order=layer_order, rotation_axes=rotation_axes, steps=steps,
      skip_bad=skip_bad, progress=progress, caller="layca_optax.report",
  )
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  files = [out_dir / CURVES_FILE, out_dir / FIGURE_FILE, out_dir / SUMMARY_FILE]
  _save_curves(files[0], curves, skipped, info)
  axes = _plotting.plot_layer_rotation_curves(
      curves, steps_per_epoch=steps_per_epoch,
      title=title if title is not None else pathlib.Path(info["directory"]).name,
      legend=len(curves.values) <= MAX_LEGEND_LAYERS,
  )
  axes.figure.savefig(files[1], dpi=FIGURE_DPI)
  files[2].write_text(
      summary_markdown(curves, skipped, info, steps_per_epoch=steps_per_epoch)
  )
  return Report(curves, skipped, info, axes, files)


def _int_list(text: str) -> list[int]:
  try:
    return [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated step numbers, e.g. 0,100,200; got {text!r}"
    ) from None


def _layer_order(text: str) -> list[str]:
  """Comma-separated paths, or ``@FILE``: a JSON list or one path per line."""
  if not text.startswith("@"):
    return [s.strip() for s in text.split(",") if s.strip()]
  path = pathlib.Path(text[1:])
  if not path.is_file():
    raise argparse.ArgumentTypeError(f"--layer-order {text}: no file {str(path)!r}")
  content = path.read_text()
  if content.lstrip().startswith("["):
    return [str(p) for p in json.loads(content)]
  return [line.strip() for line in content.splitlines() if line.strip()]


def _positive(text: str) -> float:
  value = float(text)
  if not (value > 0 and math.isfinite(value)):
    raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
  return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command line (``--help`` documents every option)."""
  parser = argparse.ArgumentParser(
      prog="python -m layca_optax.report",
      description="Layer rotation curves and a short report from a run's orbax\n"
      "checkpoints: each layer's cosine distance to its params at a reference step\n"
      "(the initialisation if step 0 was saved). Writes curves.json,\n"
      "layer_rotation.png and summary.md to --out.",
      epilog="needs the checkpoint extra:\n"
      "  pip install 'layca_optax[checkpoint]'\n"
      "a checkpoint directory to try it on (the main job's runs, from a checkout):\n"
      "  python -m examples.mnist --checkpoint-dir /tmp/ck   # /tmp/ck/Layca_SGD, /tmp/ck/SGD\n"
      "  python -m layca_optax.report /tmp/ck/SGD --out /tmp/report\n"
      "Steps are read one at a time on the host (NumPy), params only. From Python,\n"
      "layca_optax.curves_from_checkpoints(...) also takes mask= and rotation_axes=.",
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
      "directory", type=pathlib.Path, metavar="CHECKPOINT_DIR",
      help="the directory given to orbax.checkpoint.CheckpointManager in training "
      "(one sub-directory per saved step)",
  )
  parser.add_argument(
      "--out", type=pathlib.Path, required=True, metavar="OUT_DIR",
      help="where to write curves.json, layer_rotation.png and summary.md (created)",
  )
  parser.add_argument(
      "--params-path", default=None, metavar="PATH",
      help="where the params are in each step's tree, '/'-separated: 'params' (Linen "
      "TrainState or variables), 'state/params' (item 'state' of a composite "
      "checkpoint), '' for the whole tree (an NNX nnx.State saved alone). Default: "
      "the one obvious place (a 'params', else a 'model' subtree, else the whole tree); "
      "the error lists the candidates when there are several",
  )
  parser.add_argument(
      "--reference-step", type=int, default=None, metavar="STEP",
      help="the step every other is compared with (default: the first step read). "
      "The distance to the initialisation needs step 0 to have been saved",
  )
  parser.add_argument(
      "--layer-order", type=_layer_order, default=None, metavar="PATHS",
      help="the layers' paths from input to output, comma-separated, or @FILE (a JSON "
      "list or one path per line). Default: the 'layer_order' list saved in the "
      "checkpoint directory's metadata (CheckpointManager(dir, metadata=...)), else "
      "the paths' natural order (Dense_2 before Dense_10)",
  )
  parser.add_argument(
      "--steps", type=_int_list, default=None, metavar="STEPS",
      help="only these saved steps, comma-separated (default: every saved step)",
  )
  parser.add_argument(
      "--steps-per-epoch", type=_positive, default=None, metavar="N",
      help="draw the x axis in epochs (step / N) and give epochs in the summary",
  )
  parser.add_argument(
      "--skip-bad", action="store_true",
      help="skip a step that cannot be read (corrupt or truncated files) instead of "
      "stopping; skipped steps are printed and listed in summary.md and curves.json. "
      "Steps without params or with other layer shapes stop the report either way",
  )
  parser.add_argument("--title", default=None, help="figure title (default: the "
                      "checkpoint directory's name)")
  parser.add_argument("--no-progress", action="store_true",
                      help="hide the progress bar over checkpoints")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Report:
  """Runs the command; bad input exits with status 2 and the error on stderr."""
  args = parse_args(argv)
  # orbax logs routine notes ("Given directory is read only") through absl, and when
  # one array of a corrupt step fails to load it leaves the other reads' errors to
  # asyncio's "exception was never retrieved" log: the report prints the step's error.
  logging.getLogger("absl").setLevel(logging.ERROR)
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)
  try:
    report = write_report(
        args.directory, args.out, params_path=args.params_path,
        reference_step=args.reference_step, layer_order=args.layer_order,
        steps=args.steps, steps_per_epoch=args.steps_per_epoch,
        skip_bad=args.skip_bad, progress=not args.no_progress, title=args.title,
    )
  except (ImportError, OSError, ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from e
  for bad in report.skipped:
    print(f"skipped step {bad.step} at {bad.path}: {bad.reason}")
  print(report.files[2].read_text())
  for path in report.files:
    print(f"wrote {path}")
  return report


if __name__ == "__main__":
  main()
