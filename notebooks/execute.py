"""Runs the notebooks top to bottom with tiny settings: for the tests and the docs build.

Each notebook is executed in a fresh ``python3`` Jupyter kernel (nbclient, the kernel of
the running interpreter: ipykernel is in the ``notebooks`` extra) from the ``notebooks/``
directory, as a user of a local checkout would run it. Before the run a cell setting tiny
values (:data:`TINY_PARAMETERS`) is inserted right after the cell tagged ``parameters``
(the papermill convention), so the notebook's own defaults stay Colab-sized. Cells tagged
``skip-execution`` (the Colab install cell, ``%tensorboard``) are kept but not run.

``tests/project/test_notebooks.py`` runs them this way, and so does the documentation build
(``docs/conf.py``), which renders the executed copies with their figures. Both go through
:func:`executed`, which keeps the executed copy in ``docs/notebooks/`` (git-ignored) with
a key of everything the run depends on (the notebook, the settings, the Python files of
``layca_optax/``, ``examples/`` and ``notebooks/``, the versions of Python and the main
packages): the test suite and the docs build then run each notebook once, not twice, and
run it again as soon as any of those changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import pathlib
import sys

# jupyter_core 5.x before 5.8 warns (DeprecationWarning) that it will move its
# directories to platformdirs: opt in to them.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent
ROOT = NOTEBOOK_DIR.parent
EXECUTED_DIR = ROOT / "docs" / "notebooks"  # the executed copies, which the docs render
NOTEBOOKS = ("quickstart.ipynb", "paper_tour.ipynb")
SKIP_TAG = "skip-execution"
INJECTED_TAG = "injected-parameters"
CELL_TIMEOUT = 600  # seconds, per cell (a loaded CI machine compiles slowly)

#: Inserted after each notebook's ``parameters`` cell: a few steps on a few images.
TINY_PARAMETERS = {
    "quickstart.ipynb": """
TRAIN_IMAGES = 256
EPOCHS = 1
BATCH_SIZE = 64
STAGES = "4,8"
CONVS_PER_STAGE = 1
PROGRESS = False
""",
    "paper_tour.ipynb": """
DATA = "synthetic"
TRAIN_IMAGES = 64
EPOCHS = 1
BATCH_SIZE = 16
STAGES = "4,8"
CONVS_PER_STAGE = 1
PROGRESS = False
LAYCA_RATES = "3^-3"
ALPHAS = "-0.6,0"  # a list starting with "-" must still parse
SGD_RATES = "3^-1"
WEIGHT_DECAYS = "1e-2"
ADAPTIVE_METHODS = "adam"
MLP_RATES = "3^-2,3^-4"
MLP_HIDDEN = 16
MLP_EPOCHS = 1
""",
}


def tags(cell) -> list[str]:
  """The cell's tags (``metadata.tags``)."""
  return list(cell.get("metadata", {}).get("tags", []))


def read(name: str):
  """The notebook ``notebooks/<name>`` as stored (nbformat 4)."""
  import nbformat

  return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def prepared(name: str, *, drop_skipped: bool = True, comment: str = ""):
  """The notebook as it is run: tiny parameters injected after the ``parameters`` cell.

  ``drop_skipped`` removes the cells tagged ``skip-execution`` (the tests); otherwise
  they stay in the notebook, unexecuted (the docs show the install cell). ``comment``
  is written at the top of the injected cell.
  """
  import nbformat

  notebook = read(name)
  cells = []
  for cell in notebook.cells:
    if drop_skipped and SKIP_TAG in tags(cell):
      continue
    cells.append(cell)
    if "parameters" in tags(cell):
      cells.append(nbformat.v4.new_code_cell(
          comment + TINY_PARAMETERS[name].strip(), metadata={"tags": [INJECTED_TAG]}
      ))
  notebook.cells = cells
  return notebook


def execute(notebook, *, timeout: int = CELL_TIMEOUT):
  """Runs ``notebook`` in place, from ``notebooks/``; returns it with its outputs.

  Cells tagged ``skip-execution`` are not run. Raises ``nbclient``'s
  ``CellExecutionError``, with the cell's traceback, if a cell fails.
  """
  import nbclient

  client = nbclient.NotebookClient(
      notebook,
      kernel_name="python3",
      timeout=timeout,
      skip_cells_with_tag=SKIP_TAG,
      resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
  )
  client.execute()
  return notebook


#: Written at the top of the injected cell of the executed copies (the docs show it).
NOTE = (
    "# The documentation build runs this notebook with these small settings (the tests'\n"
    "# ones, notebooks/execute.py): its figures show a few steps on a few images. The\n"
    "# defaults above are the ones to use in Colab or Jupyter.\n"
)
KEY_PACKAGES = ("jax", "jaxlib", "optax", "flax", "numpy", "matplotlib", "tensorboardX")


def source_key(name: str) -> str:
  """A hash of everything the executed notebook ``name`` depends on."""
  digest = hashlib.sha256()
  digest.update((NOTEBOOK_DIR / name).read_bytes())
  digest.update((TINY_PARAMETERS[name] + NOTE + sys.version).encode())
  for package in KEY_PACKAGES:
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      digest.update(f"{package}=={importlib.metadata.version(package)}".encode())
  for folder in ("layca_optax", "examples", "notebooks"):
    for path in sorted((ROOT / folder).glob("*.py")):
      digest.update(path.name.encode() + path.read_bytes())
  return digest.hexdigest()


def executed(name: str):
  """``notebooks/<name>`` run with the tiny settings: from the cache, or run now.

  The run keeps the ``skip-execution`` cells (unexecuted) and shows :data:`NOTE` in the
  injected cell. A lock file makes a second process (a pytest-xdist worker, a docs build)
  wait for the first one's run instead of starting its own.
  """
  import nbformat

  key = source_key(name)
  target = EXECUTED_DIR / name
  EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
  with open(EXECUTED_DIR / f".{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if target.is_file():
      cached = nbformat.read(target, as_version=4)
      if cached.metadata.get("layca_execution", {}).get("source_key") == key:
        return cached
    notebook = execute(prepared(name, drop_skipped=False, comment=NOTE))
    notebook.metadata["layca_execution"] = {"source_key": key}
    partial = target.with_suffix(".partial")
    nbformat.write(notebook, partial)
    partial.replace(target)
    return notebook
