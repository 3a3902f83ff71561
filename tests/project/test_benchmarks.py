"""The benchmark harness: tree shapes, and the JSON of a ``--quick`` run (no timing thresholds)."""

import json
import math
import pathlib

import jax
import numpy as np
import optax
import pytest

from benchmarks import run, trees

pytestmark = pytest.mark.slow  # end-to-end runs: seconds to minutes each


@pytest.mark.parametrize(
    "builder, leaves, params",
    [
        (trees.vgg18m, 34, 18_392_394),
        (trees.c10_cnn1, 25, 4_307_296),
        (trees.resnet32, 101, 472_756),
        (trees.transformer, 1000, 4_199_744),
        (trees.transformer_stacked, 14, 10_644_992),
    ],
)
def test_full_size_trees_have_the_documented_shapes(builder, leaves, params):
  tree = builder()
  assert trees.count_leaves(tree) == leaves
  assert trees.count_params(tree) == params


def test_quick_trees_are_small_and_have_no_zero_norm_leaf():
  for _, quick in trees.TREES.values():
    tree = quick()
    assert trees.count_params(tree) < 100_000
    assert all(float((x**2).sum()) > 0 for x in jax_leaves(tree))


def jax_leaves(tree):
  if isinstance(tree, dict):
    return [leaf for v in tree.values() for leaf in jax_leaves(v)]
  return [tree]


def positive_finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_every_candidate_builds_an_optax_transformation_of_the_trees():
  params = trees.TREES["transformer_stacked"][1]()
  for name, factory in {**run.OPTIMIZERS, **run.TREE_OPTIMIZERS["transformer_stacked"]}.items():
    tx = factory()
    assert isinstance(tx, optax.GradientTransformation), name
    jax.eval_shape(tx.init, params)  # builds the state without compiling anything


#: A quick run times these (and the reference): one Layca step and one measurement, so
#: that the run stays short (each candidate compiles: 17 s on 2 cores, all of them 35 s).
QUICK_CANDIDATES = ["layca", "cosine_distance_step"]


def test_quick_run_writes_the_expected_json(tmp_path, capsys):
  out = tmp_path / "results.json"
  assert run.main(["--quick", "--trees", "vgg18m", "--only", *QUICK_CANDIDATES,
                   "--out", str(out)]) == 0
  assert "layca" in capsys.readouterr().out
  results = json.loads(out.read_text())
  assert results["mode"] == "quick"
  assert {"cpu", "cores", "jax", "optax"} <= set(results["machine"])
  tree = results["trees"]["vgg18m"]
  assert tree["leaves"] == 34
  assert set(tree["candidates"]) == {run.REFERENCE, *QUICK_CANDIDATES}
  for name, c in tree["candidates"].items():
    for key in ("step_ms", "ratio", "ratio_q1", "ratio_q3", "compile_s", "compile_ratio"):
      assert positive_finite(c[key]), (name, key, c[key])
    assert c["state_bytes"] is None if name in run.MEASUREMENTS else c["state_bytes"] >= 0
  assert tree["candidates"]["sgd_momentum"]["ratio"] == 1.0
  # Layca keeps O(leaves) scalars beyond its base's state, nothing per parameter.
  assert all(0 < b <= 8 * tree["leaves"] + 8 for b in tree["layca_extra_state_bytes"].values())
  e2e = results["end_to_end"]["candidates"]
  assert {"sgd_momentum", "layca", "layca_momentum"} <= set(e2e)
  assert all(positive_finite(c["step_ms"]) and positive_finite(c["ratio"]) for c in e2e.values())


def test_targets_are_computed_from_a_complete_run():
  # Issue 21's targets: per tree layca <= 1.1x, layca(trace) <= 1.5x, layca(adam) <= 1.5x
  # adam (from the same rounds' seconds); compile <= 3x on the 288-leaf tree.
  fake_tree = {
      "leaves": 10, "params": 1000,
      "layca_extra_state_bytes": {"none": 44, "trace": 44, "adam": 44},
      "candidates": {
          name: {"ratio": 1.5, "compile_ratio": 1.5, "seconds": [1.0, 2.0]}
          for name in list(run.OPTIMIZERS) + list(run.MEASUREMENTS)
      },
  }
  fake_tree["candidates"]["layca_adam"]["seconds"] = [1.2, 2.4]
  results = {"trees": {name: fake_tree for name in trees.TREES}}
  rows = {r["target"]: r for r in run.targets(results)}
  assert len(rows) == 3 * len(trees.TREES) + 1
  assert all(isinstance(r["met"], bool) and math.isfinite(r["measured"]) for r in rows.values())
  assert rows["vgg18m: layca(scale_by_adam) / adam step"]["measured"] == 1.2
  assert not rows["vgg18m: layca / sgd_momentum step"]["met"]  # 1.5 > 1.1
  assert rows["blocks288: layca / sgd_momentum compile"]["met"]  # 1.5 <= 3


def test_layca_floor_rotates_each_kernel_by_arctan_lr_and_keeps_its_norm():
  # The benchmark's lower bound must compute the real thing, or its ratio means nothing.
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=(16, 8)).astype(np.float32),
            "b": rng.normal(size=(8,)).astype(np.float32)}
  grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
  tx = run.OPTIMIZERS["layca_floor"]()
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  w, w1 = params["w"].astype(np.float64).ravel(), np.asarray(new["w"], np.float64).ravel()
  angle = np.arccos(w @ w1 / np.linalg.norm(w) / np.linalg.norm(w1))
  np.testing.assert_allclose(angle, np.arctan(run.LR), rtol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(w1), np.linalg.norm(w), rtol=1e-5)
  np.testing.assert_allclose(new["b"], params["b"] - run.LR * grads["b"], rtol=1e-6)


def test_reductions_quick_run_checks_and_times_every_form(capsys):
  from benchmarks import reductions

  assert reductions.main(["--quick"]) == 0
  out = capsys.readouterr().out
  for name in [run.REFERENCE, *reductions.FORMS]:
    assert f"  {name} " in out


def test_guard_quick_run_times_layca_with_and_without_its_cond(capsys):
  from benchmarks import guard

  assert guard.main(["--quick", "--trees", "vgg18m"]) == 0
  out = capsys.readouterr().out
  assert "layca_without_guard" in out and "guard's cost: step x" in out


def test_compile_time_quick_run_checks_the_alternatives_then_compiles_every_part(capsys):
  from benchmarks import compile_time

  assert compile_time.main(["--quick"]) == 0
  out = capsys.readouterr().out
  for name in compile_time.PARTS:
    assert f"  {name} " in out and "fusions per kernel" in out


def test_compile_time_alternative_is_checked_against_the_one_pass_step(monkeypatch):
  from benchmarks import compile_time

  wrong = lambda *args: [w * 1.001 for w in compile_time._one_pass(*args)]
  monkeypatch.setitem(compile_time.PARTS, "stacked_coefficients", wrong)
  with pytest.raises(AssertionError, match="stacked_coefficients differs"):
    compile_time.main(["--quick"])


def test_paired_quick_run_times_a_copy_of_the_package_against_itself(capsys):
  from benchmarks import paired

  repository = paired.REPOSITORY
  assert paired.main(["--old-tree", str(repository), "--quick", "--trees", "vgg18m"]) == 0
  out = capsys.readouterr().out
  for label in ("layca", "layca(trace)"):
    row = next(line for line in out.splitlines() if line.split()[:2] == ["vgg18m", label])
    old, new, new_over_old = (float(v) for v in row.split()[2:5])
    assert min(old, new, new_over_old) > 0 and math.isfinite(old + new + new_over_old)


def test_paired_loads_the_old_package_under_its_own_name(tmp_path):
  from benchmarks import paired

  previous = paired.load_previous(tree=paired.REPOSITORY, workdir=tmp_path)
  assert previous.__name__ == paired.PREVIOUS and previous is not paired.lo
  assert pathlib.Path(previous.__file__).is_relative_to(tmp_path)
  assert "layca_optax" not in (tmp_path / paired.PREVIOUS / "_layca.py").read_text()
  with pytest.raises(ValueError, match="pass one of commit="):
    paired.load_previous(workdir=tmp_path)
