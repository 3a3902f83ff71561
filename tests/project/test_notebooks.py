"""The Colab notebooks in ``notebooks/``: their layout, and a full run of each with tiny settings.

Each notebook is executed top to bottom in a fresh ``python3`` Jupyter kernel (nbclient, the
kernel of the running interpreter: ipykernel is in the ``notebooks`` extra), from the
``notebooks/`` directory, as a user of a local checkout would run it. Before the run,

* cells tagged ``skip-execution`` are skipped (the Colab install cell, ``%tensorboard``);
* a cell setting tiny values (``notebooks/execute.py``'s ``TINY_PARAMETERS``) is inserted
  right after the cell tagged ``parameters``, the papermill convention, so the notebook's
  own defaults stay Colab-sized.

A cell that raises fails the test with the cell's traceback.
"""

from __future__ import annotations

import os

import pytest

# jupyter_core 5.x before 5.8 warns (DeprecationWarning, an error under this suite's
# filterwarnings) that it will move its directories to platformdirs: opt in to them.
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("flax")
pytest.importorskip("matplotlib")

# The tiny settings and the way the notebooks are run are shared with the docs build.
from notebooks.execute import NOTEBOOKS, executed, read, tags

pytestmark = pytest.mark.slow  # end-to-end runs: seconds to minutes each

COLAB_URL = "https://colab.research.google.com/github/layca-optax/layca_optax/blob/main/notebooks/"


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
  # Raises CellExecutionError if a cell fails. The executed copy is kept (docs/notebooks/,
  # which the docs build renders) and reused until the notebook, its settings, the code or
  # the main packages' versions change: the suite and the docs run each notebook once.
  notebook = executed(name)
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
