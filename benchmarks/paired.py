"""Layca of an earlier commit against this checkout's, timed in the same process and rounds.

    python -m benchmarks.paired --old-commit 7b1e223 [--trees vgg18m blocks288] [--rounds 30]
    python -m benchmarks.paired --old-tree DIR   # DIR/layca_optax: any copy of the package

Two separate ``benchmarks.run`` processes differ by the machine's drift between them: on
the 2-core CPU the same core (7b1e223) measured 1.55x and 1.47x SGD with momentum on
vgg18m in two runs, and 2.00x and 1.63x on blocks288; a 3-5 % step difference between two
commits is lost in that, and this script found one (scalar sums,
``benchmarks/results_issue23_paired.txt``). Here both versions are
compiled in one process and timed in the same alternating rounds (``benchmarks.run``'s
protocol, gradients cycling over 4 sets), next to ``optax.sgd(momentum=0.9)``; the figure
is the median over rounds of new time / old time, with its quartiles.

The earlier version is ``git archive REV layca_optax`` (or ``DIR/layca_optax``) copied into
a temporary directory as the package ``layca_previous``, its absolute imports renamed, so
both import side by side. Its ``layca`` may name the base optimizer ``base`` (before
``base_optimizer``); both spellings are handled.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from types import ModuleType

import jax
import jax.numpy as jnp
import optax

import layca_optax as lo
from benchmarks import run, trees

PREVIOUS = "layca_previous"
REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def _copy_renamed(source: pathlib.Path, target: pathlib.Path) -> None:
  """``source`` (a ``layca_optax`` package directory) as package ``target``."""
  shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
  for path in target.rglob("*.py"):
    path.write_text(re.sub(r"\blayca_optax\b", PREVIOUS, path.read_text()))


def load_previous(*, commit: str | None = None, tree: str | pathlib.Path | None = None,
                  workdir: str | pathlib.Path) -> ModuleType:
  """Imports ``layca_optax`` of ``commit`` (or of ``tree/layca_optax``) as ``layca_previous``."""
  workdir = pathlib.Path(workdir)
  if (commit is None) == (tree is None):
    raise ValueError("pass one of commit= (e.g. 7b1e223) and tree= (a directory).")
  if commit is not None:
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", commit, "layca_optax"],
        capture_output=True, check=False,
    )
    if archive.returncode:
      raise ValueError(f"git archive {commit} failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
      tar.extractall(workdir / "archive", filter="data")
    tree = workdir / "archive"
  _copy_renamed(pathlib.Path(tree) / "layca_optax", workdir / PREVIOUS)
  for loaded in [m for m in sys.modules if m.split(".")[0] == PREVIOUS]:
    del sys.modules[loaded]  # an earlier load, from another directory
  sys.path.insert(0, str(workdir))
  try:
    return importlib.import_module(PREVIOUS)
  finally:
    sys.path.remove(str(workdir))


def layca_of(module: ModuleType, base: optax.GradientTransformation | None = None):
  """``module.layca(run.LR)`` on ``base``, whichever name its ``layca`` gives the base."""
  if base is None:
    return module.layca(run.LR)
  parameters = inspect.signature(module.layca).parameters
  keyword = "base_optimizer" if "base_optimizer" in parameters else "base"
  return module.layca(run.LR, **{keyword: base})


def compare(previous: ModuleType, tree_names, settings: run.Settings, log=print) -> dict:
  """Per tree, per base: each version's ratio to SGD-momentum and new / old, same rounds."""
  results = {}
  for name in tree_names:
    full, quick = trees.TREES[name]
    params_np = (quick if settings is run.QUICK else full)()
    grads = [jax.tree.map(jnp.array, trees.random_like(params_np, seed=1 + i)) for i in range(4)]
    optimizers = {run.REFERENCE: optax.sgd(run.LR, momentum=0.9)}
    for label, base in (("layca", None), ("layca(trace)", optax.trace(0.9))):
      optimizers[f"old {label}"] = layca_of(previous, base)
      optimizers[f"new {label}"] = layca_of(lo, base)
    candidates = []
    for label, tx in optimizers.items():
      log(f"{name}: compiling {label}")
      candidates.append(run.OptimizerCandidate(label, tx, params_np, grads, settings))
    timing = run.time_alternating(candidates, run.REFERENCE, settings, settings.rounds)
    compile_s = {c.name: c.compile_s for c in candidates}
    results[name] = {}
    for label in ("layca", "layca(trace)"):
      old, new = timing[f"old {label}"], timing[f"new {label}"]
      same_round = [b / a for a, b in zip(old["seconds"], new["seconds"])]
      q1, median, q3 = statistics.quantiles(same_round, n=4, method="inclusive")
      results[name][label] = {
          "old": old["ratio"], "new": new["ratio"], "new_over_old": median,
          "new_over_old_q1": q1, "new_over_old_q3": q3,
          "compile_old_s": compile_s[f"old {label}"], "compile_new_s": compile_s[f"new {label}"],
      }
  return results


def format_results(results: dict) -> str:
  lines = [f"{'tree':<20} {'candidate':<13} {'old x sgd_mom':>13} {'new x sgd_mom':>13} "
           f"{'new / old (q1-q3)':>22} {'compile s old -> new':>21}"]
  for tree, by_label in results.items():
    for label, r in by_label.items():
      lines.append(
          f"{tree:<20} {label:<13} {r['old']:>13.2f} {r['new']:>13.2f} "
          f"{r['new_over_old']:>8.3f} ({r['new_over_old_q1']:.3f}-{r['new_over_old_q3']:.3f}) "
          f"{r['compile_old_s']:>10.1f} -> {r['compile_new_s']:.1f}"
      )
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--old-commit", help="a revision of this repository, e.g. 7b1e223")
  source.add_argument("--old-tree", help="a directory holding a layca_optax package")
  parser.add_argument("--trees", nargs="*", choices=list(trees.TREES),
                      default=["vgg18m", "blocks288", "transformer_stacked", "transformer_1000"])
  parser.add_argument("--rounds", type=int, default=30)
  parser.add_argument("--quick", action="store_true", help="tiny trees, 2 rounds")
  args = parser.parse_args(argv)
  settings = run.QUICK if args.quick else run.Settings(
      **{**vars(run.FULL), "rounds": args.rounds}
  )
  with tempfile.TemporaryDirectory() as workdir:
    previous = load_previous(commit=args.old_commit, tree=args.old_tree, workdir=workdir)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; old: "
          f"{args.old_commit or args.old_tree}, new: {REPOSITORY}; {settings.rounds} rounds")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    print(format_results(compare(previous, args.trees, settings, log)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
