"""Data-parallel training with Layca: ``jax.jit`` over a batch split across every device.

The params (and so the optimizer state) are replicated, ``NamedSharding(mesh, P())``;
each batch is split along its first axis over a one-axis mesh, ``P('data')``. Nothing
else changes: ``jax.jit`` sees the shardings and inserts the one all-reduce that the
gradient needs, and Layca's per-layer norms are computed on replicated arrays, so
``layca`` needs no ``axis_name``. The script trains the same model twice, on all local
devices and on one, and prints how far apart the two runs end (float32 rounding only).

Run from the repository root::

  python -m examples.data_parallel                   # all local devices
  python -m examples.data_parallel --cpu-devices 8   # 8 simulated devices on a CPU

On several hosts, call ``jax.distributed.initialize()`` first, build the same mesh over
``jax.devices()`` (all hosts' devices) and give each host's part of the batch to
``jax.make_array_from_process_local_data(batch_sharding, local_batch)``; see the README.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import layca_optax
from examples import data as data_lib
from examples import models, training

LEARNING_RATE = 3.0**-3  # SGD + Layca, the paper's best


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A one-axis mesh ``'data'`` over the first ``num_devices`` devices (default: all)."""
  num_devices = jax.device_count() if num_devices is None else num_devices
  return jax.make_mesh((num_devices,), ("data",), devices=jax.devices()[:num_devices])


def replicated_mlp(
    data: data_lib.Dataset, mesh: jax.sharding.Mesh, batch_size: int, *, hidden: int,
    seed: int = 0,
) -> nnx.Module:
  """An MLP for ``data`` with its params replicated over ``mesh``, ``NamedSharding(mesh, P())``.

  Raises if ``batch_size`` does not split evenly over the mesh's devices.
  """
  if batch_size % mesh.size:
    raise ValueError(
        f"batch_size={batch_size} must be a multiple of the {mesh.size} devices of the mesh, "
        f"so that every device gets the same number of examples: e.g. --batch-size "
        f"{mesh.size * max(1, batch_size // mesh.size)}."
    )
  in_features = int(np.prod(data.x_train.shape[1:]))
  model = models.MLP(hidden, data.num_classes, in_features, rngs=nnx.Rngs(seed))
  # The optimizer state created from replicated params is replicated too.
  nnx.update(model, jax.device_put(nnx.state(model), NamedSharding(mesh, P())))
  return model


def train(
    data: data_lib.Dataset,
    mesh: jax.sharding.Mesh,
    *,
    steps: int,
    batch_size: int,
    hidden: int = 64,
    seed: int = 0,
) -> tuple[nnx.State, nnx.State, list[float]]:
  """Trains an MLP with Layca on ``mesh``.

  Returns:
    The initial and final params (NumPy copies) and the loss of every step.
  """
  model = replicated_mlp(data, mesh, batch_size, hidden=hidden, seed=seed)
  optimizer = nnx.Optimizer(
      model, layca_optax.layca(LEARNING_RATE, base_optimizer=optax.trace(0.9)), wrt=nnx.Param
  )
  batch_sharding = NamedSharding(mesh, P("data"))  # split the batch axis over devices

  init_params = jax.tree.map(np.asarray, training.params_of(model))  # a copy on the host
  losses = []
  rng = np.random.default_rng(seed)
  while len(losses) < steps:
    for x, y in data_lib.batches(data.x_train, data.y_train, batch_size, rng):
      x, y = jax.device_put((x, y), batch_sharding)
      loss, _ = training.train_step(model, optimizer, x, y)  # jit sees the shardings
      losses.append(float(loss))
      if len(losses) == steps:
        break
  return init_params, jax.tree.map(np.asarray, training.params_of(model)), losses


def max_relative_difference(a: Any, b: Any) -> float:
  """Largest ``||a - b|| / ||b||`` (per leaf) between two params trees on the host."""
  return max(
      float(np.linalg.norm(x - y) / np.linalg.norm(y))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--cpu-devices", type=int, default=None,
                      help="simulate this many CPU devices (before JAX starts)")
  args = parser.parse_args(argv)
  if args.cpu_devices is not None:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)

  data = data_lib.synthetic_dataset(num_train=512)
  mesh = data_mesh()
  init, params, losses = train(data, mesh, steps=args.steps, batch_size=args.batch_size)
  _, one_device, _ = train(
      data, data_mesh(1), steps=args.steps, batch_size=args.batch_size
  )
  distances = layca_optax.cosine_distance(params, init, mask=layca_optax.default_mask)
  difference = max_relative_difference(params, one_device)

  print(f"{mesh.size} devices, batch {args.batch_size} split {args.batch_size // mesh.size} "
        "per device")
  print(f"loss: {losses[0]:.3f} (step 1) -> {losses[-1]:.3f} (step {len(losses)})")
  for path, value in training.by_path(distances).items():
    print(f"  cosine distance to init of {path}: {float(value):.3f}")
  print(f"largest relative difference to the one-device run: {difference:.1e}")
  return {"num_devices": mesh.size, "losses": losses, "params": params,
          "one_device_params": one_device, "relative_difference": difference}


if __name__ == "__main__":
  main()
