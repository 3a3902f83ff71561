"""The training loop every example shares: train, evaluate, record layer rotation curves.

:func:`train` takes a Flax NNX model, any Optax transform and a :class:`~examples.data.Dataset`,
and returns a :class:`History` holding the per-epoch metrics and the layer rotation curves:
the cosine distance between each kernel and its initial value, recorded at step 0 and at
the end of every epoch (ALGORITHM.md section 5), layers in forward-pass order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import layca_optax
from examples import data as data_lib

EVAL_BATCH_SIZE = 500
# Reading the loss forces a host sync: refresh the progress bar only this often.
PROGRESS_REFRESH_STEPS = 10


@dataclasses.dataclass
class History:
  """What one training run measured.

  Attributes:
    epochs: epoch numbers ``1..E`` of the per-epoch metrics below.
    train_loss: mean minibatch cross-entropy of each epoch.
    train_accuracy: mean minibatch accuracy of each epoch (BatchNorm in train mode, weights
      changing during the epoch, as Keras reports it).
    test_accuracy: test accuracy at the end of each epoch (BatchNorm in eval mode); ``None``
      for epochs that were not evaluated.
    final_train_accuracy: accuracy of the final model on the whole training split, eval mode.
    final_test_accuracy: accuracy of the final model on the test split, eval mode.
    layer_paths: the kernels' paths, input layer first.
    record_epochs: where the curves were recorded: ``0`` (initialisation), then ``1..E``.
    cosine_distances: one list per record point, one value per layer of ``layer_paths``.
    rotation_rates: with ``record_rotation_rates``, each layer's rotation angle (radians)
      at every step, ``{path: [angle of step 1, step 2, ...]}``; else empty.
    wall_time: seconds spent in :func:`train`, compilation included.
  """

  epochs: list[int] = dataclasses.field(default_factory=list)
  train_loss: list[float] = dataclasses.field(default_factory=list)
  train_accuracy: list[float] = dataclasses.field(default_factory=list)
  test_accuracy: list[float | None] = dataclasses.field(default_factory=list)
  final_train_accuracy: float = float("nan")
  final_test_accuracy: float = float("nan")
  layer_paths: list[str] = dataclasses.field(default_factory=list)
  record_epochs: list[int] = dataclasses.field(default_factory=list)
  cosine_distances: list[list[float]] = dataclasses.field(default_factory=list)
  rotation_rates: dict[str, list[float]] = dataclasses.field(default_factory=dict)
  wall_time: float = 0.0

  def final_cosine_distances(self) -> dict[str, float]:
    """Each layer's cosine distance to its initialisation at the end of training."""
    return dict(zip(self.layer_paths, self.cosine_distances[-1]))

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable copy."""
    return dataclasses.asdict(self)


def by_path(tree: Any) -> dict[str, Any]:
  """``{'a/b/kernel': leaf}`` for every leaf of ``tree`` (Flax NNX ``State`` included)."""
  tree = nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree
  return {
      jax.tree_util.keystr(path, simple=True, separator="/"): leaf
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def params_of(model: nnx.Module) -> nnx.State:
  """The trainable parameters of ``model`` (what the optimizer updates)."""
  return nnx.state(model, nnx.Param)


def kernel_paths(model: nnx.Module, example_input: np.ndarray) -> list[str]:
  """Paths of the model's kernels (Layca's default layers, ndim >= 2), input layer first.

  The order comes from tracing the forward pass on ``example_input``, not from the leaf
  order: NNX sorts attribute names, which need not follow depth.
  """
  params = params_of(model)
  is_kernel = by_path(layca_optax.default_mask(params))
  order = layca_optax.forward_order(model, params, example_input)
  return [path for path in order if is_kernel[path]]


def is_training(model: nnx.Module) -> bool:
  """Whether some BatchNorm or Dropout of ``model`` is in train mode."""
  return any(
      getattr(module, "use_running_average", True) is False
      or getattr(module, "deterministic", True) is False
      for _, module in nnx.iter_modules(model)
  )


@contextlib.contextmanager
def eval_mode(model: nnx.Module) -> Iterator[nnx.Module]:
  """Puts ``model`` in eval mode for the ``with`` block, then back in its previous mode."""
  was_training = is_training(model)
  model.eval()
  try:
    yield model
  finally:
    if was_training:
      model.train()


def cross_entropy_loss(model: nnx.Module, x: jax.Array, y: jax.Array):
  """Mean cross-entropy of ``model`` on a batch, and the logits as auxiliary output."""
  logits = model(x)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return loss, logits


@nnx.jit
def train_step(model: nnx.Module, optimizer: nnx.Optimizer, x, y):
  """One optimizer step; returns the batch's loss and number of correct predictions."""
  grad_fn = nnx.value_and_grad(cross_entropy_loss, has_aux=True)
  (loss, logits), grads = grad_fn(model, x, y)
  optimizer.update(model, grads)
  return loss, jnp.sum(jnp.argmax(logits, axis=-1) == y)


@nnx.jit
def train_step_with_rates(model: nnx.Module, optimizer: nnx.Optimizer, x, y):
  """:func:`train_step`, plus the step's rotation angles (``measure_rotation`` last)."""
  loss, hits = train_step(model, optimizer, x, y)
  angles = by_path(layca_optax.rotation_rates(optimizer.opt_state))
  return loss, hits, angles


@nnx.jit
def count_correct(model: nnx.Module, x, y, valid):
  """Number of correct predictions among the ``valid`` examples of a batch."""
  hits = jnp.argmax(model(x), axis=-1) == y
  return jnp.sum(hits & valid)


def evaluate(
    model: nnx.Module, x: np.ndarray, y: np.ndarray, batch_size: int = EVAL_BATCH_SIZE
) -> float:
  """Accuracy of ``model`` on ``(x, y)`` with BatchNorm in eval mode, batch by batch.

  The last batch is padded to ``batch_size`` and masked, so every call reuses one
  compiled function whatever the dataset size.
  """
  batch_size = min(batch_size, len(x))
  correct = 0
  with eval_mode(model):
    for start in range(0, len(x), batch_size):
      xb, yb = x[start : start + batch_size], y[start : start + batch_size]
      pad = batch_size - len(xb)
      valid = np.arange(batch_size) < len(xb)
      xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
      yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
      correct += int(count_correct(model, xb, yb, valid))
  return correct / len(x)


def train(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    data: data_lib.Dataset,
    *,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    eval_every_epoch: bool = True,
    description: str | None = None,
    record_rotation_rates: bool = False,
    epoch_callback: Callable[[int, nnx.Module], None] | None = None,
    checkpoint_dir: str | pathlib.Path | None = None,
) -> History:
  """Trains ``model`` in place with ``tx`` and records its layer rotation curves.

  Args:
    model: a Flax NNX model; its ``nnx.Param`` leaves are trained.
    tx: any Optax transform, e.g. ``layca_optax.layca(3**-3)`` or ``optax.sgd(0.1)``.
    data: training and test splits.
    epochs: number of passes over the training split.
    batch_size: minibatch size; each epoch drops the remainder (see ``data.batches``).
    seed: seed of the minibatch order; two runs with the same seed see the same batches.
    progress: show a tqdm progress bar over steps with the running loss.
    eval_every_epoch: measure test accuracy after every epoch (otherwise after the last).
    description: label of the progress bar.
    record_rotation_rates: append ``layca_optax.measure_rotation()`` to ``tx`` and keep
      every step's per-kernel rotation angle in ``History.rotation_rates`` (one small
      device array per step, fetched once at the end).
    epoch_callback: called as ``epoch_callback(epoch, model)`` after each record of the
      curves (epoch 0, then the end of every epoch), e.g. to measure the weights' norms.
    checkpoint_dir: if given, a new directory where the params are saved with orbax at
      each record of the curves (step 0, then every epoch's last step); see
      :func:`checkpoint_saver`. ``python -m layca_optax.report checkpoint_dir`` then
      redraws the curves from those checkpoints.

  Returns:
    A :class:`History`.
  """
  if epochs < 1:
    raise ValueError(f"epochs must be at least 1, got {epochs}.")
  start_time = time.perf_counter()
  history = History(layer_paths=kernel_paths(model, data.x_train[:1]))
  curves = layca_optax.LayerRotationCurves(
      params_of(model), layer_order=history.layer_paths
  )
  steps_per_epoch = data_lib.num_batches(len(data.x_train), batch_size)
  checkpoints = contextlib.ExitStack()
  save_checkpoint = checkpoints.enter_context(
      checkpoint_saver(checkpoint_dir, history.layer_paths)
  )

  def record(epoch: int) -> None:
    curves.record(epoch, params_of(model))
    save_checkpoint(epoch * steps_per_epoch, model)
    history.record_epochs.append(epoch)
    history.cosine_distances.append([curves.values[p][-1] for p in history.layer_paths])
    if epoch_callback is not None:
      epoch_callback(epoch, model)

  record(0)
  model.train()
  if record_rotation_rates:
    tx = optax.chain(tx, layca_optax.measure_rotation())
  step_fn = train_step_with_rates if record_rotation_rates else train_step
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  rates = []
  rng = np.random.default_rng(seed)
  bar = tqdm(
      total=epochs * steps_per_epoch, desc=description, disable=not progress, leave=True
  )
  with checkpoints, bar:
    for epoch in range(1, epochs + 1):
      losses, correct = [], []
      for step, (x, y) in enumerate(
          data_lib.batches(data.x_train, data.y_train, batch_size, rng)
      ):
        loss, hits, *angles = step_fn(model, optimizer, x, y)
        rates += angles
        losses.append(loss)
        correct.append(hits)
        bar.update()
        if progress and step % PROGRESS_REFRESH_STEPS == 0:
          bar.set_postfix(epoch=epoch, loss=f"{float(loss):.3f}")
      history.epochs.append(epoch)
      history.train_loss.append(float(jnp.mean(jnp.stack(losses))))
      history.train_accuracy.append(
          int(jnp.sum(jnp.stack(correct))) / (len(correct) * batch_size)
      )
      evaluate_now = eval_every_epoch or epoch == epochs
      history.test_accuracy.append(
          evaluate(model, data.x_test, data.y_test) if evaluate_now else None
      )
      record(epoch)
      if progress:
        bar.set_postfix(
            epoch=epoch,
            loss=f"{history.train_loss[-1]:.3f}",
            test_acc=_format_accuracy(history.test_accuracy[-1]),
        )

  if rates:
    stacked = jax.device_get(jax.tree.map(lambda *a: jnp.stack(a), *rates))
    history.rotation_rates = {p: stacked[p].tolist() for p in history.layer_paths}
  history.final_test_accuracy = history.test_accuracy[-1]
  history.final_train_accuracy = evaluate(model, data.x_train, data.y_train)
  history.wall_time = time.perf_counter() - start_time
  return history


@contextlib.contextmanager
def checkpoint_saver(
    checkpoint_dir: str | pathlib.Path | None, layer_order: list[str]
) -> Iterator[Callable[[int, nnx.Module], None]]:
  """``save(step, model)``: writes ``params_of(model)`` to ``checkpoint_dir`` with orbax.

  One ``orbax.checkpoint.CheckpointManager`` step per call (``StandardSave``, saved
  synchronously), the kernels' forward order in the directory's metadata under
  ``'layer_order'`` (``layca_optax.curves_from_checkpoints`` uses it). The directory
  must not hold checkpoints yet. With ``checkpoint_dir=None``, ``save`` does nothing.
  """
  if checkpoint_dir is None:
    yield lambda step, model: None
    return
  import orbax.checkpoint as ocp  # optional: only runs that save checkpoints need it

  directory = pathlib.Path(checkpoint_dir).absolute()
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  with ocp.CheckpointManager(
      directory, options=options, metadata={"layer_order": list(layer_order)}
  ) as manager:
    if manager.all_steps():
      raise ValueError(
          f"checkpoint_dir {str(directory)!r} already holds checkpoints (steps "
          f"{list(manager.all_steps())[:5]}...); pass a new or empty directory."
      )
    yield lambda step, model: manager.save(
        step, args=ocp.args.StandardSave(params_of(model))
    )


def _format_accuracy(accuracy: float | None) -> str:
  return "-" if accuracy is None else f"{accuracy:.3f}"
