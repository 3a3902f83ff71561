"""The Colab notebooks in ``notebooks/``: their layout, and a full run of each with tiny settings.

Each notebook is executed top to bottom in a fresh ``python3`` Jupyter kernel (nbclient, the
kernel of the running interpreter: ipykernel is in the ``notebooks`` extra), from the
``notebooks/`` directory, as a user of a local checkout would run it. Before the run,

* cells tagged ``skip-execution`` are dropped (the Colab install cell, ``%tensorboard``);
* a cell setting tiny values (:data:`TINY_PARAMETERS`) is inserted right after the cell
  tagged ``parameters``, the papermill convention, so the notebook's own defaults stay
  Colab-sized.

A cell that raises fails the test with the cell's traceback.
"""

from __future__ import annotations

import os
import pathlib

import pytest

# jupyter_core 5.x before 5.8 warns (DeprecationWarning, an error under this suite's
# filterwarnings) that it will move its directories to platformdirs: opt in to them.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("flax")
pytest.importorskip("matplotlib")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ("quickstart.ipynb", "paper_tour.ipynb")
COLAB_URL = "https://colab.research.google.com/github/layca-optax/layca_optax/blob/main/notebooks/"

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
CELL_TIMEOUT = 600  # seconds, per cell (a loaded CI machine compiles slowly)


def read(name: str):
  return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def tags(cell) -> list[str]:
  return list(cell.get("metadata", {}).get("tags", []))


def prepared(name: str):
  """The notebook as the tests run it: skipped cells dropped, tiny parameters injected."""
  notebook = read(name)
  cells = []
  for cell in notebook.cells:
    if "skip-execution" in tags(cell):
      continue
    cells.append(cell)
    if "parameters" in tags(cell):
      cells.append(nbformat.v4.new_code_cell(
          TINY_PARAMETERS[name].strip(), metadata={"tags": ["injected-parameters"]}
      ))
  notebook.cells = cells
  return notebook


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_layout(name):
  """Title and Colab badge first, install cell skipped in tests, one parameters cell, no outputs."""
  notebook = read(name)
  nbformat.validate(notebook)
  first = notebook.cells[0]
  assert first.cell_type == "markdown"
  assert first.source.startswith("# ")
  assert f"({COLAB_URL}{name})" in first.source
  code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
  install = code_cells[0]
  assert "%pip install" in install.source
  assert "skip-execution" in tags(install)
  parameters = [cell for cell in code_cells if "parameters" in tags(cell)]
  assert len(parameters) == 1
  assert "# @param" in parameters[0].source
  for cell in code_cells:
    assert cell.outputs == [], f"{name} is committed with outputs: clear them."
    assert cell.execution_count is None, f"{name} is committed with execution counts."


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_tiny_settings(name):
  notebook = prepared(name)
  client = nbclient.NotebookClient(
      notebook,
      kernel_name="python3",
      timeout=CELL_TIMEOUT,
      resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
  )
  client.execute()  # raises CellExecutionError, with the traceback, if a cell fails
  errors = [
      output for cell in notebook.cells if cell.cell_type == "code"
      for output in cell.outputs if output.get("output_type") == "error"
  ]
  assert not errors
  figures = [
      output for cell in notebook.cells if cell.cell_type == "code"
      for output in cell.outputs if "image/png" in output.get("data", {})
  ]
  assert figures, f"{name} displayed no figure."
