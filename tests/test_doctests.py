"""Every docstring example of the public API runs and prints what it says."""

import doctest
import importlib

import pytest

MODULES = ["_axes", "_layca", "_layers", "_order", "_rotation", "_transforms", "_tree"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(f"layca_optax.{name}")
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
