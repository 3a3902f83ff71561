"""Global JAX settings for the tests (as equinox does): fail loudly on implicit rank promotion,
eight CPU devices."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# Eight simulated CPU devices for the multi-device tests (must precede any JAX operation).
jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture
def key():
  return jax.random.key(0)
