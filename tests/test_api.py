"""The public API: explicit, sorted, versioned; the core needs only jax, optax and numpy."""

import subprocess
import sys

import jax.numpy as jnp
import optax
import pytest

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


@pytest.mark.parametrize(
    "name", ["LaycaState", "PARALLEL_RTOL", "whole_leaf_axes", "leaf_paths", "leaves_by_path"]
)
def test_removed_names_still_work_for_one_release_with_a_deprecation_warning(name):
  with pytest.warns(DeprecationWarning, match=f"layca_optax.{name} is deprecated"):
    value = getattr(layca_optax, name)
  assert value is not None
  assert name not in layca_optax.__all__


def test_the_deprecated_names_do_what_they_did():
  tree = {"b": {"kernel": jnp.ones((2, 3))}, "a": jnp.ones(2)}
  with pytest.warns(DeprecationWarning):
    assert layca_optax.leaf_paths(tree) == ["a", "b/kernel"]
  with pytest.warns(DeprecationWarning):
    assert list(layca_optax.leaves_by_path(tree)) == ["a", "b/kernel"]
  with pytest.warns(DeprecationWarning):
    assert layca_optax.whole_leaf_axes(tree) == {"a": (0,), "b": {"kernel": (0, 1)}}
  with pytest.warns(DeprecationWarning):
    assert layca_optax.LaycaState is layca_optax.ScaleByLaycaState


def test_the_base_keyword_is_deprecated_for_base_optimizer():
  params = {"w": jnp.eye(2)}
  grads = {"w": jnp.ones((2, 2))}
  with pytest.warns(DeprecationWarning, match="base_optimizer"):
    old = layca_optax.layca(0.1, base=optax.trace(0.9))
  new = layca_optax.layca(0.1, base_optimizer=optax.trace(0.9))
  a, _ = old.update(grads, old.init(params), params)
  b, _ = new.update(grads, new.init(params), params)
  assert (a["w"] == b["w"]).all()
  with pytest.raises(TypeError, match="base_optimizer only"):
    layca_optax.layca(0.1, base=optax.identity(), base_optimizer=optax.identity())
