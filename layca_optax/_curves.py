r"""Layer rotation curves: each layer's cosine distance to its initialisation over training.

The paper's diagnostic (ALGORITHM.md section 5): record, at step 0 and at the end of every
epoch, each kernel's cosine distance to its initial value,

.. math::
  d_l(t) = 1 - \cos\big(w_l(t), w_l(0)\big)
         = \tfrac12 \Big\| \frac{w_l(t)}{\|w_l(t)\|} - \frac{w_l(0)}{\|w_l(0)\|} \Big\|^2,

and plot one line per layer, input layer first. Two recorders:

* :class:`LayerRotationCurves`, on the host: ``record(step, params)`` runs one jitted
  call and stores Python floats; ``save``/``load`` JSON; plot with
  ``plot_layer_rotation_curves``.
* :func:`init_curve_buffer` / :func:`record_curve`, a pure :class:`CurveBuffer` carried
  through ``jax.lax.scan`` or ``jit``-ted loops (no host round trip per record), appended
  to the host curves afterwards with :meth:`LayerRotationCurves.extend`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from layca_optax import _measure, _plan, _tree

__all__ = ["CurveBuffer", "LayerRotationCurves", "init_curve_buffer", "record_curve"]

_FORMAT = "layca_optax.LayerRotationCurves"
_FORMAT_VERSION = 1


class _CurvePlan(NamedTuple):
  """Which leaves are recorded, in depth order, and how each splits into curves."""

  treedef: Any
  paths: tuple[str, ...]  # every leaf of the params, flattening order
  leaf_indices: tuple[int, ...]  # the recorded leaves, input layer first
  axes: tuple[tuple[int, ...], ...]  # vector axes of each recorded leaf
  shapes: tuple[tuple[int, ...], ...]  # shape of each recorded leaf
  names: tuple[str, ...]  # one per curve: 'path', or 'path[i]' per vector


def _curve_plan(spec: _plan.LayerSpec, params: Any) -> _CurvePlan:
  # mask=None means the kernels here (as in layca), not every leaf (as in cosine_distance).
  plan = spec.plan(params)
  order = sorted((leaf.depth, i) for i, leaf in enumerate(plan.leaves) if leaf.is_layer)
  if not order:
    raise ValueError(
        f"{spec.owner}: no leaf of the params is a layer, so there is nothing to record. The "
        "default mask selects leaves with ndim >= 2 (kernels); pass mask=... to choose "
        "others, e.g. mask=lambda p: jax.tree.map(lambda x: x.ndim >= 1, p)."
    )
  flat = _tree.flatten(params)
  recorded = [plan.leaves[i] for _, i in order]
  return _CurvePlan(
      treedef=flat.treedef,
      paths=flat.paths,
      leaf_indices=tuple(i for _, i in order),
      axes=tuple(leaf.vector_axes for leaf in recorded),
      shapes=tuple(tuple(np.shape(flat.leaves[i])) for _, i in order),
      names=tuple(
          name for leaf in recorded
          for name in _plan.vector_names(leaf.path, leaf.vector_count_shape)
      ),
  )


def _layer_leaves(plan: _CurvePlan, params: Any, caller: str, name: str) -> list[Any]:
  """The recorded leaves of ``params`` (depth order), after checking they fit ``plan``."""
  flat = _tree.flatten(params)
  _tree.check_same_structure(
      flat, _tree.Flat(plan.paths, (), plan.treedef), caller,
      names=(name, "initial params"),
      fix="Record versions of the params tree the curves were created with.",
  )
  leaves = [flat.leaves[i] for i in plan.leaf_indices]
  for i, leaf, shape in zip(plan.leaf_indices, leaves, plan.shapes):
    if tuple(np.shape(leaf)) != shape:
      raise ValueError(
          f"{caller}: leaf {plan.paths[i]!r} of the {name} has shape {np.shape(leaf)} but "
          f"the initial params had {shape}. Record versions of the params tree the "
          "curves were created with."
      )
  return leaves


def _distance_row(
    leaves: Sequence[jax.Array],
    reference: Sequence[jax.Array],
    axes: tuple[tuple[int, ...], ...],
) -> jax.Array:
  """All curves' cosine distances, one float32 vector in depth order (jit-safe)."""
  distances = _measure.cosine_distance(list(leaves), list(reference), rotation_axes=list(axes))
  return jnp.concatenate([jnp.ravel(d) for d in distances])


class LayerRotationCurves:
  r"""Records each layer's cosine distance to its initial value, for the paper's plot.

  .. math::
    d_l(t) = 1 - \cos\big(w_l(t), w_l(0)\big) \in [0, 2]

  computed as in :func:`layca_optax.cosine_distance` (exactly 0 at initialisation,
  accurate in float32 down to angles of 1e-4 rad). Record at step 0 and at the end of
  every epoch (the authors recorded after the first batch of each epoch and so never
  saw the final state). Curves are kept in depth order, input layer first.

  **Memory.** The object keeps one copy of the initial *layer* leaves (the ``mask``-ed
  ones, not biases or norms), taken at construction, so that a later donated or
  in-place update of the caller's buffers cannot move the reference:

  * ``reference="device"`` (default): the copy lives on the device, in the params' dtype
    or in ``reference_dtype``. ``record`` is one jitted call (compiled once per params
    shape) plus one transfer of one float per curve.
  * ``reference="host"``: the copy lives in host (NumPy) memory and uses no device
    memory. ``record`` then transfers every layer leaf to the host (``jax.device_get``,
    the size of the kernels each time) and runs the same float32 computation on the
    host's CPU: fine once per epoch, too slow to call every step of a large model.
  * ``reference_dtype=jnp.bfloat16`` halves the copy of float32 kernels, at a cost in
    accuracy. Measured on normal float32 kernels of 640 to 262,144 entries after
    rotations of 0 to 1.5 rad (``tests/test_curves.py`` checks these bounds): rounding
    turns the copy by about 1.7e-3 rad, so the curves start at 1.4e-6 instead of 0 and
    rotations below about 2e-3 rad (d < 2e-6) are lost in that floor; after a rotation
    by :math:`\theta` of a vector of :math:`n` entries the absolute error is about
    :math:`1.4 \cdot 10^{-6} + 1.7 \cdot 10^{-3} \sin\theta / \sqrt{n}` (one standard
    deviation; at most 2.4 times that in 100 draws): about 1e-5 for a 36,864-entry
    ``(3, 3, 64, 64)`` conv kernel, 7e-5 for a ``(64, 10)`` dense one. ``float16`` is
    about 60 times more accurate (floor 2e-8, absolute error below 1e-5).
  * ``"device"`` and ``"host"`` values are within 5e-6 relative of the exact cosine
    distance for rotations from 1e-3 rad (the float32 rounding of the params dominates;
    ``tests/test_curves.py`` checks it on kernels of 640 to 262,144 entries).

  Args:
    init_params: the initial params (any pytree, Flax NNX ``State`` included).
    layer_order: leaf paths from input to output, e.g.
      ``layca_optax.forward_order(apply_fn, params, x)``; may name non-layer leaves.
      ``None``: :func:`layca_optax.natural_order` of the paths.
    mask: which leaves are layers: ``None`` for ``layca_optax.default_mask`` (kernels,
      ``ndim >= 2``), a pytree of bools (a prefix of the params) or a callable
      ``params -> pytree of bools``.
    rotation_axes: which axes form one vector, as in ``cosine_distance``; a leaf with
      other (kept) axes gives one curve per vector, named ``'path[i]'`` (``'path[i,j]'``
      for several kept axes), in index order at the leaf's place in depth order.
    reference: ``"device"`` or ``"host"``: where the copy of the initial layers lives.
    reference_dtype: dtype of that copy (e.g. ``jnp.bfloat16``); ``None`` keeps the
      params' dtype.

  Attributes:
    steps: the recorded steps (``list[int]``).
    values: ``{curve name: list of floats}``, one entry per step, in depth order.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import LayerRotationCurves
    >>> init = {'Dense_0': {'kernel': jnp.array([[1.0, 0.0]])},
    ...         'Dense_1': {'kernel': jnp.array([[1.0], [1.0]]), 'bias': jnp.zeros(1)}}
    >>> curves = LayerRotationCurves(init)
    >>> curves.record(0, init)
    >>> curves.record(10, {'Dense_0': {'kernel': jnp.array([[0.0, 1.0]])},
    ...                    'Dense_1': {'kernel': jnp.array([[1.0], [1.0]]),
    ...                                'bias': jnp.ones(1)}})
    >>> curves.steps
    [0, 10]
    >>> curves.values
    {'Dense_0/kernel': [0.0, 1.0], 'Dense_1/kernel': [0.0, 0.0]}
  """

  def __init__(
      self,
      init_params: Any,
      *,
      layer_order: Sequence[str] | None = None,
      mask: _plan.MaskOrFn = None,
      rotation_axes: _plan.AxesOrFn = None,
      reference: str = "device",
      reference_dtype: Any = None,
  ):
    caller = "LayerRotationCurves"
    if reference not in ("device", "host"):
      raise ValueError(
          f"{caller}: reference must be 'device' (a copy of the initial layers in device "
          f"memory) or 'host' (in NumPy memory), got reference={reference!r}."
      )
    plan = _curve_plan(_plan.LayerSpec(caller, mask, rotation_axes, layer_order), init_params)
    self._plan: _CurvePlan | None = plan
    leaves = _layer_leaves(plan, init_params, caller, "initial params")
    dtype = None if reference_dtype is None else jnp.dtype(reference_dtype)
    self._reference: list[Any] | None
    if reference == "host":
      host = jax.device_get(leaves)
      self._reference = [np.array(x, dtype=dtype, copy=True) for x in host]
    else:
      self._reference = [jnp.array(x, dtype=dtype, copy=True) for x in leaves]
    self._host = reference == "host"
    # Built once: every record with same-shaped params reuses one compiled function.
    self._distances: Any = jax.jit(functools.partial(_distance_row, axes=plan.axes))
    self._source: str | None = None
    self.steps: list[int] = []
    self.values: dict[str, list[float]] = {name: [] for name in plan.names}

  @classmethod
  def from_values(
      cls, steps: Sequence[int], values: Mapping[str, Sequence[float]]
  ) -> LayerRotationCurves:
    """Curves from recorded numbers (e.g. another logger's); they plot but cannot record.

    Args:
      steps: the record points.
      values: ``{layer path: one value per step}``, input layer first.

    Examples:
      >>> from layca_optax import LayerRotationCurves
      >>> curves = LayerRotationCurves.from_values([0, 1], {'a': [0.0, 0.2]})
      >>> curves.latest()
      {'a': 0.2}
    """
    steps = [int(s) for s in steps]
    for name, column in values.items():
      if len(column) != len(steps):
        raise ValueError(
            f"LayerRotationCurves.from_values: curve {name!r} has {len(column)} values "
            f"for {len(steps)} steps; give one value per step."
        )
    curves = cls.__new__(cls)
    curves._plan = None
    curves._reference = None
    curves._host = False
    curves._distances = None
    curves._source = "from_values"
    curves.steps = steps
    curves.values = {str(k): [float(v) for v in column] for k, column in values.items()}
    return curves

  @property
  def paths(self) -> list[str]:
    """The curve names (layer paths, ``'path[i]'`` per vector), input layer first."""
    return list(self.values)

  def record(self, step: int, params: Any) -> None:
    """Appends each layer's cosine distance between ``params`` and the initial params.

    Args:
      step: the step (or epoch) of this record.
      params: the current params, same structure and shapes as ``init_params``.
    """
    caller = "LayerRotationCurves.record"
    if self._reference is None or self._plan is None:
      raise RuntimeError(
          f"{caller}: these curves were made by LayerRotationCurves.{self._source}() and "
          "hold no initial params, so they cannot record. To keep recording, create "
          "LayerRotationCurves(init_params, ...) with the run's initial params (and, if "
          "needed, copy `steps` and `values` over), or append scan records with "
          ".extend(steps, buffer)."
      )
    leaves = _layer_leaves(self._plan, params, caller, "params")
    if self._host:  # the same float32 computation, on the host's CPU
      cpu = jax.local_devices(backend="cpu")[0]
      # NumPy copies: JAX's CPU buffers may alias (and keep alive) the arrays they are
      # made from, and the caller's may be a whole restored checkpoint.
      leaves = [np.array(x, copy=True) for x in jax.device_get(leaves)]
      with jax.default_device(cpu):
        row = np.asarray(self._distances(leaves, self._reference))
    else:
      row = np.asarray(jax.device_get(self._distances(leaves, self._reference)))
    self._append(int(step), row)

  def extend(self, steps: Sequence[int], buffer: CurveBuffer) -> None:
    """Appends the records of a :class:`CurveBuffer` filled by :func:`record_curve`.

    Args:
      steps: the step of each record in the buffer (as many as it holds).
      buffer: the buffer, with the same curves as these (same params, mask,
        rotation_axes and layer_order).
    """
    caller = "LayerRotationCurves.extend"
    if tuple(buffer.paths) != tuple(self.paths):
      raise ValueError(
          f"{caller}: the buffer's curves {list(buffer.paths)[:4]}... differ from these "
          f"curves {self.paths[:4]}...; build it with init_curve_buffer(init_params, n, "
          "...) using the same params, mask, rotation_axes and layer_order."
      )
    values = np.asarray(jax.device_get(buffer.values))
    count = int(buffer.count)
    held = min(count, values.shape[0])
    steps = [int(s) for s in steps]
    if len(steps) != held:
      dropped = (
          f" ({count - held} records past its end were dropped: make num_records larger)"
          if count > held else ""
      )
      raise ValueError(
          f"{caller}: the buffer holds {held} records{dropped} but {len(steps)} steps were "
          f"given; pass one step per record, e.g. steps[:{held}]."
      )
    for step, row in zip(steps, values[:held]):
      self._append(step, row)

  def _append(self, step: int, row: np.ndarray) -> None:
    self.steps.append(step)
    for column, value in zip(self.values.values(), row.tolist()):
      column.append(float(value))

  def latest(self) -> dict[str, float]:
    """``{curve name: value}`` of the last record."""
    if not self.steps:
      raise ValueError(
          "LayerRotationCurves.latest: nothing recorded yet; call "
          "curves.record(step, params) first."
      )
    return {name: column[-1] for name, column in self.values.items()}

  def as_array(self) -> np.ndarray:
    """The values as a ``(num_steps, num_curves)`` float64 array, columns in depth order."""
    return np.array(list(self.values.values()), dtype=np.float64).reshape(
        len(self.values), len(self.steps)
    ).T

  def save(self, path: str | pathlib.Path) -> None:
    """Writes the steps and values to ``path`` as JSON (the reference is not saved)."""
    data = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "steps": self.steps,
        "paths": self.paths,
        "values": [self.values[p] for p in self.paths],
    }
    pathlib.Path(path).write_text(json.dumps(data))

  @classmethod
  def load(cls, path: str | pathlib.Path) -> LayerRotationCurves:
    """Reads curves written by :meth:`save`; they plot and extend but cannot record."""
    data = json.loads(pathlib.Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
      raise ValueError(
          f"LayerRotationCurves.load: {str(path)!r} is not a file written by "
          "LayerRotationCurves.save (no 'format' field equal to "
          f"{_FORMAT!r})."
      )
    curves = cls.from_values(data["steps"], dict(zip(data["paths"], data["values"])))
    curves._source = "load"
    return curves

  def __repr__(self) -> str:
    return (
        f"LayerRotationCurves({len(self.values)} curves, {len(self.steps)} records"
        f"{', loaded' if self._reference is None else ''})"
    )


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["values", "count"],
    meta_fields=["paths"],
)
@dataclasses.dataclass(frozen=True)
class CurveBuffer:
  """Layer rotation records kept on the device, for ``jit``-ted and ``scan``-ned loops.

  A pytree: ``values`` and ``count`` are its leaves; ``paths`` (the curve names, static)
  is part of its structure, so a buffer passes through ``jax.lax.scan`` as a carry.

  Attributes:
    values: ``(num_records, num_curves)`` float32 cosine distances, zero until written.
    count: int32 scalar, the number of ``record_curve`` calls so far (records past
      ``num_records`` are dropped).
    paths: the curve names, in depth order (as ``LayerRotationCurves.paths``).
  """

  values: jax.Array
  count: jax.Array
  paths: tuple[str, ...]


def init_curve_buffer(
    init_params: Any,
    num_records: int,
    *,
    layer_order: Sequence[str] | None = None,
    mask: _plan.MaskOrFn = None,
    rotation_axes: _plan.AxesOrFn = None,
) -> CurveBuffer:
  """An empty :class:`CurveBuffer` with room for ``num_records`` records.

  Args:
    init_params: the initial params (only their structure and shapes are used).
    num_records: how many records the buffer holds.
    layer_order: as in :class:`LayerRotationCurves`.
    mask: as in :class:`LayerRotationCurves`.
    rotation_axes: as in :class:`LayerRotationCurves`.

  Returns:
    A buffer with ``count == 0``.
  """
  spec = _plan.LayerSpec("init_curve_buffer", mask, rotation_axes, layer_order)
  plan = _curve_plan(spec, init_params)
  return CurveBuffer(
      values=jnp.zeros((int(num_records), len(plan.names)), jnp.float32),
      count=jnp.zeros((), jnp.int32),
      paths=plan.names,
  )


def record_curve(
    buffer: CurveBuffer,
    params: Any,
    init_params: Any,
    *,
    layer_order: Sequence[str] | None = None,
    mask: _plan.MaskOrFn = None,
    rotation_axes: _plan.AxesOrFn = None,
) -> CurveBuffer:
  """Writes the layers' cosine distances to ``init_params`` at ``buffer.count``.

  Pure and traceable: use it inside ``jax.jit`` and ``jax.lax.scan`` (e.g. under
  ``jax.lax.cond`` once per epoch) and read the buffer once at the end with
  ``LayerRotationCurves.extend``. Writes past the end are dropped; ``count`` still
  increments. Pass the same ``layer_order``/``mask``/``rotation_axes`` as to
  :func:`init_curve_buffer`.

  Cost: one ``cosine_distance`` over the layers (a few passes over the kernels, no
  matmul). Inside a scanned SGD loop of a 784-256-256-256-10 MLP on batches of 128 (2
  busy CPU cores) it added 0.4 ms to a 2.5 ms step when called every step; recording
  once per epoch (under ``jax.lax.cond``) makes it negligible.

  Args:
    buffer: from :func:`init_curve_buffer`.
    params: the current params.
    init_params: the initial params (same structure); any dtype, e.g. a bfloat16 copy.
    layer_order: as in :class:`LayerRotationCurves`.
    mask: as in :class:`LayerRotationCurves`.
    rotation_axes: as in :class:`LayerRotationCurves`.

  Returns:
    The buffer with one more record.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from layca_optax import LayerRotationCurves, init_curve_buffer, record_curve
    >>> init = {'w': jnp.array([[1.0, 0.0]])}
    >>> def step(carry, _):
    ...   params, buffer = carry
    ...   params = {'w': params['w'] + jnp.array([[0.0, 0.5]])}
    ...   return (params, record_curve(buffer, params, init)), None
    >>> buffer = init_curve_buffer(init, 3)
    >>> (_, buffer), _ = jax.lax.scan(step, (init, buffer), length=3)
    >>> curves = LayerRotationCurves(init)
    >>> curves.extend([1, 2, 3], buffer)
    >>> [round(v, 4) for v in curves.values['w']]
    [0.1056, 0.2929, 0.4453]
  """
  plan = _curve_plan(
      _plan.LayerSpec("record_curve", mask, rotation_axes, layer_order), init_params
  )
  if tuple(buffer.paths) != plan.names:
    raise ValueError(
        "record_curve: the buffer was built for other curves than these params give "
        f"({list(buffer.paths)[:4]}... vs {list(plan.names)[:4]}...). Pass the same "
        "layer_order, mask and rotation_axes to init_curve_buffer and record_curve."
    )
  leaves = _layer_leaves(plan, params, "record_curve", "params")
  reference = _layer_leaves(plan, init_params, "record_curve", "init_params")
  row = _distance_row(leaves, reference, plan.axes)
  values = buffer.values.at[buffer.count].set(row.astype(buffer.values.dtype), mode="drop")
  return dataclasses.replace(buffer, values=values, count=buffer.count + 1)
