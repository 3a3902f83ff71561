"""Every docstring example of the public API runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import layca_optax

# Every private implementation module holds public functions, each with an example.
MODULES = sorted(
    m.name for m in pkgutil.iter_modules(layca_optax.__path__) if m.name.startswith("_")
)


def test_every_module_is_collected():
  assert {"_layca", "_measure", "_curves", "_plotting", "_logging", "_rates", "_plan"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(f"layca_optax.{name}")
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
