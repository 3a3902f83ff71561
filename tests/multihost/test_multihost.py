"""Multi-process (multi-host) tests: several JAX processes on this machine, one mesh.

The scenarios run in processes of their own (``python -m tests.multihost.worker
SCENARIO...``, through ``examples.multihost.launch_processes``): 2 processes of 4 simulated
CPU devices (2 of 2 for ``pmap``), joined over 127.0.0.1 by ``jax.distributed`` with gloo
CPU collectives. Scenarios that share a process layout share one launch (a module-scoped
fixture; starting JAX in the processes is most of a scenario's cost), and each test
asserts on its own scenario's results; a checkpoint is restored in fresh processes. So the
devices of this pytest process do not matter, a crash inside XLA takes down a child and
not the pytest worker, and a hung collective is stopped by the timeout and fails the tests
that need it with every process's output.

The ``pmap`` tests run in subprocesses too, across two processes: that is how ``pmap``
runs on several hosts (each process maps over its local devices, collectives span all of
them), and it keeps them independent of the device count that ``tests/conftest.py`` gives
the pytest process.

Run them alone with ``python -m pytest tests/multihost -n 0`` (14 tests in 6 launches, 68 s
on 2 quiet cores; 2 min 48 s in 10 launches before the scenarios shared them;
``-m "not slow"``: the launcher's own 6 tests, a few seconds).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import numpy as np
import pytest

multihost = pytest.importorskip("examples.multihost")  # needs flax, for the example
pytest.importorskip("orbax.checkpoint")

TIMEOUT_S = 120
TOLERANCE = 1e-5  # relative, float32 rounding of a few steps (measured: 5e-8 to 5e-7)
ENV = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=os.pathsep.join(
        filter(None, [str(multihost.REPOSITORY_ROOT), os.environ.get("PYTHONPATH")])
    ),
)


def launch(commands, timeout=TIMEOUT_S):
  """``launch_processes``, retried once on a taken port; a failure fails the test."""
  for attempt in range(2):
    try:
      return multihost.launch_processes(commands, timeout=timeout, echo=False, env=ENV)
    except multihost.ProcessFailure as failure:
      taken = any(multihost.PORT_TAKEN in o for o in failure.outputs)
      if taken and attempt == 0:
        continue
      outputs = "\n".join(
          f"----- process {i} -----\n{o}" for i, o in enumerate(failure.outputs)
      )
      pytest.fail(f"{failure}\n{outputs}", pytrace=False)


def run_scenarios(*scenarios, processes=2, cpu_devices=4, extra=()):
  """Runs ``scenarios`` one after the other in the same ``processes`` processes.

  Returns ``{scenario: [each process's RESULT dict]}``.
  """
  port = multihost.free_port()
  commands = [
      [sys.executable, "-m", "tests.multihost.worker", *scenarios,
       "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
       "--process-id", str(i), "--cpu-devices", str(cpu_devices), *extra]
      for i in range(processes)
  ]
  outputs = launch(commands)
  results = {scenario: [] for scenario in scenarios}
  for output in outputs:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    found = [json.loads(line.removeprefix("RESULT ")) for line in lines]
    assert [r.pop("scenario") for r in found] == list(scenarios), output
    for scenario, result in zip(scenarios, found):
      results[scenario].append(result)
  for per_process in results.values():
    assert [r.pop("process") for r in per_process] == list(range(processes))
  return results


def run_scenario(scenario, **kwargs):
  """Runs one scenario; returns each process's ``RESULT`` dict."""
  return run_scenarios(scenario, **kwargs)[scenario]


def assert_all_processes_agree(results):
  for result in results[1:]:
    assert result == results[0]


# -- the launcher itself (fast) -----------------------------------------------------------


def python(code):
  return [sys.executable, "-c", code]


def test_launcher_collects_every_process_output():
  outputs = multihost.launch_processes(
      [python(f"print('hello from {i}')") for i in range(3)], timeout=60, echo=False
  )
  assert outputs == [f"hello from {i}\n" for i in range(3)]


def test_launcher_stops_the_others_when_one_process_fails():
  start = time.monotonic()
  with pytest.raises(multihost.ProcessFailure, match="process 1 of 2 exited with code 3") as e:
    multihost.launch_processes(
        [python("import time; time.sleep(60)"),
         python("import sys; print('bad input'); sys.exit(3)")],
        timeout=60, echo=False,
    )
  assert time.monotonic() - start < 30  # the sleeper was killed, not waited for
  assert "bad input" in str(e.value) and e.value.outputs[1] == "bad input\n"


def test_launcher_stops_every_process_after_the_timeout():
  with pytest.raises(multihost.ProcessFailure, match=r"processes \[0, 1\] were still running"):
    multihost.launch_processes(
        [python("import time; time.sleep(60)")] * 2, timeout=1, echo=False
    )


def test_launcher_stops_every_process_on_sigterm(tmp_path):
  import signal
  import threading

  if threading.current_thread() is not threading.main_thread():
    pytest.skip("signal handlers can only be set in the main thread")
  before = signal.getsignal(signal.SIGTERM)
  pid_file = tmp_path / "pid"

  def terminate_once_the_child_runs():
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  timer = threading.Thread(target=terminate_once_the_child_runs)
  timer.start()
  with pytest.raises(SystemExit) as exit_:
    multihost.launch_processes(
        [python(f"import os, time; open({str(pid_file)!r} + '.tmp', 'w').write("
                f"str(os.getpid())); os.replace({str(pid_file)!r} + '.tmp', "
                f"{str(pid_file)!r}); time.sleep(60)")],
        timeout=60, echo=False,
    )
  timer.join()
  assert exit_.value.code == 128 + signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before
  child = int(pid_file.read_text())
  with pytest.raises(ProcessLookupError):  # killed and reaped
    os.kill(child, 0)


# -- multi-process scenarios (slow: each starts JAX in 2 processes) ------------------------


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("multihost-checkpoint")


@pytest.fixture(scope="module")
def two_by_four(checkpoint_dir):
  """The scenarios on 2 processes of 4 devices, one launch; the checkpoint saved last."""
  return run_scenarios(
      "data_parallel", "model_parallel", "shard_map_axis_name", "checkpoint",
      extra=["--out", str(checkpoint_dir), "--phase", "save"],
  )


@pytest.mark.slow
def test_data_parallel_across_processes_matches_one_device(two_by_four):
  results = two_by_four["data_parallel"]
  assert_all_processes_agree(results)
  result = results[0]
  assert result["relative_difference"] < TOLERANCE
  assert result["devices"] == 8 and result["replicated"]
  assert result["rows_per_process"] == 16  # each process fed half of the 32-row batch


@pytest.fixture(scope="module")
def model_parallel(two_by_four):
  results = two_by_four["model_parallel"]
  assert_all_processes_agree(results)
  return results[0]


@pytest.mark.slow
def test_kernel_sharded_across_processes_matches_one_device(model_parallel):
  assert model_parallel["relative_difference"] < TOLERANCE
  assert model_parallel["conv_processes"] == 2  # the conv kernel really spans processes
  assert model_parallel["conv_local_shape"] == [3, 3, 2, 2]
  assert model_parallel["specs_kept"] and model_parallel["momentum_specs_kept"]


@pytest.mark.slow
def test_rotation_measures_on_trees_sharded_across_processes(model_parallel):
  for name in ("distance", "angle", "rates"):
    assert model_parallel[name] < TOLERANCE, name
  assert model_parallel["curves_start"] == 0.0
  assert model_parallel["curves"] < 1e-6
  assert model_parallel["smallest_angle"] > 1e-2  # every kernel moved: not a trivial match


@pytest.mark.slow
def test_shard_map_with_axis_name_across_processes_equals_the_global_result(two_by_four):
  results = two_by_four["shard_map_axis_name"]
  assert_all_processes_agree(results)
  result = results[0]
  assert result["with_axis_name"] < TOLERANCE and result["distance"] < TOLERANCE
  # Without axis_name each device rotates its own slice: another algorithm.
  assert result["without_axis_name"] > 1e-2


@pytest.mark.slow
def test_checkpoint_saved_by_two_processes_restores_in_one_two_and_four(
    two_by_four, checkpoint_dir
):
  tmp_path, out = checkpoint_dir, ["--out", str(checkpoint_dir)]
  assert all(r["phase"] == "save" and r["specs_kept"] for r in two_by_four["checkpoint"])
  saved = np.load(tmp_path / "state_save_2.npz")
  final = np.load(tmp_path / "final_save_2.npz")
  for processes, devices in ((2, 4), (1, 8), (4, 2)):  # always a 2x4 mesh
    results = run_scenario(
        "checkpoint", processes=processes, cpu_devices=devices,
        extra=[*out, "--phase", "restore"],
    )
    assert all(r["specs_kept"] and r["step_count"] == 6 for r in results)
    restored = np.load(tmp_path / f"state_restore_{processes}.npz")
    assert saved.files == restored.files
    for name in saved.files:  # params, momentum, step count, initial norms: exact
      assert np.array_equal(saved[name], restored[name]), (processes, name)
    continued = np.load(tmp_path / f"final_restore_{processes}.npz")
    if processes == 2:  # the same processes: the continuation is bit-identical
      for name in final.files:
        assert np.array_equal(final[name], continued[name]), name
    else:  # other collectives may sum in another order (measured: 0 with 4, 2.4e-7 with 1)
      for name in final.files:
        np.testing.assert_allclose(continued[name], final[name], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def pmap_runs():
  """Both pmap scenarios on 2 processes of 2 devices, one launch."""
  return run_scenarios("pmap_data_parallel", "pmap_axis_name", cpu_devices=2)


@pytest.mark.slow
def test_pmap_replicated_params_and_its_shard_map_replacement(pmap_runs):
  results = pmap_runs["pmap_data_parallel"]
  assert_all_processes_agree(results)
  result = results[0]
  assert result["pmap"] < TOLERANCE and result["replicas_equal"]
  assert result["shard_map"] < TOLERANCE  # grad of the pmean-ed loss, check_vma=True
  assert result["shard_map_pmap_body"] < TOLERANCE  # pmap's body with check_vma=False...
  assert result["pmap_vs_shard_map_pmap_body"] == 0.0  # ...is what pmap runs
  # pmap's body under check_vma=True: the gradient is already summed, pmean keeps the sum.
  assert result["shard_map_pmap_body_vma"] > 1e-2


@pytest.mark.slow
def test_pmap_with_every_leaf_split_and_axis_name_equals_the_global_result(pmap_runs):
  results = pmap_runs["pmap_axis_name"]
  for result in results:  # each process checks its own devices' slices
    assert result["with_axis_name"] < TOLERANCE
    assert result["without_axis_name"] > 1e-2


# -- the example ---------------------------------------------------------------------------


@pytest.mark.slow
def test_multihost_example_matches_one_process(tmp_path):
  pytest.importorskip("mlxtend")
  command = [sys.executable, "-m", "examples.multihost", "--processes", "2",
             "--cpu-devices", "4", "--epochs", "1", "--batch-size", "64",
             "--data-limit", "1024", "--hidden", "32", "--no-progress",
             "--out", str(tmp_path)]
  (output,) = launch([command], timeout=2 * TIMEOUT_S)
  assert output.count("restored bit-identical") == 2, output
  difference = re.search(r"relative difference of the params to the one-process run: (\S+)",
                         output)
  assert difference and float(difference.group(1)) < TOLERANCE, output
  assert (tmp_path / "layer_rotation.png").stat().st_size > 0
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["processes"] == 2 and results["devices"] == 8
  assert results["losses"][-1] < results["losses"][0]


def test_multihost_example_refuses_bad_process_counts(capsys):
  with pytest.raises(SystemExit) as exit_:
    multihost.parse_args(["--processes", "0"])
  assert exit_.value.code == 2
  assert "--processes and --cpu-devices must be at least 1" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    multihost.parse_args(["--coordinator", "127.0.0.1:1", "--num-processes", "2",
                          "--process-id", "2"])
  assert "--process-id must be in [0, --num-processes)" in capsys.readouterr().err


def test_multihost_example_refuses_a_taken_port(tmp_path):
  import socket

  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert not multihost.port_is_free(port)
    with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is taken"):
      multihost.main(["--port", str(port), "--out", str(tmp_path)])
