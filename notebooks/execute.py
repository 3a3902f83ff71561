"""Runs the notebooks top to bottom: with tiny settings for the tests, in full for the docs.

Each notebook is executed in a fresh ``python3`` Jupyter kernel (nbclient, the kernel of
the running interpreter: ipykernel is in the ``notebooks`` extra) from the ``notebooks/``
directory, as a user of a local checkout would run it. Before the run a cell is inserted
right after the cell tagged ``parameters`` (the papermill convention), so the notebook's
own defaults stay Colab-sized. Cells tagged ``skip-execution`` (the Colab install cell,
``%tensorboard``) are kept but not run.

* :func:`executed`: the tests' run (``tests/project/test_notebooks.py``), with
  :data:`TINY_PARAMETERS`: a few steps on a few images.
* :func:`render`: the documentation's copy, ``docs/notebooks/<name>`` (committed, shown by
  the docs build without running anything), run with the notebook's own settings and no
  progress bars (:data:`RENDER_PARAMETERS`). Regenerate it after changing a notebook:
  ``python -m notebooks.execute`` (about 2 minutes for the quickstart, 15 for the paper
  tour, on 2 CPU cores); a test fails while a copy's code differs from its notebook.
"""

from __future__ import annotations

import argparse
import os
import pathlib

# jupyter_core 5.x before 5.8 warns (DeprecationWarning) that it will move its
# directories to platformdirs: opt in to them.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent
ROOT = NOTEBOOK_DIR.parent
RENDERED_DIR = ROOT / "docs" / "notebooks"  # the docs' copies, run with the full settings
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


#: Inserted after each notebook's ``parameters`` cell for the docs' copy: the notebook's
#: own settings, without the progress bars (Jupyter widgets, which a page shows only
#: with scripts from the network).
RENDER_PARAMETERS = """
# The documentation's copy of this notebook ran with the settings above, without
# progress bars (python -m notebooks.execute).
PROGRESS = False
"""


def prepared(name: str, parameters: str, *, drop_skipped: bool = True):
  """The notebook as it is run: ``parameters`` injected after the ``parameters`` cell.

  ``drop_skipped`` removes the cells tagged ``skip-execution`` (the tests); otherwise
  they stay in the notebook, unexecuted (the docs show the install cell).
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
          parameters.strip(), metadata={"tags": [INJECTED_TAG]}
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


def executed(name: str):
  """``notebooks/<name>`` run with the tests' tiny settings (:data:`TINY_PARAMETERS`)."""
  return execute(prepared(name, TINY_PARAMETERS[name]))


def code_sources(notebook) -> list[str]:
  """The sources of the code cells, without the injected parameters cell."""
  return [
      cell.source for cell in notebook.cells
      if cell.cell_type == "code" and INJECTED_TAG not in tags(cell)
  ]


def render(name: str) -> pathlib.Path:
  """Writes ``docs/notebooks/<name>``: the notebook run with its own settings."""
  import nbformat

  notebook = execute(prepared(name, RENDER_PARAMETERS, drop_skipped=False))
  target = RENDERED_DIR / name
  target.parent.mkdir(parents=True, exist_ok=True)
  nbformat.write(notebook, target)
  return target


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Renders the docs' copies of the notebooks.")
  parser.add_argument("names", nargs="*", default=list(NOTEBOOKS), choices=NOTEBOOKS)
  for name in parser.parse_args(argv).names:
    print(f"wrote {render(name)}", flush=True)


if __name__ == "__main__":
  main()
