"""The public API: explicit, sorted, versioned; the core needs only jax, optax and numpy."""

import subprocess
import sys

import layca_optax


def test_all_is_sorted_and_exported():
  assert layca_optax.__all__ == sorted(layca_optax.__all__)
  for name in layca_optax.__all__:
    assert hasattr(layca_optax, name), name
  assert isinstance(layca_optax.__version__, str)


def test_core_import_loads_no_optional_dependency():
  code = (
      "import sys, layca_optax; "
      "print(sorted(m for m in ('flax', 'matplotlib', 'tqdm', 'mlxtend') if m in sys.modules))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "[]"
