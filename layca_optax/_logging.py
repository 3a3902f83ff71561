"""Layer rotation as flat ``{name: float}`` scalars, the input every metric logger takes."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from layca_optax import _plan, _tree

__all__ = ["rotation_scalars"]


def rotation_scalars(values: Any, *, prefix: str | None = "layer_rotation") -> dict[str, float]:
  """Per-layer values as a flat ``{'<prefix>/<path>': float}`` dict for metric loggers.

  The dict goes as is to W&B (``wandb.log(scalars, step=step)``), CLU
  (``writer.write_scalars(step, scalars)``) or, one scalar at a time, to TensorBoard
  (tensorboardX ``SummaryWriter.add_scalar``, see below). The values are read from the
  device in one transfer.

  Args:
    values: a pytree of per-leaf values, e.g. ``cosine_distance(params, init_params,
      mask=default_mask)`` or ``rotation_rates(opt_state)``: ``None`` leaves are skipped,
      an array leaf (one value per vector with ``rotation_axes``) gives one scalar per
      entry, ``'<path>[i]'`` (``'<path>[i,j]'``). Or a
      :class:`layca_optax.LayerRotationCurves`: its latest values.
    prefix: prepended as ``'<prefix>/'`` (a TensorBoard/W&B section); ``None`` or ``''``
      for none.

  Returns:
    ``{name: float}``, leaves in pytree order (curves: depth order).

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import cosine_distance, default_mask, rotation_scalars
    >>> init = {'Dense_0': {'kernel': jnp.array([[1.0, 0.0]]), 'bias': jnp.zeros(2)}}
    >>> params = {'Dense_0': {'kernel': jnp.array([[0.0, 1.0]]), 'bias': jnp.ones(2)}}
    >>> rotation_scalars(cosine_distance(params, init, mask=default_mask))
    {'layer_rotation/Dense_0/kernel': 1.0}

    Writing them to TensorBoard with tensorboardX (``pip install "layca_optax[log]"``):

    >>> import tempfile
    >>> from tensorboardX import SummaryWriter
    >>> with tempfile.TemporaryDirectory() as logdir, SummaryWriter(logdir) as writer:
    ...   for name, value in rotation_scalars(
    ...       cosine_distance(params, init, mask=default_mask)).items():
    ...     writer.add_scalar(name, value, global_step=100)
  """
  latest = getattr(values, "latest", None)
  if callable(latest) and hasattr(values, "values") and hasattr(values, "steps"):
    flat = dict(latest())
  else:
    leaves = _tree.flatten(values)  # None leaves are dropped
    flat = {}
    for path, leaf in zip(leaves.paths, jax.device_get(list(leaves.leaves))):
      array = np.asarray(leaf)
      if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise TypeError(
            f"rotation_scalars: leaf {path!r} is a {type(leaf).__name__}, not a number or "
            "an array. Pass per-leaf values such as cosine_distance(params, init_params) "
            "or a LayerRotationCurves."
        )
      names = _plan.vector_names(path, array.shape)
      flat.update(zip(names, array.astype(np.float64).ravel().tolist()))
  head = f"{prefix}/" if prefix else ""
  return {f"{head}{name}": value for name, value in flat.items()}
