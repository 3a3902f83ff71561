"""Runs ``tests/multidevice`` in a pytest process of its own, on 8 simulated CPU devices.

Devices are configured once per process, before JAX starts, so the multi-device tests
cannot share a process with the single-device ones. In their own process, an abort inside
XLA (seen once in CI, in an eager call on a 2-D mesh of 8 simulated devices on 2 loaded
cores: XLA's CPU all-reduce gives up after a 40 s rendezvous timeout and exits) fails
this test with the child's output instead of killing a pytest worker.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_multidevice_tests_pass_on_eight_devices():
  env = dict(os.environ, LAYCA_TEST_DEVICES="8")
  command = [
      sys.executable, "-m", "pytest", "tests/multidevice", "-q", "-n", "0",
      "-p", "no:cacheprovider", "--durations=5",
  ]
  try:
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
  except subprocess.TimeoutExpired as e:
    pytest.fail(f"tests/multidevice did not finish in 900 s:\n{e.stdout}\n{e.stderr}")
  print(result.stdout[-4000:])
  assert result.returncode == 0, f"{result.stdout[-12000:]}\n{result.stderr[-4000:]}"
  assert " passed" in result.stdout
