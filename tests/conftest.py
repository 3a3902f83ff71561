"""Global JAX settings for the tests (as equinox does): implicit rank promotion raises.

The library's tests run on one device, as users' code mostly does. The multi-device tests
in ``tests/multidevice/`` need eight simulated CPU devices, which must be configured before
JAX starts: ``tests/test_multidevice.py`` runs them in a pytest process of their own (so a
crash inside XLA fails one test instead of taking a worker down). To run them directly:
``LAYCA_TEST_DEVICES=8 python -m pytest tests/multidevice``.
"""

import os

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

DEVICES = int(os.environ.get("LAYCA_TEST_DEVICES", "1"))
if DEVICES > 1:
  jax.config.update("jax_num_cpu_devices", DEVICES)  # must precede any JAX operation
else:
  collect_ignore = ["multidevice"]


@pytest.fixture
def key():
  return jax.random.key(0)
