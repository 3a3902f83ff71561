"""Flax NNX models of the paper's experiments, scaled down to run on a CPU.

Like the paper's networks they have no biases and their BatchNorm layers have no scale
and no offset, so that every parameter is a kernel and Layca controls all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# He-uniform, the initialisation of the paper's CNNs.
he_uniform = nnx.initializers.variance_scaling(2.0, "fan_in", "uniform")

# Running statistics for evaluation. Flax's default (0.99) averages over ~100 steps: on a
# short CPU run the weights move too much in that time and test accuracy lags behind.
BATCH_NORM_MOMENTUM = 0.9


class VGGNet(nnx.Module):
  """VGG-style CNN in the spirit of the paper's C10-CNN1 (Section 6 of ALGORITHM.md).

  Each stage is ``convs_per_stage`` times conv 3x3 -> ReLU -> BatchNorm (no scale, no
  offset); a 2x2 max-pool follows every stage but the last; then global average pooling
  and a dense classifier. No layer has a bias.

  The attribute names sort as ``classifier`` < ``convs``: NNX's (alphabetical) leaf order
  puts the last layer first, which is why the examples ask ``layca_optax.forward_order``
  for the depth order instead of trusting the leaf order.
  """

  def __init__(
      self,
      stages: Sequence[int] = (16, 32, 64),
      convs_per_stage: int = 2,
      num_classes: int = 10,
      in_channels: int = 1,
      *,
      rngs: nnx.Rngs,
  ):
    if not stages or convs_per_stage < 1:
      raise ValueError(
          f"VGGNet needs at least one stage and one conv per stage, got stages={stages} "
          f"and convs_per_stage={convs_per_stage}."
      )
    widths = [width for width in stages for _ in range(convs_per_stage)]
    self.convs_per_stage = convs_per_stage
    self.convs = nnx.List(
        nnx.Conv(
            c_in, c_out, (3, 3), use_bias=False, kernel_init=he_uniform, rngs=rngs
        )
        for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
    )
    self.norms = nnx.List(
        nnx.BatchNorm(
            width,
            use_scale=False,
            use_bias=False,
            momentum=BATCH_NORM_MOMENTUM,
            rngs=rngs,
        )
        for width in widths
    )
    self.classifier = nnx.Linear(
        widths[-1], num_classes, use_bias=False, kernel_init=he_uniform, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    last = len(self.convs) - 1
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = norm(jax.nn.relu(conv(x)))
      ends_stage = (i + 1) % self.convs_per_stage == 0
      if ends_stage and i != last:
        x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    return self.classifier(jnp.mean(x, axis=(1, 2)))


class MLP(nnx.Module):
  """One-hidden-layer perceptron on flattened images (the paper's Section 6 MNIST model).

  ``hidden`` ReLU units and a linear classifier, both without bias, He-uniform init.
  """

  def __init__(
      self,
      hidden: int = 1024,
      num_classes: int = 10,
      in_features: int = 28 * 28,
      *,
      rngs: nnx.Rngs,
  ):
    self.hidden = nnx.Linear(
        in_features, hidden, use_bias=False, kernel_init=he_uniform, rngs=rngs
    )
    self.classifier = nnx.Linear(
        hidden, num_classes, use_bias=False, kernel_init=he_uniform, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    return self.classifier(jax.nn.relu(self.hidden(x)))
