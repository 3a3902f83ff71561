"""Parameter trees of the benchmarks: shapes of real networks, random float32 values.

Every builder returns a nested ``dict`` of float32 NumPy arrays (kernels He-normal, biases
and norm scales/offsets small random values, so that no layer has a zero norm). ``width``
divides every channel count and ``blocks``/``convs`` shorten the stacks (``--quick`` and the
tests use small trees); the defaults give the shapes documented in BENCHMARKS.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "TREES",
    "c10_cnn1",
    "count_leaves",
    "count_params",
    "random_like",
    "resnet32",
    "transformer",
    "transformer_blocks",
    "transformer_stacked",
    "vgg18m",
]

Tree = dict[str, Any]


class _Builder:
  """Adds named leaves with reproducible random values."""

  def __init__(self, seed: int):
    self.rng = np.random.default_rng(seed)
    self.tree: Tree = {}

  def kernel(self, name: str, shape: tuple[int, ...]) -> None:
    fan_in = int(np.prod(shape[:-1]))
    value = self.rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    self._put(name + "/kernel", value)

  def vector(self, name: str, size: int, center: float = 0.0) -> None:
    self._put(name, center + 0.1 * self.rng.standard_normal((size,), np.float32))

  def stacked_kernel(self, name: str, shape: tuple[int, ...]) -> None:
    """``shape[0]`` stacked kernels (``nn.scan`` layout), each He-normal for its own fan-in."""
    fan_in = int(np.prod(shape[1:-1]))
    value = self.rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    self._put(name + "/kernel", value)

  def stacked_vector(
      self, name: str, shape: tuple[int, int], center: float = 0.0
  ) -> None:
    self._put(name, center + 0.1 * self.rng.standard_normal(shape, np.float32))

  def _put(self, path: str, value: np.ndarray) -> None:
    node = self.tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value


def _w(channels: int, width: int) -> int:
  return max(1, channels // width)


def vgg18m(width: int = 1, seed: int = 0) -> Tree:
  """A VGG-16-like stack of 18.39M params (``width=1``): 13 conv 3x3 and 4 dense layers.

  Convs 64, 64, 128, 128, 256 x3, 512 x3, 512 x3 from 3 input channels (14,710,464
  weights), dense 2048 -> 1024 -> 1024 -> 512 -> 10 (3,675,136 weights), a bias per layer
  (6,794): 18,392,394 params in 34 leaves.
  """
  b = _Builder(seed)
  convs = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
  c_in = 3
  for i, c in enumerate(convs):
    c = _w(c, width)
    b.kernel(f"conv_{i:02d}", (3, 3, c_in, c))
    b.vector(f"conv_{i:02d}/bias", c)
    c_in = c
  dense = [_w(2048, width), _w(1024, width), _w(1024, width), _w(512, width), 10]
  for i, (d_in, d_out) in enumerate(itertools.pairwise(dense)):
    b.kernel(f"dense_{i}", (d_in, d_out))
    b.vector(f"dense_{i}/bias", d_out)
  return b.tree


def c10_cnn1(width: int = 1, convs: int = 6, seed: int = 0) -> Tree:
  """The paper's C10-CNN1: 4 stages x 6 conv 3x3 (32/64/128/256), dense 256 -> 10.

  No biases (BatchNorm without scale/offset follows each conv): 25 kernels, 4,307,296
  params (``width=1``).
  """
  b = _Builder(seed)
  c_in = 3
  for stage, c in enumerate([32, 64, 128, 256]):
    c = _w(c, width)
    for i in range(convs):
      b.kernel(f"stage{stage}_conv{i}", (3, 3, c_in, c))
      c_in = c
  b.kernel("dense", (c_in, 10))
  return b.tree


def resnet32(width: int = 1, blocks: int = 5, seed: int = 0) -> Tree:
  """ResNet-32 (CIFAR-100 head): stem, 3 stages x 5 blocks x 2 conv 3x3 (16/32/64), 1x1 shortcuts.

  34 kernels (stem, 30 block convs, 2 shortcuts, dense 64 -> 100), a BatchNorm scale and
  offset (1-D leaves) after each of the 33 convs and a dense bias: 101 leaves, 472,756
  params (``width=1``).
  """
  b = _Builder(seed)

  def conv_bn(name, k, c_in, c_out):
    b.kernel(name, (k, k, c_in, c_out))
    b.vector(name + "_bn/scale", c_out, center=1.0)
    b.vector(name + "_bn/bias", c_out)

  c_in = _w(16, width)
  conv_bn("stem", 3, 3, c_in)
  for stage, c in enumerate([16, 32, 64]):
    c = _w(c, width)
    for block in range(blocks):
      name = f"stage{stage}_block{block}"
      conv_bn(name + "/conv1", 3, c_in, c)
      conv_bn(name + "/conv2", 3, c, c)
      if c != c_in:
        conv_bn(name + "/shortcut", 1, c_in, c)
      c_in = c
  b.kernel("dense", (c_in, 100))
  b.vector("dense/bias", 100)
  return b.tree


def transformer(blocks: int = 83, dim: int = 64, seed: int = 0) -> Tree:
  """A transformer-like tree of many small leaves: 1,000 leaves with the defaults.

  ``blocks`` blocks of 12 leaves (q, k, v, o kernels dim x dim; MLP kernels dim x 4dim and
  4dim x dim with their biases; two LayerNorms' scale and offset), token (1000 x dim) and
  position (128 x dim) embeddings and a final LayerNorm: 12 * blocks + 4 leaves,
  4,199,744 params with the defaults.
  """
  b = _Builder(seed)
  b.kernel("embed/tokens", (1000, dim))
  b.kernel("embed/positions", (128, dim))
  for i in range(blocks):
    name = f"block_{i:03d}"
    for proj in "qkvo":
      b.kernel(f"{name}/attn/{proj}", (dim, dim))
    b.kernel(f"{name}/mlp/up", (dim, 4 * dim))
    b.vector(f"{name}/mlp/up/bias", 4 * dim)
    b.kernel(f"{name}/mlp/down", (4 * dim, dim))
    b.vector(f"{name}/mlp/down/bias", dim)
    for ln in ("ln1", "ln2"):
      b.vector(f"{name}/{ln}/scale", dim, center=1.0)
      b.vector(f"{name}/{ln}/bias", dim)
  b.vector("final_ln/scale", dim, center=1.0)
  b.vector("final_ln/bias", dim)
  return b.tree


def transformer_blocks(blocks: int = 24, dim: int = 1024, seed: int = 0) -> Tree:
  """An unstacked transformer's block kernels: tens to hundreds of medium leaves.

  ``blocks`` blocks of q, k, v, out (dim x dim), mlp_in (dim x 4 dim) and mlp_out
  (4 dim x dim) kernels, each with its bias: 12 leaves a block, 288 leaves and
  302,211,072 params with the defaults (the GPU tree of issue 21); ``dim=256`` gives the
  same 288 leaves in 18,929,664 params, the size timed on CPU.
  """
  b = _Builder(seed)
  for i in range(blocks):
    for name, d_in, d_out in [
        ("q", dim, dim), ("k", dim, dim), ("v", dim, dim), ("out", dim, dim),
        ("mlp_in", dim, 4 * dim), ("mlp_out", 4 * dim, dim),
    ]:
      b.kernel(f"b{i:02d}/{name}", (d_in, d_out))
      b.vector(f"b{i:02d}/{name}/bias", d_out)
  return b.tree


def transformer_stacked(
    blocks: int = 12, dim: int = 256, vocab: int = 4096, seed: int = 0
) -> Tree:
  """A transformer whose blocks are stacked along a leading axis (``nn.scan`` layout).

  ``blocks/qkv`` (blocks, dim, 3 dim), ``blocks/out`` (blocks, dim, dim), ``blocks/mlp_in``
  (blocks, dim, 4 dim) and ``blocks/mlp_out`` (blocks, 4 dim, dim) kernels, the two MLP
  biases and two LayerNorms' scale and offset stacked as (blocks, d); token (vocab x dim)
  and position (512 x dim) embeddings, a final LayerNorm: 14 leaves, 10,644,992 params
  with the defaults. With ``stacked_layer_axes`` each block's kernel is its own layer.
  """
  b = _Builder(seed)
  b.kernel("embed/tokens", (vocab, dim))
  b.kernel("embed/positions", (512, dim))
  for name, d_in, d_out in [
      ("qkv", dim, 3 * dim), ("out", dim, dim), ("mlp_in", dim, 4 * dim),
      ("mlp_out", 4 * dim, dim),
  ]:
    b.stacked_kernel(f"blocks/{name}", (blocks, d_in, d_out))
  b.stacked_vector("blocks/mlp_in/bias", (blocks, 4 * dim))
  b.stacked_vector("blocks/mlp_out/bias", (blocks, dim))
  for ln in ("ln1", "ln2"):
    b.stacked_vector(f"blocks/{ln}/scale", (blocks, dim), center=1.0)
    b.stacked_vector(f"blocks/{ln}/bias", (blocks, dim))
  b.vector("final_ln/scale", dim, center=1.0)
  b.vector("final_ln/bias", dim)
  return b.tree


#: name -> (full-size builder, quick builder)
TREES: dict[str, tuple[Callable[[], Tree], Callable[[], Tree]]] = {
    "vgg18m": (vgg18m, lambda: vgg18m(width=32)),
    "c10_cnn1": (c10_cnn1, lambda: c10_cnn1(width=8, convs=2)),
    "resnet32": (resnet32, lambda: resnet32(width=4, blocks=1)),
    "transformer_1000": (transformer, lambda: transformer(blocks=2, dim=8)),
    "transformer_stacked": (
        transformer_stacked, lambda: transformer_stacked(blocks=2, dim=8, vocab=32)
    ),
    "blocks288": (
        lambda: transformer_blocks(dim=256), lambda: transformer_blocks(blocks=2, dim=8)
    ),
}

#: Accelerator-sized trees (issue 21's GPU table): not in the default list of
#: ``benchmarks.run`` (1.2-1.3 GB of params each), timed with ``--trees NAME`` on a GPU.
ACCELERATOR_TREES: dict[str, tuple[Callable[[], Tree], Callable[[], Tree]]] = {
    "blocks302m": (transformer_blocks, lambda: transformer_blocks(blocks=2, dim=8)),
    "stacked335m": (
        lambda: transformer_stacked(blocks=24, dim=1024, vocab=32000),
        lambda: transformer_stacked(blocks=2, dim=8, vocab=32),
    ),
}


def random_like(tree: Tree, seed: int = 1, scale: float = 0.01) -> Tree:
  """Random values with the structure, shapes and dtypes of ``tree`` (fake gradients)."""
  rng = np.random.default_rng(seed)

  def fill(x):
    return (scale * rng.standard_normal(x.shape, np.float32)).astype(x.dtype)

  return _map(fill, tree)


def _map(fn, tree):
  if isinstance(tree, dict):
    return {k: _map(fn, v) for k, v in tree.items()}
  return fn(tree)


def _leaves(tree) -> list[np.ndarray]:
  if isinstance(tree, dict):
    return [leaf for v in tree.values() for leaf in _leaves(v)]
  return [tree]


def count_leaves(tree: Tree) -> int:
  return len(_leaves(tree))


def count_params(tree: Tree) -> int:
  return sum(int(x.size) for x in _leaves(tree))
