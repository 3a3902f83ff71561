"""README.md and .ci/run agree: CI runs the README's test command, word for word."""

import pathlib
import re
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _commands(text):
  return [line.strip() for line in text.splitlines() if "pytest" in line and "pip install" in line and "&&" in line]


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  [command] = [c for c in _commands(readme) if not c.startswith("#")]
  ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
  assert command in ci_lines


def test_readme_main_job_module_exists():
  readme = (ROOT / "README.md").read_text()
  modules = re.findall(r"python3 -m (examples\.\w+)", readme)
  assert modules
  for module in modules:
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


def _python_blocks(text):
  return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(_python_blocks((ROOT / "README.md").read_text()))))
def test_every_python_block_of_the_readme_runs_as_written(index, tmp_path, capsys):
  pytest.importorskip("flax")
  block = _python_blocks((ROOT / "README.md").read_text())[index]
  script = tmp_path / "block.py"
  script.write_text(block)
  runpy.run_path(str(script), run_name="__main__")  # a NameError or any other error fails
  assert capsys.readouterr().out  # each block prints what it shows


def test_the_readme_has_python_blocks():
  assert _python_blocks((ROOT / "README.md").read_text())
