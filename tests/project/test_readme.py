"""README.md and .ci/run agree: CI runs the README's test command, word for word."""

import pathlib
import re

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
