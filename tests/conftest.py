"""Global JAX settings for the tests (as equinox does): implicit rank promotion raises.

The library's tests run on one device, as users' code mostly does. The multi-device tests
in ``tests/multidevice/`` need eight simulated CPU devices, which must be configured before
JAX starts: ``tests/test_multidevice.py`` runs them in a pytest process of their own (so a
crash inside XLA fails one test instead of taking a worker down). To run them directly:
``LAYCA_TEST_DEVICES=8 python -m pytest tests/multidevice``.

Compilation dominates the suite's time (most tests jit their own small steps), and many
tests compile the same programs again (a new optimizer object gives a new Python function,
but the same XLA program). Each pytest process therefore keeps JAX's persistent
compilation cache in a temporary directory of its own, removed at exit: a program compiled
twice in one process is compiled once. Measured on 2 cores, ``pytest -m "not slow"``: 197 s
without, 157 s with. The directory is never shared between processes (JAX writes its
entries without a lock unless eviction is on) nor kept between runs, so every run still
compiles everything it runs at least once.
"""

import atexit
import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

_COMPILATION_CACHE = tempfile.mkdtemp(prefix="layca-tests-jax-cache-")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

DEVICES = int(os.environ.get("LAYCA_TEST_DEVICES", "1"))
if DEVICES > 1:
  jax.config.update("jax_num_cpu_devices", DEVICES)  # must precede any JAX operation
else:
  collect_ignore = ["multidevice"]


@pytest.fixture
def key():
  return jax.random.key(0)


def pytest_collection_modifyitems(items):
  """Runs the end-to-end files (half their tests or more ``slow``) first.

  With ``--dist loadfile`` each file goes whole to one pytest-xdist worker, in this
  order: the long files start while the many short ones fill in the end, instead of one
  long file running alone at the end (the docs build and the multi-device child run
  started ~6 min into a 7 min 40 s run before; 6 min 47 s with this order). Within a
  file, the order is unchanged.
  """
  by_file: dict = {}
  for item in items:
    by_file.setdefault(item.path, []).append(item)

  def key(file_items):
    slow = sum(1 for item in file_items if item.get_closest_marker("slow"))
    return 2 * slow < len(file_items)

  ordered = sorted(by_file.values(), key=key)
  items[:] = [item for file_items in ordered for item in file_items]
