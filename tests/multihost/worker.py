"""One process of a multi-process test: ``python -m tests.multihost.worker SCENARIO [...]``.

``test_multihost.py`` starts this module in N processes (``examples.multihost.
launch_processes``); they join over 127.0.0.1 with gloo CPU collectives, run the given
scenarios one after the other on meshes that span them (one start of JAX in every process
for several scenarios: starting the processes is most of a scenario's cost), and each
process prints one line ``RESULT {json}`` per scenario with what it measured. The tests
make their assertions on those numbers, so a wrong result fails the test with every
process's output, and a hang is stopped by the launcher's timeout.

The expected values are computed in each process on one of its own devices, from the
same host data: nothing but the global computation crosses processes.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import layca_optax as lo
from examples import multihost

LR = 0.1
STEPS = 3
AXES = ("x", "y")

# A conv kernel split on both mesh axes (so across processes on 'x'), a dense kernel on
# 'x' only, a replicated kernel and a bias on 'y': the 2x4 mesh's rows are the processes.
SHAPES = {"conv": (3, 3, 4, 8), "dense": (8, 6), "head": (6, 5), "bias": (4,)}
SPECS = {"conv": P(None, None, "x", "y"), "dense": P("x", None), "head": P(), "bias": P("y")}


def emit(scenario: str, values: dict) -> None:
  """Prints this process's result of ``scenario`` for the test to read."""
  print("RESULT " + json.dumps({"process": jax.process_index(), "scenario": scenario,
                                **values}), flush=True)


def random_tree(shapes, seed):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def to_host(tree):
  """The global value of every leaf as a NumPy array (gathered from all processes)."""
  return jax.tree.map(
      lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), tree
  )


def on_one_device(fn, *args):
  """``jax.jit(fn)(*args)`` on this process's first device, as NumPy."""
  with jax.default_device(jax.local_devices()[0]):
    return jax.tree.map(np.asarray, jax.jit(fn)(*args))


def relative_difference(actual, expected) -> float:
  """Largest ``||a - e|| / ||e||`` over the leaves (0 for equal trees)."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  return max(
      float(np.linalg.norm(np.asarray(a, np.float64) - e) / max(np.linalg.norm(e), 1e-30))
      for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected))
  )


def global_tree(tree, mesh, specs):
  """Global arrays of the host values ``tree``, split as ``specs`` over ``mesh``."""
  return {
      k: jax.make_array_from_callback(
          v.shape, NamedSharding(mesh, specs[k]), lambda index, v=v: v[index]
      )
      for k, v in tree.items()
  }


def same_shardings(tree, mesh, specs) -> bool:
  """Whether every leaf of ``tree`` is split as ``specs`` says (``P()`` == ``P(None)``)."""
  return all(
      tree[k].sharding.is_equivalent_to(NamedSharding(mesh, specs[k]), tree[k].ndim)
      for k in specs
  )


def mesh_2d():
  return jax.make_mesh((2, jax.device_count() // 2), AXES)


def make_tx(axis_name=None):
  return lo.layca(LR, base_optimizer=optax.trace(0.9), alpha=-0.4, axis_name=axis_name)


def layca_steps(params, noises, tx):
  """``len(noises)`` Layca steps with gradients that depend on the params."""
  state = tx.init(params)
  for noise in noises:
    grads = jax.tree.map(lambda n, w: n + 0.3 * w * w, noise, params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


# -- scenarios ----------------------------------------------------------------------------


def mlp_loss(params, x, y):
  hidden = jnp.tanh(x @ params["dense_0"] + params["bias_0"])
  return jnp.mean((hidden @ params["dense_1"] - y) ** 2)


def mlp_train(params, batches, tx):
  state = tx.init(params)
  for x, y in batches:
    grads = jax.grad(mlp_loss)(params, x, y)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def data_parallel(args) -> dict:
  """Params replicated on every device of every process, the global batch split."""
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  params = random_tree({"dense_0": (16, 32), "bias_0": (32,), "dense_1": (32, 4)}, 0)
  rng = np.random.default_rng(1)
  batches = [(rng.normal(size=(32, 16)).astype(np.float32),
              rng.normal(size=(32, 4)).astype(np.float32)) for _ in range(STEPS)]
  expected = on_one_device(lambda p, b: mlp_train(p, b, make_tx()), params, batches)

  replicated = jax.device_put(params, NamedSharding(mesh, P()))
  split = NamedSharding(mesh, P("data"))
  on_mesh = [(multihost.global_batch(split, x), multihost.global_batch(split, y))
             for x, y in batches]
  got = jax.jit(lambda p, b: mlp_train(p, b, make_tx()))(replicated, on_mesh)
  return dict(
      relative_difference=relative_difference(to_host(got), expected),
      rows_per_process=on_mesh[0][0].addressable_data(0).shape[0] * jax.local_device_count(),
      replicated=all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(got)),
      devices=len(got["dense_0"].sharding.device_set),
  )


def model_parallel(args) -> dict:
  """Kernels split across processes on a 2-D mesh, updated under ``jit``; then measured
  there: ``cosine_distance``, ``rotation_angle``, ``measure_rotation``, the curves."""
  mesh = mesh_2d()
  params, noises = random_tree(SHAPES, 0), [random_tree(SHAPES, 10 + i) for i in range(STEPS)]
  tx = optax.chain(make_tx(), lo.measure_rotation())

  def train_and_measure(start, noises):
    end, state = layca_steps(start, noises, tx)
    measures = {"distance": lo.cosine_distance(end, start),
                "angle": lo.rotation_angle(end, start), "rates": lo.rotation_rates(state)}
    return end, state[0][0].trace, measures

  expected, _, expected_measures = on_one_device(train_and_measure, params, noises)
  start = global_tree(params, mesh, SPECS)
  got, momentum, measures = jax.jit(train_and_measure)(
      start, [global_tree(n, mesh, SPECS) for n in noises]
  )
  curves = lo.LayerRotationCurves(start)  # a jitted record, as the training loops do
  curves.record(0, start)
  curves.record(STEPS, got)
  expected_distance = expected_measures["distance"]
  return dict(
      relative_difference=relative_difference(to_host(got), expected),
      specs_kept=same_shardings(got, mesh, SPECS),
      momentum_specs_kept=same_shardings(momentum, mesh, SPECS),
      conv_local_shape=list(got["conv"].addressable_data(0).shape),
      conv_processes=len({d.process_index for d in got["conv"].sharding.device_set}),
      **{name: relative_difference(to_host(measures[name]), expected_measures[name])
         for name in measures},
      curves_start=max(abs(v[0]) for v in curves.values.values()),
      curves=max(abs(v[-1] - float(expected_distance[p])) for p, v in curves.values.items()),
      smallest_angle=min(float(a) for k, a in expected_measures["angle"].items()
                         if k != "bias"),
  )


def shard_map_axis_name(args) -> dict:
  """Layca inside ``jax.shard_map`` with ``axis_name``: each device sees its slice only."""
  mesh = mesh_2d()
  params = random_tree(SHAPES, 0)
  noises = [random_tree(SHAPES, 10 + i) for i in range(STEPS)]

  def train_and_measure(p, n, axis_name):
    end, _ = layca_steps(p, n, make_tx(axis_name))
    return end, lo.cosine_distance(end, p, axis_name=axis_name)

  expected = on_one_device(lambda p, n: train_and_measure(p, n, None), params, noises)
  scalars = {k: P() for k in SHAPES}
  results = {}
  for name, axis_name in (("with_axis_name", AXES), ("without_axis_name", None)):
    local = jax.shard_map(
        lambda p, n, a=axis_name: train_and_measure(p, n, a), mesh=mesh,
        in_specs=(SPECS, [SPECS] * STEPS), out_specs=(SPECS, scalars),
        check_vma=axis_name is not None,
    )
    got = jax.jit(local)(
        global_tree(params, mesh, SPECS), [global_tree(n, mesh, SPECS) for n in noises]
    )
    results[name] = relative_difference(to_host(got[0]), expected[0])
    if axis_name is not None:
      results["distance"] = relative_difference(to_host(got[1]), expected[1])
  return results


CHECKPOINT_SPECS = {"conv": P(None, None, "x", "y"), "dense": P("x", "y"), "bias": P("y")}
CHECKPOINT_SHAPES = {"conv": (3, 3, 4, 8), "dense": (8, 8), "bias": (8,)}


def checkpoint_tx():
  schedule = optax.piecewise_constant_schedule(0.2, {4: 0.3})  # decays after the save
  return lo.layca(schedule, base_optimizer=optax.trace(0.9), alpha=0.5)


def checkpoint_steps(params, state, noises):
  tx = checkpoint_tx()
  for noise in noises:
    grads = jax.tree.map(lambda n, w: n + 0.3 * w * w, noise, params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def checkpoint(args) -> dict:
  """``--phase save``: 3 steps, save, 3 more; ``--phase restore``: restore, the same 3.

  Process 0 writes, as ``.npz`` files in ``--out`` for the test to compare: the state
  saved or restored (``state_<phase>.npz``) and the params after the last 3 steps
  (``final_<phase>_<process count>.npz``).
  """
  mesh = mesh_2d()
  noises = [random_tree(CHECKPOINT_SHAPES, 10 + i) for i in range(2 * STEPS)]
  on_mesh = [global_tree(n, mesh, CHECKPOINT_SPECS) for n in noises]
  step = jax.jit(checkpoint_steps)
  path = args.out / "checkpoint"
  params = global_tree(random_tree(CHECKPOINT_SHAPES, 0), mesh, CHECKPOINT_SPECS)
  state = jax.jit(checkpoint_tx().init)(params)
  if args.phase == "save":
    params, state = step(params, state, on_mesh[:STEPS])
    multihost.save_checkpoint(path, {"params": params, "opt_state": state})
  else:
    target = multihost.abstract_like({"params": params, "opt_state": state})
    restored = multihost.restore_checkpoint(path, target)
    params, state = restored["params"], restored["opt_state"]
  saved_or_restored = to_host(jax.tree.leaves({"params": params, "opt_state": state}))
  params, state = step(params, state, on_mesh[STEPS:])
  final = to_host(params)
  if jax.process_index() == 0:
    np.savez(args.out / f"state_{args.phase}_{jax.process_count()}.npz", *saved_or_restored)
    np.savez(args.out / f"final_{args.phase}_{jax.process_count()}.npz", **final)
  return dict(
      phase=args.phase,
      processes=jax.process_count(),
      specs_kept=same_shardings(params, mesh, CHECKPOINT_SPECS),
      step_count=int(to_host(state[1].count)),
  )


# -- pmap and its replacement -------------------------------------------------------------


def pmap_data_parallel(args) -> dict:
  """The classic ``pmap`` step (params replicated, ``pmean`` of the gradients, ``layca``
  without ``axis_name``), its ``jit`` + ``shard_map`` replacement, and one device."""
  params = random_tree({"dense_0": (16, 32), "bias_0": (32,), "dense_1": (32, 4)}, 0)
  rng = np.random.default_rng(1)
  global_size = 8 * jax.device_count()
  batches = [(rng.normal(size=(global_size, 16)).astype(np.float32),
              rng.normal(size=(global_size, 4)).astype(np.float32)) for _ in range(STEPS)]
  expected = on_one_device(lambda p, b: mlp_train(p, b, make_tx()), params, batches)
  tx = make_tx()

  def step(params, state, x, y):
    grads = lax.pmean(jax.grad(mlp_loss)(params, x, y), "batch")
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  # pmap: every argument has a leading axis of the local device count; this process
  # passes its own rows, the pmean spans every process's devices.
  local = jax.local_device_count()
  rows = slice(jax.process_index() * local * 8, (jax.process_index() + 1) * local * 8)

  def stack(tree):  # one copy per local device
    return jax.tree.map(lambda a: np.stack([a] * local), tree)

  p_params, p_state = stack(params), jax.pmap(tx.init)(stack(params))
  p_step = jax.pmap(step, axis_name="batch")
  for x, y in batches:
    p_params, p_state = p_step(
        p_params, p_state, x[rows].reshape(local, 8, -1), y[rows].reshape(local, 8, -1)
    )
  pmapped = jax.tree.map(lambda a: np.asarray(a[0]), p_params)  # replica 0 of this process

  # What jax 0.10 recommends instead: jit over a mesh of every device, shard_map inside.
  # With shard_map's default check_vma=True, JAX knows the params are replicated and the
  # gradient with respect to them is already summed over 'batch': differentiate the
  # pmean-ed loss. The pmap body unchanged (pmean of the gradients) needs check_vma=False,
  # pmap's own semantics; with check_vma=True it would use N times the mean gradient.
  def recommended_step(params, state, x, y):
    grads = jax.grad(lambda p: lax.pmean(mlp_loss(p, x, y), "batch"))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  mesh = jax.make_mesh((jax.device_count(),), ("batch",))
  split = NamedSharding(mesh, P("batch"))
  on_mesh = [(multihost.global_batch(split, x), multihost.global_batch(split, y))
             for x, y in batches]
  replacements = {}
  for name, body, check_vma in (("shard_map", recommended_step, True),
                                ("shard_map_pmap_body", step, False),
                                ("shard_map_pmap_body_vma", step, True)):
    sharded_step = jax.jit(jax.shard_map(
        body, mesh=mesh, in_specs=(P(), P(), P("batch"), P("batch")),
        out_specs=(P(), P()), check_vma=check_vma,
    ))
    s_params = jax.device_put(params, NamedSharding(mesh, P()))
    s_state = jax.jit(tx.init)(s_params)
    for x, y in on_mesh:
      s_params, s_state = sharded_step(s_params, s_state, x, y)
    replacements[name] = to_host(s_params)
  return dict(
      pmap=relative_difference(pmapped, expected),
      **{name: relative_difference(r, expected) for name, r in replacements.items()},
      pmap_vs_shard_map_pmap_body=relative_difference(
          pmapped, replacements["shard_map_pmap_body"]),
      replicas_equal=all(
          np.array_equal(np.asarray(a[i]), np.asarray(a[0]))
          for a in jax.tree.leaves(p_params) for i in range(local)
      ),
  )


def pmap_axis_name(args) -> dict:
  """Each leaf split over the pmapped axis, ``layca(axis_name=...)`` inside ``pmap``."""
  devices = jax.device_count()
  shapes = {"conv": (3, 3, 4, 2 * devices), "dense": (devices, 6), "bias": (devices,)}
  params = random_tree(shapes, 0)
  noises = [random_tree(shapes, 10 + i) for i in range(STEPS)]
  expected, _ = on_one_device(lambda p, n: layca_steps(p, n, make_tx()), params, noises)

  # Split every leaf on its last axis (dense: first axis) into one slice per device;
  # each process passes its own devices' slices.
  axes = {"conv": 3, "dense": 0, "bias": 0}
  local, first = jax.local_device_count(), jax.process_index() * jax.local_device_count()

  def my_slices(tree):
    return {k: np.stack(np.split(v, devices, axis=axes[k])[first:first + local])
            for k, v in tree.items()}

  def global_from(slices_per_process):
    return {k: np.concatenate(list(v), axis=axes[k]) for k, v in slices_per_process.items()}

  results = {}
  for name, axis_name in (("with_axis_name", "devices"), ("without_axis_name", None)):
    got, _ = jax.pmap(
        lambda p, n, a=axis_name: layca_steps(p, n, make_tx(a)), axis_name="devices"
    )(my_slices(params), [my_slices(n) for n in noises])
    mine = global_from(jax.tree.map(np.asarray, got))  # this process's columns only
    expected_mine = global_from(my_slices(expected))
    results[name] = relative_difference(mine, expected_mine)
  return results


SCENARIOS = {
    f.__name__: f
    for f in (data_parallel, model_parallel, shard_map_axis_name, checkpoint,
              pmap_data_parallel, pmap_axis_name)
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("scenarios", nargs="+", choices=sorted(SCENARIOS))
  parser.add_argument("--coordinator", required=True)
  parser.add_argument("--num-processes", type=int, required=True)
  parser.add_argument("--process-id", type=int, required=True)
  parser.add_argument("--cpu-devices", type=int, required=True)
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."))
  parser.add_argument("--phase", choices=("save", "restore"), default="save")
  args = parser.parse_args()
  if args.num_processes > 1:
    multihost.initialize(
        args.coordinator, args.num_processes, args.process_id, args.cpu_devices
    )
  else:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
  for name in args.scenarios:
    emit(name, SCENARIOS[name](args))


if __name__ == "__main__":
  main()
