"""Layer bookkeeping: alpha multipliers, masks, depth order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layca_optax as lo
from layca_optax import _plan, _tree
from tests import reference


@pytest.mark.parametrize("alpha", [-1.0, -0.8, -0.3, 0.0, 0.1, 0.6, 1.0])
@pytest.mark.parametrize("num_layers", [1, 2, 5, 25])
def test_alpha_multipliers_match_reference(num_layers, alpha):
  np.testing.assert_allclose(
      lo.alpha_multipliers(num_layers, alpha),
      reference.multipliers(num_layers, alpha), rtol=1e-12,
  )


def test_alpha_multipliers_use_the_authors_factor_five():
  m = lo.alpha_multipliers(11, 0.6)
  np.testing.assert_allclose(m[0], 0.4**5)  # not 0.4 as the printed equation gives
  np.testing.assert_allclose(m[-1], 1.0)
  np.testing.assert_allclose(lo.alpha_multipliers(11, 0.6, depth_exponent=1.0)[0], 0.4)
  assert np.all(np.diff(m) > 0)  # alpha > 0: first layers slowest
  assert np.all(np.diff(lo.alpha_multipliers(11, -0.6)) < 0)  # alpha < 0: last slowest


def test_traced_multipliers_equal_numpy_ones_and_clip_bad_alpha():
  jitted = jax.jit(_plan.traced_multipliers, static_argnums=0)
  np.testing.assert_allclose(jitted(7, -0.4, 5.0), lo.alpha_multipliers(7, -0.4), rtol=1e-6)
  assert np.all(np.isfinite(jitted(7, 3.0, 5.0)))  # clipped, never NaN


@pytest.mark.parametrize("bad", [0, -2, 2.5])
def test_alpha_multipliers_reject_bad_layer_counts(bad):
  with pytest.raises(ValueError, match="num_layers"):
    lo.alpha_multipliers(bad, 0.0)


def test_default_mask_selects_kernels():
  params = {"k": jnp.zeros((2, 3)), "conv": jnp.zeros((3, 3, 1, 2)), "b": jnp.zeros(3),
            "s": jnp.zeros(())}
  assert _plan.LayerSpec("t")._mask(params) == (False, True, True, False)
  assert lo.default_mask(params) == {"k": True, "conv": True, "b": False, "s": False}


def test_prefix_and_callable_masks():
  params = {"enc": {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}, "head": jnp.zeros((2, 2))}
  # Leaves flatten as enc/b, enc/w, head.
  assert _plan.LayerSpec("t", {"enc": True, "head": False})._mask(params) == (True, True, False)
  by_name = lambda p: {"enc": {"w": True, "b": False}, "head": True}
  assert _plan.LayerSpec("t", by_name)._mask(params) == (False, True, True)


def test_natural_order_is_used_by_default_for_depth():
  paths = ["Dense_10/kernel", "Dense_2/kernel", "Dense_1/kernel", "Dense_1/bias"]
  depth = _plan.LayerSpec("t").depths(paths, (True, True, True, False))
  assert depth == (2, 1, 0, None)


def test_layer_order_may_name_non_layer_leaves():
  paths = ["a", "b", "c"]
  depth = _plan.LayerSpec("t", layer_order=["c", "b", "a"]).depths(paths, (True, False, True))
  assert depth == (1, None, 0)


def test_layer_order_must_be_strings():
  with pytest.raises(TypeError, match="list of path strings"):
    _plan.LayerSpec("t", layer_order="a").depths(["a"], (True,))


def test_duplicate_in_layer_order_is_an_error():
  with pytest.raises(ValueError, match="more than once"):
    _plan.LayerSpec("t", layer_order=["a", "b", "a"]).depths(["a", "b"], (True, True))


def test_paths_of_nested_containers():
  tree = {"layers": [{"kernel": 1.0}, {"kernel": 2.0}], "head": (3.0,)}
  assert _tree.leaf_paths(tree) == ["head/0", "layers/0/kernel", "layers/1/kernel"]


def test_errors_name_the_public_function_the_leaf_and_the_fix():
  params = {"w": jnp.zeros((2, 2), jnp.int32)}
  with pytest.raises(TypeError, match=r"^scale_by_layca: layer leaf 'w' has dtype int32.*mask="):
    lo.layca(0.1).init(params)
  with pytest.raises(ValueError, match=r"^project_orthogonal: `mask` must be a pytree of bools"):
    lo.project_orthogonal(mask={"x": True}).update(params, None, params)
