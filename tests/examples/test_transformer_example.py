"""The transformer language-model example: text loading, the model's layers, one tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from examples import data as data_lib  # noqa: E402
from examples import transformer  # noqa: E402
from examples import transformer_model as tm  # noqa: E402

TINY = [
    "--steps", "4", "--d-model", "16", "--heads", "2", "--blocks", "2", "--seq-len", "16",
    "--batch-size", "4", "--eval-windows", "8", "--eval-every", "2",
    "--text-limit", "20000", "--runs", "adamw,layca-adam,layca-adam-neuron", "--no-progress",
]


def test_stdlib_files_are_sorted_and_split_by_whole_files():
  files = data_lib.stdlib_files()
  assert files == sorted(files) and len(files) > 20
  train, held_out = data_lib.split_by_file(files)
  assert not set(train) & set(held_out)
  assert len(held_out) == len(files) // data_lib.HELD_OUT_EVERY
  assert data_lib.split_by_file(files) == (train, held_out)  # deterministic


def test_load_text_from_a_file_holds_out_its_end(tmp_path):
  path = tmp_path / "poem.txt"
  path.write_bytes(bytes(range(100)) * 10)
  text = data_lib.load_text(path, test_fraction=0.1)
  assert (len(text.train), len(text.test)) == (900, 100)
  assert text.train.dtype == np.uint8 and text.test[0] == 900 % 100
  with pytest.raises(FileNotFoundError, match="--text"):
    data_lib.load_text(tmp_path / "missing.txt")


def test_windows_are_next_byte_pairs_and_eval_windows_are_fixed():
  tokens = np.arange(200, dtype=np.uint8)
  windows = data_lib.random_windows(tokens, 5, 16, np.random.default_rng(0))
  assert windows.shape == (5, 17) and windows.dtype == np.int32
  assert np.all(np.diff(windows, axis=1) == 1)  # contiguous bytes
  spread = data_lib.spread_windows(tokens, 4, 16)
  assert spread[0, 0] == 0 and spread[-1, -1] == 199
  np.testing.assert_array_equal(spread, data_lib.spread_windows(tokens, 4, 16))
  with pytest.raises(ValueError, match="--seq-len"):
    data_lib.random_windows(tokens, 1, 300, np.random.default_rng(0))


@pytest.mark.slow
def test_layers_are_kernels_and_embeddings_one_per_block():
  model = tm.TransformerLM(d_model=8, num_heads=2, num_blocks=3, max_len=4,
                           rngs=nnx.Rngs(0))
  _, params = tm.split_params(model)
  mask = jax.tree_util.tree_leaves_with_path(tm.layer_mask(params))
  layers = {jax.tree_util.keystr(p, simple=True, separator="/") for p, m in mask if m}
  assert layers == {
      "tok/embedding", "pos/embedding", "head/kernel",
      *(f"blocks/{kind}/kernel" for kind in tm.BLOCK_KERNELS),
  }
  # Stacked LayerNorm scales are 2-D: default_mask would wrongly call them layers.
  assert params["blocks"]["ln1"]["scale"].shape == (3, 8)
  assert tm.per_block_axes(params)["blocks"]["q"]["kernel"] == (1, 2)
  assert tm.per_neuron_axes(params)["blocks"]["mlp_in"]["kernel"] == (1,)


def test_bad_run_name_says_which_runs_exist():
  with pytest.raises(SystemExit):
    transformer.parse_args(["--runs", "adamw,sgd"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("transformer")
  return out, transformer.main([*TINY, "--out", str(out)])


@pytest.mark.slow
def test_tiny_run_writes_results_summary_and_figures(tiny_run):
  out, histories = tiny_run
  assert set(histories) == {"AdamW", "Layca-Adam", "Layca-Adam per neuron"}
  for name in ("block_rotation.png", "block_rotation_rates.png", "training_curves.png"):
    assert (out / name).read_bytes().startswith(b"\x89PNG")
  assert "| Layca-Adam |" in (out / "summary.md").read_text()
  results = json.loads((out / "results.json").read_text())
  for run in results["runs"].values():
    assert len(run["train_bpb"]) == 4 and all(map(math.isfinite, run["train_bpb"]))
    assert run["eval_steps"] == [0, 2, 4]
    assert all(map(math.isfinite, run["val_bpb"]))
    # A uniform guess over 256 bytes is 8 bits per byte; the initial model is near it.
    assert 5.0 < run["val_bpb"][0] < 12.0


@pytest.mark.slow
def test_curves_are_named_per_block_in_forward_order(tiny_run):
  _, histories = tiny_run
  blocks = [f"blocks/{kind}/kernel[{i}]" for kind in tm.BLOCK_KERNELS for i in range(2)]
  expected = ["tok/embedding", "pos/embedding", *blocks, "head/kernel"]
  for history in histories.values():
    assert history.curve_names == expected
    assert set(history.rotation_rates) == set(expected)
    assert history.cosine_distances[0] == [0.0] * len(expected)


@pytest.mark.slow
def test_layca_keeps_each_block_kernel_norm_and_rotates_by_arctan_rho(tiny_run):
  _, histories = tiny_run
  layca, adamw = histories["Layca-Adam"], histories["AdamW"]
  # Per-neuron Layca keeps every unit's norm, so each block kernel's norm too.
  for history in (layca, histories["Layca-Adam per neuron"]):
    for name, norm in history.initial_norms.items():
      assert history.final_norms[name] == pytest.approx(norm, rel=1e-5), name
  # AdamW (decay and unnormalised steps) does change norms: the check above can fail.
  assert any(
      abs(adamw.final_norms[n] / adamw.initial_norms[n] - 1) > 1e-4
      for n in adamw.initial_norms
  )
  schedule = transformer.warmup_cosine(transformer.LAYCA_ADAM_LR, 4)
  expected = [math.atan(float(schedule(t))) for t in range(4)]
  for name, angles in layca.rotation_rates.items():
    np.testing.assert_allclose(angles, expected, rtol=1e-3, atol=1e-6, err_msg=name)
  assert all(d > 0 for d in layca.cosine_distances[-1])


def test_bits_per_byte_of_a_uniform_prediction_is_eight():
  logits = jnp.zeros((2, 3, 256))
  targets = jnp.zeros((2, 3), jnp.int32)
  assert float(transformer.bits_per_byte(logits, targets)) == pytest.approx(8.0)
