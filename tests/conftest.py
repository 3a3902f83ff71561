"""Global JAX settings for the tests (as equinox does): fail loudly on implicit rank promotion."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
  return jax.random.key(0)
