"""Flax Linen versions of the examples' model and training loop.

The other examples use Flax NNX (``models.py``, ``training.py``); this module shows that
Layca and the layer rotation curves work the same way with Linen and
``flax.training.train_state.TrainState``:

* :class:`MLP`: the paper's one-hidden-layer perceptron (Section 6), no biases, He-uniform
  init, optionally BatchNorm (no scale, no offset) after the hidden layer;
* :class:`TrainState`: ``TrainState`` plus the BatchNorm statistics;
* :func:`train_state_loop`: trains a ``TrainState`` on a :class:`~examples.data.Dataset`
  and returns the same :class:`~examples.training.History` as the NNX loop (curves recorded
  at step 0 and at the end of every epoch, input layer first), so the shared reporting and
  figures apply unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm.auto import tqdm

import layca_optax
from examples import data as data_lib
from examples import models, training

he_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")


class MLP(nn.Module):
  """One hidden layer of ``hidden`` ReLU units on flattened images, then a linear classifier.

  No layer has a bias. With ``batch_norm`` a BatchNorm without scale and offset follows the
  hidden layer (before the ReLU, as in the authors' MNIST experiment): the hidden layer is
  then scale invariant and Layca may rotate it as far as it likes.
  """

  hidden: int = 784
  num_classes: int = 10
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.hidden, use_bias=False, kernel_init=he_uniform, name="hidden")(x)
    if self.batch_norm:
      x = nn.BatchNorm(
          use_running_average=not train, use_scale=False, use_bias=False,
          momentum=models.BATCH_NORM_MOMENTUM, name="norm",
      )(x)
    x = nn.relu(x)
    return nn.Dense(
        self.num_classes, use_bias=False, kernel_init=he_uniform, name="classifier"
    )(x)


class TrainState(train_state.TrainState):
  """A Linen ``TrainState`` that also carries the BatchNorm statistics (``{}`` if none)."""

  batch_stats: Any = None


def init_variables(model: nn.Module, example_input: np.ndarray, seed: int = 0) -> dict:
  """The model's initial variables (``params``, and ``batch_stats`` if it has BatchNorm)."""
  return dict(model.init(jax.random.key(seed), example_input[:1]))


def create_state(
    model: nn.Module, variables: dict, tx: optax.GradientTransformation
) -> TrainState:
  """A fresh :class:`TrainState` from initial ``variables`` (shared by several runs)."""
  return TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=tx,
      batch_stats=variables.get("batch_stats", {}),
  )


def kernel_paths(state: TrainState, example_input: np.ndarray) -> list[str]:
  """Paths of the kernels (``ndim >= 2``), input layer first, from one traced forward pass."""
  def forward(params, x):
    return state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x)

  is_kernel = training.by_path(layca_optax.default_mask(state.params))
  order = layca_optax.forward_order(forward, state.params, example_input[:1])
  return [path for path in order if is_kernel[path]]


def _logits(state: TrainState, params, x, train: bool):
  """Logits, and the new BatchNorm statistics in train mode (the old ones otherwise)."""
  variables = {"params": params, "batch_stats": state.batch_stats}
  if train and state.batch_stats:
    logits, updates = state.apply_fn(variables, x, train=True, mutable=["batch_stats"])
    return logits, updates["batch_stats"]
  return state.apply_fn(variables, x, train=train), state.batch_stats


@jax.jit
def train_step(state: TrainState, x, y):
  """One step; returns the new state, the batch's loss and number of correct predictions."""
  def loss_fn(params):
    logits, batch_stats = _logits(state, params, x, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
  )
  state = state.apply_gradients(grads=grads).replace(batch_stats=batch_stats)
  return state, loss, jnp.sum(jnp.argmax(logits, axis=-1) == y)


@jax.jit
def count_correct(state: TrainState, x, y):
  """Number of correct predictions on a batch (BatchNorm in eval mode)."""
  logits, _ = _logits(state, state.params, x, train=False)
  return jnp.sum(jnp.argmax(logits, axis=-1) == y)


def evaluate(
    state: TrainState, x: np.ndarray, y: np.ndarray,
    batch_size: int = training.EVAL_BATCH_SIZE,
) -> float:
  """Accuracy of ``state``'s model on ``(x, y)``, batch by batch, BatchNorm in eval mode."""
  correct = sum(
      int(count_correct(state, x[start:start + batch_size], y[start:start + batch_size]))
      for start in range(0, len(x), batch_size)
  )
  return correct / len(x)


def train_state_loop(
    state: TrainState,
    data: data_lib.Dataset,
    *,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    description: str | None = None,
) -> tuple[TrainState, training.History]:
  """Trains ``state`` and records its layer rotation curves, like ``training.train``.

  Args:
    state: a :class:`TrainState` (its ``tx`` is any Optax transform, e.g. ``layca``).
    data: training and test splits.
    epochs: number of passes over the training split.
    batch_size: minibatch size (see ``data.batches``).
    seed: seed of the minibatch order; runs with the same seed see the same batches.
    progress: show a tqdm progress bar.
    description: label of the progress bar.

  Returns:
    The trained state, and a :class:`~examples.training.History` with test accuracy
    after every epoch and the kernels' cosine distances to their initial values at step
    0 and at the end of every epoch.
  """
  if epochs < 1:
    raise ValueError(f"epochs must be at least 1, got {epochs}.")
  start_time = time.perf_counter()
  history = training.History(layer_paths=kernel_paths(state, data.x_train))
  curves = layca_optax.LayerRotationCurves(state.params, layer_order=history.layer_paths)

  def record(epoch: int) -> None:
    curves.record(epoch, state.params)
    history.record_epochs.append(epoch)
    history.cosine_distances.append([curves.values[p][-1] for p in history.layer_paths])

  record(0)
  rng = np.random.default_rng(seed)
  steps_per_epoch = data_lib.num_batches(len(data.x_train), batch_size)
  with tqdm(
      total=epochs * steps_per_epoch, desc=description, disable=not progress, leave=True
  ) as bar:
    for epoch in range(1, epochs + 1):
      losses, correct = [], []
      for x, y in data_lib.batches(data.x_train, data.y_train, batch_size, rng):
        state, loss, hits = train_step(state, x, y)
        losses.append(loss)
        correct.append(hits)
        bar.update()
      history.epochs.append(epoch)
      history.train_loss.append(float(jnp.mean(jnp.stack(losses))))
      history.train_accuracy.append(
          int(jnp.sum(jnp.stack(correct))) / (len(correct) * batch_size)
      )
      history.test_accuracy.append(evaluate(state, data.x_test, data.y_test))
      record(epoch)
      bar.set_postfix(
          epoch=epoch, loss=f"{history.train_loss[-1]:.3f}",
          test_acc=f"{history.test_accuracy[-1]:.3f}",
      )
  history.final_test_accuracy = history.test_accuracy[-1]
  history.final_train_accuracy = evaluate(state, data.x_train, data.y_train)
  history.wall_time = time.perf_counter() - start_time
  return state, history
