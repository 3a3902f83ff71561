"""Every test here needs the eight simulated devices (``LAYCA_TEST_DEVICES=8``)."""

import jax
import pytest


@pytest.fixture(autouse=True)
def eight_devices():
  if jax.device_count() < 8:
    pytest.fail(
        "tests/multidevice needs 8 devices: run LAYCA_TEST_DEVICES=8 python -m pytest "
        "tests/multidevice (tests/test_multidevice.py does)."
    )
