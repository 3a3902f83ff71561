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

# How the notebooks run: tiny settings for the tests, full ones for the docs copy.
from notebooks.execute import (  # noqa: E402  (after the importorskips)
  INJECTED_TAG,
  NOTEBOOKS,
  RENDERED_DIR,
  code_sources,
  executed,
  read,
  tags,
)

pytestmark = pytest.mark.slow  # end-to-end runs: seconds to minutes each

COLAB_URL = "https://colab.research.google.com/github/layca-optax/layca_optax/blob/main/notebooks/"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_layout(name):
  """Title and Colab link first, install cell skipped in tests, one parameters cell, no outputs."""
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
  notebook = executed(name)  # raises CellExecutionError if a cell fails
  assert not outputs_of(notebook, "error")
  figures = [o for o in outputs_of(notebook) if "image/png" in o.get("data", {})]
  assert figures, f"{name} displayed no figure."


def outputs_of(notebook, output_type=None):
  return [
      output for cell in notebook.cells if cell.cell_type == "code"
      for output in cell.outputs
      if output_type is None or output.get("output_type") == output_type
  ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_docs_copy_is_the_notebook_run_in_full(name):
  rendered = nbformat.read(RENDERED_DIR / name, as_version=4)
  assert code_sources(rendered) == code_sources(read(name)), (
      f"docs/notebooks/{name} was rendered from another version of notebooks/{name}: "
      f"run python -m notebooks.execute {name} and commit the result."
  )
  [injected] = [cell for cell in rendered.cells if INJECTED_TAG in tags(cell)]
  assert "PROGRESS = False" in injected.source
  assert not outputs_of(rendered, "error")
  widgets = [o for o in outputs_of(rendered) if any("widget" in k for k in o.get("data", {}))]
  assert not widgets, "the docs' copy shows widgets, which need scripts from the network"
  assert [o for o in outputs_of(rendered) if "image/png" in o.get("data", {})]
