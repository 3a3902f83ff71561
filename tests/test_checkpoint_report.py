"""Layer rotation after the fact: curves_from_checkpoints and `python -m layca_optax.report`.

The checkpoints are written here with ``orbax.checkpoint.CheckpointManager`` the way
training code writes them (plain params, Flax NNX states, Linen TrainStates, with and
without optimizer state, composite items, params sharded over the 8 simulated devices),
and the curves read back must equal ``layca_optax.cosine_distance`` computed directly
on the same params, to float32 rounding.
"""

from __future__ import annotations

import doctest
import json
import pathlib
import shutil
import subprocess
import sys
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import layca_optax as lo
from layca_optax._tree import leaves_by_path

ocp = pytest.importorskip("orbax.checkpoint")
pytest.importorskip("matplotlib")
nnx = pytest.importorskip("flax.nnx")
nn = pytest.importorskip("flax.linen")

from flax.training import train_state

from layca_optax import report

# cosine_distance computes in float32, the reader in float64 on the host.
RTOL, ATOL = 1e-5, 1e-6
STEPS = (0, 5, 10, 15)


def save_steps(directory, trees, *, metadata=None, composite=None):
  """One CheckpointManager step per ``{step: tree}``; ``composite``: ``{item: fn(tree)}``."""
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  with ocp.CheckpointManager(directory, options=options, metadata=metadata) as manager:
    for step, tree in trees.items():
      if composite is None:
        args = ocp.args.StandardSave(tree)
      else:
        args = ocp.args.Composite(**{k: make(tree) for k, make in composite.items()})
      manager.save(step, args=args)
  return directory


def random_walk(init, steps=STEPS, seed=1, scale=0.3):
  """``{step: params}``: ``init`` plus growing random perturbations (float32 NumPy)."""
  rng = np.random.default_rng(seed)
  trees, current = {}, jax.tree.map(np.asarray, init)
  for step in steps:
    trees[step] = current
    current = jax.tree.map(
        lambda x: (x + scale * rng.normal(size=x.shape)).astype(np.float32), current
    )
  return trees


def dense_params(seed=0):
  """Kernels named so that JAX's leaf order (Dense_10 < Dense_2) is not depth order."""
  rng = np.random.default_rng(seed)
  return {
      f"Dense_{i}": {
          "kernel": rng.normal(size=(4, 4)).astype(np.float32),
          "bias": rng.normal(size=(4,)).astype(np.float32),
      }
      for i in (0, 2, 10)
  }


def expected_curves(params_by_step, reference_step):
  """Each kernel's ``lo.cosine_distance`` to the reference step, computed directly."""
  reference = params_by_step[reference_step]
  values = {}
  for params in params_by_step.values():
    distances = leaves_by_path(
        lo.cosine_distance(params, reference, mask=lo.default_mask)
    )
    for path, value in distances.items():
      values.setdefault(path, []).append(float(value))
  return values


def assert_curves_match(curves, params_by_step, reference_step=None):
  reference_step = min(params_by_step) if reference_step is None else reference_step
  expected = expected_curves(params_by_step, reference_step)
  assert curves.steps == sorted(params_by_step)
  assert set(curves.values) == set(expected)
  for path, values in expected.items():
    np.testing.assert_allclose(curves.values[path], values, rtol=RTOL, atol=ATOL)
  assert any(v[-1] > 0.01 for v in expected.values())  # the test moved the params


# ---------------------------------------------------------------------------------------
# The curves equal cosine_distance, whatever the checkpoint holds.


@pytest.mark.slow
def test_plain_params_match_cosine_distance_in_natural_order(tmp_path):
  trees = random_walk(dense_params())
  curves = lo.curves_from_checkpoints(save_steps(tmp_path / "ck", trees))
  assert_curves_match(curves, trees)
  assert curves.paths == ["Dense_0/kernel", "Dense_2/kernel", "Dense_10/kernel"]
  assert curves.values["Dense_2/kernel"][0] == 0.0  # the reference itself: exactly 0


class TinyNNX(nnx.Module):
  def __init__(self, rngs):
    self.stem = nnx.Linear(6, 8, rngs=rngs)
    self.norm = nnx.BatchNorm(8, rngs=rngs)
    self.head = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.head(self.norm(jax.nn.relu(self.stem(x))))


@nnx.jit
def nnx_train_step(model, optimizer, x):
  grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
  optimizer.update(model, grads)


def train_nnx(directory, with_optimizer):
  """Trains TinyNNX with Adam, saving before each step; returns the params saved."""
  model = TinyNNX(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
  x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
  saved = {}
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  with ocp.CheckpointManager(directory, options=options) as manager:
    for t in STEPS:  # one optimizer step between saves (labelled 0, 5, 10, 15)
      state = nnx.state(model)
      tree = {"model": state, "optimizer": nnx.state(optimizer)} if with_optimizer else state
      manager.save(t, args=ocp.args.StandardSave(tree))
      saved[t] = jax.tree.map(np.array, nnx.state(model, nnx.Param))
      nnx_train_step(model, optimizer, x)
  return saved


@pytest.mark.slow
@pytest.mark.parametrize("with_optimizer", [False, True], ids=["state", "with-optimizer"])
def test_flax_nnx_checkpoints(tmp_path, with_optimizer):
  saved = train_nnx(tmp_path / "ck", with_optimizer)
  curves, _, info = lo_read(tmp_path / "ck")
  assert info["params_path"] == ("model" if with_optimizer else "")
  # NNX Variables are unwrapped: paths as for the live nnx.State (no '/value').
  assert curves.paths == ["head/kernel", "stem/kernel"]
  assert_curves_match(curves, saved)


class TinyLinen(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jax.nn.relu(nn.Dense(8)(x)))


LINEN_LAYOUTS = {
    # name: (what is saved for a TrainState `ts`, composite items or None, params_path)
    "train-state": (lambda ts: ts, None, "params"),
    "params-only": (lambda ts: {"params": ts.params}, None, "params"),
    "composite": (
        None,
        {"state": lambda ts: ocp.args.StandardSave(ts),
         "meta": lambda ts: ocp.args.JsonSave({"step": int(ts.step)})},
        "state/params",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LINEN_LAYOUTS))
def test_flax_linen_checkpoints(tmp_path, layout):
  make_tree, composite, params_path = LINEN_LAYOUTS[layout]
  model = TinyLinen()
  x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
  params = model.init(jax.random.key(0), x)["params"]
  ts = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(2.0))
  grad = jax.jit(jax.grad(lambda p: jnp.mean(model.apply({"params": p}, x) ** 2)))
  states = {}
  for t in STEPS:
    states[t] = ts
    ts = ts.apply_gradients(grads=grad(ts.params))
  trees = states if composite else {t: make_tree(s) for t, s in states.items()}
  save_steps(tmp_path / "ck", trees, composite=composite)
  curves, _, info = lo_read(tmp_path / "ck")
  assert info["params_path"] == params_path
  assert curves.paths == ["Dense_0/kernel", "Dense_1/kernel"]
  assert_curves_match(curves, {t: jax.tree.map(np.asarray, s.params) for t, s in states.items()})


def test_steps_without_step_metadata_are_read_by_probing_their_items(tmp_path):
  """Older orbax wrote no per-step handler metadata: each sub-directory is tried."""
  trees = random_walk(dense_params())
  directory = save_steps(tmp_path / "ck", trees, composite={
      "state": lambda p: ocp.args.StandardSave({"params": p}),
      "meta": lambda p: ocp.args.JsonSave({"note": "not a pytree"}),
  })
  for step in STEPS:
    (directory / str(step) / "_CHECKPOINT_METADATA").unlink()
  curves, _, info = lo_read(directory)
  assert info["params_path"] == "state/params"
  assert_curves_match(curves, trees)


def test_one_named_item_beside_json_is_the_params(tmp_path):
  trees = random_walk(dense_params())
  directory = save_steps(tmp_path / "ck", trees, composite={
      "weights": lambda p: ocp.args.StandardSave(p),
      "meta": lambda p: ocp.args.JsonSave({"note": "not a pytree"}),
  })
  curves, _, info = lo_read(directory)
  assert info["params_path"] == "weights"
  assert_curves_match(curves, trees)


def test_reference_step_and_steps_subset(tmp_path):
  trees = random_walk(dense_params())
  directory = save_steps(tmp_path / "ck", trees)
  curves = lo.curves_from_checkpoints(directory, reference_step=10)
  assert_curves_match(curves, trees, reference_step=10)
  assert curves.values["Dense_0/kernel"][STEPS.index(10)] == 0.0
  subset = lo.curves_from_checkpoints(directory, steps=[15, 5])
  assert subset.steps == [5, 15]
  assert_curves_match(subset, {5: trees[5], 15: trees[15]})


def test_layer_order_from_the_directory_metadata_or_the_argument(tmp_path):
  trees = random_walk(dense_params())
  order = ["Dense_10/kernel", "Dense_2/kernel", "Dense_0/kernel"]
  directory = save_steps(tmp_path / "ck", trees, metadata={"layer_order": order})
  assert lo.curves_from_checkpoints(directory).paths == order
  given = ["Dense_2/kernel", "Dense_0/kernel", "Dense_10/kernel"]
  assert lo.curves_from_checkpoints(directory, layer_order=given).paths == given


def test_mask_and_rotation_axes_are_passed_on(tmp_path):
  trees = random_walk(dense_params())
  directory = save_steps(tmp_path / "ck", trees)
  curves = lo.curves_from_checkpoints(
      directory, mask=lambda p: jax.tree.map(lambda x: x.ndim == 1, p)
  )
  assert curves.paths == ["Dense_0/bias", "Dense_2/bias", "Dense_10/bias"]
  per_unit = lo.curves_from_checkpoints(directory, rotation_axes=lo.output_unit_axes)
  assert len(per_unit.paths) == 3 * 4  # one curve per output unit of each (4, 4) kernel


# ---------------------------------------------------------------------------------------
# Memory: one restore per step, params only, never two steps alive at once.


class RestoreSpy:
  """Wraps PyTreeCheckpointHandler.restore: counts calls, records what was restored,
  and checks at each call that nothing an earlier call returned is still alive."""

  def __init__(self, monkeypatch):
    self.calls, self.alive, self.restored_keys = [], [], []
    self.leaf_types, self.leaf_shapes = set(), set()
    original = ocp.PyTreeCheckpointHandler.restore
    spy = self

    def restore(handler, directory, *args, **kwargs):
      spy.still_alive_at_call = [ref for ref in spy.alive if ref() is not None]
      assert not spy.still_alive_at_call, "a previous step's params are still alive"
      result = original(handler, directory, *args, **kwargs)
      spy.calls.append(pathlib.Path(str(directory)).parent.name)
      spy.restored_keys.append(sorted(result))
      leaves = jax.tree.leaves(result)
      spy.leaf_types |= {type(x) for x in leaves}
      spy.leaf_shapes |= {x.shape for x in leaves}
      spy.alive = [weakref.ref(x) for x in leaves]
      return result

    monkeypatch.setattr(ocp.PyTreeCheckpointHandler, "restore", restore)


def train_state_trees():
  """{step: {'step', 'params', 'opt_state'}}: a TrainState-like tree with Adam state."""
  params = random_walk(dense_params())
  tx = optax.adam(1e-3)
  return {
      t: {"step": np.int32(t), "params": p, "opt_state": tx.init(p)}
      for t, p in params.items()
  }, params


def test_each_step_is_restored_once_params_only_one_at_a_time(tmp_path, monkeypatch):
  trees, params = train_state_trees()
  directory = save_steps(tmp_path / "ck", trees)
  spy = RestoreSpy(monkeypatch)
  curves = lo.curves_from_checkpoints(directory)
  assert_curves_match(curves, params)
  assert spy.calls == [str(s) for s in STEPS]
  # Partial restore: the optimizer state and the step counter are never read.
  assert all(keys == ["params"] for keys in spy.restored_keys)
  # A reference that is not the first step is read once more, not kept.
  spy = RestoreSpy(monkeypatch)
  lo.curves_from_checkpoints(directory, reference_step=10)
  assert spy.calls == ["10", *map(str, STEPS)]


# ---------------------------------------------------------------------------------------
# Bad input: each error names the step and the path.


def corrupt(step_dir: pathlib.Path, what: str) -> None:
  """Damages a saved step: its tree metadata, its whole item, or its array data.

  orbax reads the arrays of a step concurrently: when the data is damaged, the reads
  that fail after the first one leave asyncio and tensorstore messages behind after
  the call returns. Those would surface in a later test, so the "data" case runs in a
  subprocess (``test_report_on_damaged_array_data_in_a_subprocess``).
  """
  item = step_dir / "default"
  if what == "metadata":
    (item / "_METADATA").write_text("{not json")
  elif what == "missing":
    shutil.rmtree(item)
  else:
    for path in item.rglob("*"):
      if path.is_file() and (path.name.endswith(".ocdbt") or path.parent.name == "d"):
        path.write_bytes(b"\x00garbage" * 8)


def test_missing_file_or_empty_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"'.*/nowhere' does not exist"):
    lo.curves_from_checkpoints(tmp_path / "nowhere")
  (tmp_path / "file").write_text("x")
  with pytest.raises(NotADirectoryError, match="is a file"):
    lo.curves_from_checkpoints(tmp_path / "file")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match=r"'.*/empty' holds no finished orbax checkpoint"):
    lo.curves_from_checkpoints(tmp_path / "empty")


def test_step_without_params(tmp_path):
  trees, _ = train_state_trees()
  trees[10] = {"opt_state": trees[10]["opt_state"]}  # a step that saved no params
  directory = save_steps(tmp_path / "ck", trees)
  with pytest.raises(ValueError, match=r"step 10 at '.*/ck/10' has no params at params_path='params'"):
    lo.curves_from_checkpoints(directory)


def test_shape_change_between_steps(tmp_path):
  trees = random_walk(dense_params())
  trees[10]["Dense_2"]["kernel"] = np.ones((4, 5), np.float32)
  directory = save_steps(tmp_path / "ck", trees)
  with pytest.raises(
      ValueError,
      match=r"step 10 at '.*/ck/10' do not have the layers of the reference step 0: "
      r"shape changed: \['Dense_2/kernel: \(4, 5\) \(reference \(4, 4\)\)'\]",
  ):
    lo.curves_from_checkpoints(directory)


def test_ambiguous_or_missing_params_path(tmp_path):
  trees = random_walk(dense_params())
  save_steps(tmp_path / "two", trees, composite={
      "a": lambda p: ocp.args.StandardSave({"params": p}),
      "b": lambda p: ocp.args.StandardSave({"params": p}),
  })
  with pytest.raises(ValueError, match=r"candidates: \['a/params', 'b/params'\]"):
    lo.curves_from_checkpoints(tmp_path / "two")
  assert lo.curves_from_checkpoints(tmp_path / "two", params_path="b/params").steps == list(STEPS)
  with pytest.raises(ValueError, match=r"step 0 at '.*/two/0' has no params at params_path='c'"):
    lo.curves_from_checkpoints(tmp_path / "two", params_path="c")
  # Params only under optimizer state (a copy, e.g. Adam's moments) are not the params.
  save_steps(tmp_path / "opt", {
      t: {"weights": p, "opt_state": {"mu": {"params": p}}} for t, p in trees.items()
  })
  with pytest.raises(ValueError, match=r"candidates: \['opt_state', 'weights'\]"):
    lo.curves_from_checkpoints(tmp_path / "opt")
  assert lo.curves_from_checkpoints(tmp_path / "opt", params_path="weights").paths == [
      "Dense_0/kernel", "Dense_2/kernel", "Dense_10/kernel"]


def test_unknown_steps_or_reference_step(tmp_path):
  directory = save_steps(tmp_path / "ck", random_walk(dense_params(), steps=(5, 10)))
  with pytest.raises(ValueError, match=r"reference_step=0 is not saved .* holds steps \[5, 10\].*step 0"):
    lo.curves_from_checkpoints(directory, reference_step=0)
  with pytest.raises(ValueError, match=r"steps \[7\] are not in"):
    lo.curves_from_checkpoints(directory, steps=[5, 7])


@pytest.mark.parametrize("damage", ["metadata", "missing"])
def test_unreadable_step_raises_or_is_skipped_and_reported(tmp_path, damage):
  trees = random_walk(dense_params())
  directory = save_steps(tmp_path / "ck", trees)
  corrupt(directory / "10", damage)
  with pytest.raises(OSError, match=r"cannot read step 10 at '.*/ck/10': .*skip_bad=True \(--skip-bad\)"):
    lo.curves_from_checkpoints(directory)
  with pytest.warns(UserWarning, match=r"skipped step 10 at '.*/ck/10', which cannot be read"):
    curves = lo.curves_from_checkpoints(directory, skip_bad=True)
  assert curves.steps == [0, 5, 15]
  assert_curves_match(curves, {t: trees[t] for t in (0, 5, 15)})
  with pytest.raises(OSError, match="The reference step cannot be skipped"):
    lo.curves_from_checkpoints(directory, skip_bad=True, reference_step=10)


def test_without_orbax_the_error_shows_the_install_command(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)  # import now fails
  with pytest.raises(ImportError, match=r'pip install "layca_optax\[checkpoint\]"'):
    lo.curves_from_checkpoints(tmp_path)


def test_importing_layca_optax_does_not_import_orbax():
  code = (
      "import sys, layca_optax, layca_optax.report; "
      "print(sorted(m for m in sys.modules if m.startswith('orbax')))"
  )
  out = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, check=True,
      cwd=pathlib.Path(__file__).parents[1],
  )
  assert out.stdout.strip() == "[]"


def lo_read(directory, **kwargs):
  """curves_from_checkpoints's reader, with what it found (params_path...)."""
  from layca_optax import _checkpoints  # this feature's own module

  return _checkpoints.read_curves(directory, **kwargs)


# ---------------------------------------------------------------------------------------
# The command.


def rotated_kernels(angles_a, angles_b):
  """Two (2, 2) kernels turned by known angles: d = 1 - cos(angle) at each step."""
  def kernel(theta):
    return np.array([[np.cos(theta), np.sin(theta)], [0.0, 0.0]], np.float32)

  return {
      100 * i: {"params": {"Dense_0": {"kernel": kernel(a)}, "Dense_1": {"kernel": kernel(b)}}}
      for i, (a, b) in enumerate(zip(angles_a, angles_b))
  }


def test_report_writes_curves_figure_and_summary(tmp_path, capsys):
  # Dense_0 turns by 0, 0.5, 1.2, 1.6 rad: d = 0, 0.122, 0.638, 1.029.
  trees = rotated_kernels([0.0, 0.5, 1.2, 1.6], [0.0, 0.1, 0.2, 0.3])
  directory = save_steps(tmp_path / "ck", trees)
  out = tmp_path / "report"
  result = report.main([str(directory), "--out", str(out), "--no-progress"])
  curves = lo.LayerRotationCurves.load(out / "curves.json")
  assert curves.paths == ["Dense_0/kernel", "Dense_1/kernel"]
  assert curves.steps == [0, 100, 200, 300]
  np.testing.assert_allclose(
      curves.values["Dense_0/kernel"], 1 - np.cos([0.0, 0.5, 1.2, 1.6]), atol=1e-6
  )
  # The figure: one line per layer, saved as a PNG.
  assert len(result.axes.lines) == len(curves.paths)
  assert [line.get_label() for line in result.axes.lines] == curves.paths
  assert (out / "layer_rotation.png").read_bytes().startswith(b"\x89PNG")
  summary = (out / "summary.md").read_text()
  assert "| `Dense_0/kernel` | 1.0292 | 200 | 300 |" in summary
  assert "| `Dense_1/kernel` | 0.0447 | never | never |" in summary
  assert "Most rotated layer: `Dense_0/kernel` (1.0292)" in summary
  assert "least rotated: `Dense_1/kernel` (0.0447)" in summary
  data = json.loads((out / "curves.json").read_text())
  assert data["checkpoints"]["params_path"] == "params"
  assert data["checkpoints"]["skipped"] == []
  assert f"wrote {out / 'summary.md'}" in capsys.readouterr().out


def test_report_epochs_and_options(tmp_path):
  trees = rotated_kernels([0.0, 0.5, 1.2, 1.6], [0.0, 0.1, 0.2, 0.3])
  directory = save_steps(tmp_path / "ck", trees)
  order = tmp_path / "order.txt"
  order.write_text("Dense_1/kernel\nDense_0/kernel\n")
  result = report.main([
      str(directory), "--out", str(tmp_path / "r"), "--no-progress",
      "--steps-per-epoch", "100", "--layer-order", f"@{order}", "--reference-step", "100",
      "--steps", "100,200,300", "--params-path", "params",
  ])
  assert result.axes.get_xlabel() == "Epoch"
  assert result.curves.paths == ["Dense_1/kernel", "Dense_0/kernel"]
  assert result.curves.steps == [100, 200, 300]
  assert result.curves.values["Dense_0/kernel"][0] == 0.0
  summary = (tmp_path / "r" / "summary.md").read_text()
  assert "reference step: 100" in summary and "(order: argument" in summary


def test_report_skip_bad_lists_the_skipped_step(tmp_path, capsys):
  trees = random_walk(dense_params())
  directory = save_steps(tmp_path / "ck", trees)
  corrupt(directory / "5", "metadata")
  with pytest.raises(SystemExit) as exit_info:
    report.main([str(directory), "--out", str(tmp_path / "r"), "--no-progress"])
  assert exit_info.value.code == 2
  assert "cannot read step 5 at" in capsys.readouterr().err
  result = report.main(
      [str(directory), "--out", str(tmp_path / "r"), "--no-progress", "--skip-bad"]
  )
  assert [s.step for s in result.skipped] == [5]
  assert f"skipped step 5 at {directory / '5'}" in capsys.readouterr().out
  assert "- step 5 at `" in (tmp_path / "r" / "summary.md").read_text()
  data = json.loads((tmp_path / "r" / "curves.json").read_text())
  assert [s["step"] for s in data["checkpoints"]["skipped"]] == [5]
  assert data["steps"] == [0, 10, 15]


@pytest.mark.slow
def test_report_on_damaged_array_data_in_a_subprocess(tmp_path):
  directory = save_steps(tmp_path / "ck", random_walk(dense_params()))
  corrupt(directory / "10", "data")
  command = [sys.executable, "-m", "layca_optax.report", str(directory), "--out",
             str(tmp_path / "r"), "--no-progress"]
  run = lambda *extra: subprocess.run(
      [*command, *extra], check=False, capture_output=True, text=True,
      cwd=pathlib.Path(__file__).parents[1],
  )
  failed = run()
  assert failed.returncode == 2
  assert f"cannot read step 10 at '{directory / '10'}': ValueError: DATA_LOSS" in failed.stderr
  assert "tensorstore_spec" not in failed.stderr  # the reason is kept short
  skipped = run("--skip-bad")
  assert skipped.returncode == 0, skipped.stderr
  assert f"skipped step 10 at {directory / '10'}: ValueError: DATA_LOSS" in skipped.stdout
  assert json.loads((tmp_path / "r" / "curves.json").read_text())["steps"] == [0, 5, 15]


@pytest.mark.parametrize("name", ["nowhere", "empty"])
def test_report_bad_directory_exits_with_the_error(tmp_path, capsys, name):
  (tmp_path / "empty").mkdir()
  with pytest.raises(SystemExit) as exit_info:
    report.main([str(tmp_path / name), "--out", str(tmp_path / "r")])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: layca_optax.report:") and str(tmp_path / name) in err
  assert not (tmp_path / "r").exists()


def test_help_documents_every_option(capsys):
  with pytest.raises(SystemExit):
    report.parse_args(["--help"])
  text = capsys.readouterr().out
  for option in ("CHECKPOINT_DIR", "--out", "--params-path", "--reference-step",
                 "--layer-order", "--steps", "--steps-per-epoch", "--skip-bad",
                 "--title", "--no-progress"):
    assert option in text
  assert "step 0" in text  # the reference-step caveat


def test_report_docstring_examples():
  result = doctest.testmod(report)
  assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------
# The round trip: the examples' training loop -> checkpoints -> curves.


@pytest.mark.slow
def test_training_loop_checkpoints_give_back_its_curves(tmp_path):
  from examples import data as data_lib
  from examples import models, training

  data = data_lib.synthetic_dataset(num_train=32, num_test=16)
  model = models.VGGNet((4, 8), 1, data.num_classes, rngs=nnx.Rngs(0))
  history = training.train(
      model, lo.layca(3.0**-2), data, epochs=2, batch_size=16, progress=False,
      checkpoint_dir=tmp_path / "ck",
  )
  curves = lo.curves_from_checkpoints(tmp_path / "ck")
  steps_per_epoch = data_lib.num_batches(32, 16)
  assert curves.steps == [e * steps_per_epoch for e in history.record_epochs]
  assert curves.paths == history.layer_paths  # the forward order saved with the run
  np.testing.assert_allclose(curves.as_array(), history.cosine_distances, rtol=RTOL, atol=ATOL)
  with pytest.raises(ValueError, match="already holds checkpoints"):
    training.train(model, optax.sgd(0.1), data, epochs=1, progress=False,
                   checkpoint_dir=tmp_path / "ck")
