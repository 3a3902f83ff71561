r"""Layer rotation curves after the fact, from a finished run's orbax checkpoints.

A run that saved its params with ``orbax.checkpoint.CheckpointManager`` (one
sub-directory per step) holds everything the paper's diagnostic needs: each layer's
cosine distance to its initial value,

.. math::
  d_l(t) = 1 - \cos\big(w_l(t), w_l(t_0)\big),

where :math:`t_0` is the reference step (the first saved step by default; the
initialisation only if step 0 was saved). :func:`curves_from_checkpoints` reads the
steps one at a time, on the host, and feeds them to a host-side
:class:`layca_optax.LayerRotationCurves`; ``python -m layca_optax.report`` turns the
result into a figure and a summary.

orbax is an optional dependency (``pip install "layca_optax[checkpoint]"``): it is
imported when a function here is called, never by ``import layca_optax``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from layca_optax import _curves

__all__ = ["curves_from_checkpoints"]

# Subtree names that hold the params, most specific first: Linen's ``variables`` and
# TrainState use 'params'; NNX training states are often saved as {'model': ...}.
PARAMS_KEYS = ("params", "model")
# Top-level keys that show a tree is more than params (it then needs a params subtree).
OPTIMIZER_KEYS = ("opt_state", "optimizer", "opt", "tx")
# orbax handlers whose items are pytrees of arrays (StandardSave / PyTreeSave).
_PYTREE_HANDLERS = ("StandardCheckpointHandler", "PyTreeCheckpointHandler")
_DEFAULT_ITEM = "default"
# The key under which the training run may store the kernels' depth order in the
# CheckpointManager's root metadata: CheckpointManager(dir, metadata={...}).
LAYER_ORDER_KEY = "layer_order"
_INSTALL = 'pip install "layca_optax[checkpoint]"'


def orbax_checkpoint(caller: str) -> Any:
  """``orbax.checkpoint``, or an ImportError that shows how to install it."""
  try:
    return importlib.import_module("orbax.checkpoint")
  except ImportError as e:
    raise ImportError(
        f"{caller} reads orbax checkpoints and needs orbax-checkpoint, an optional "
        f"dependency of layca_optax. Install it with `{_INSTALL}` (or `pip install "
        "orbax-checkpoint`)."
    ) from e


@dataclasses.dataclass(frozen=True)
class SkippedStep:
  """A step that could not be read and was skipped (``skip_bad=True``)."""

  step: int
  path: str
  reason: str


def _open(ocp: Any, directory: str | pathlib.Path, caller: str) -> Any:
  """A read-only CheckpointManager on ``directory``, after checking it holds steps."""
  path = pathlib.Path(directory).expanduser().absolute()
  if not path.exists():
    raise FileNotFoundError(
        f"{caller}: the checkpoint directory {str(path)!r} does not exist. Pass the "
        "directory given to orbax.checkpoint.CheckpointManager during training (the one "
        "holding a sub-directory per step, e.g. 0/, 100/, ...)."
    )
  if not path.is_dir():
    raise NotADirectoryError(
        f"{caller}: {str(path)!r} is a file, not a checkpoint directory. Pass the "
        "directory given to orbax.checkpoint.CheckpointManager (the parent of the step "
        "sub-directories)."
    )
  options = ocp.CheckpointManagerOptions(
      read_only=True, create=False, save_interval_steps=0,
      enable_async_checkpointing=False,
  )
  manager = ocp.CheckpointManager(path, options=options)
  if not manager.all_steps():
    entries = sorted(p.name for p in path.iterdir())[:8]
    raise ValueError(
        f"{caller}: {str(path)!r} holds no finished orbax checkpoint (no step "
        f"sub-directory; it contains {entries or 'nothing'}). Pass the directory given to "
        "orbax.checkpoint.CheckpointManager(directory) during training; if the steps "
        "are one level down (e.g. one directory per run), pass that sub-directory."
    )
  return manager


def _step_dir(ocp: Any, manager: Any, step: int) -> Any:
  name_format = ocp.step.standard_name_format()
  return ocp.step.find_step_path(manager.directory, name_format, step=step)


def _pytree_items(ocp: Any, step_dir: Any) -> list[str] | None:
  """Names of the step's items saved as pytrees (StandardSave / PyTreeSave), from the
  step's metadata; ``None`` when the step has no usable handler metadata (written by an
  older orbax, or damaged)."""
  try:
    handlers = ocp.metadata.get_step_metadata(step_dir).item_handlers
  except ValueError:  # missing or undecodable _CHECKPOINT_METADATA
    return None
  if isinstance(handlers, str):
    handlers = {_DEFAULT_ITEM: handlers}
  if not handlers:
    return None
  return sorted(
      name for name, handler in handlers.items()
      if str(handler).rsplit(".", 1)[-1] in _PYTREE_HANDLERS
  )


def _tree_metadata(handler: Any, item_dir: Any) -> Any:
  """The item's metadata as a nested tree of ArrayMetadata (older orbax: no wrapper)."""
  metadata = handler.metadata(item_dir)
  metadata = getattr(metadata, "item_metadata", metadata)
  return getattr(metadata, "tree", metadata)


def _children(node: Any) -> list[tuple[str, Any]]:
  if isinstance(node, Mapping):
    return [(str(k), v) for k, v in node.items()]
  if isinstance(node, (list, tuple)):
    return [(str(i), v) for i, v in enumerate(node)]
  return []


def _is_node(node: Any) -> bool:
  return isinstance(node, (Mapping, list, tuple))


def _subtrees(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
  """Every container node of ``tree`` with its path, parents first."""
  if _is_node(tree):
    yield prefix, tree
    for key, child in _children(tree):
      yield from _subtrees(child, (*prefix, key))


def _join(path: Sequence[str]) -> str:
  return "/".join(path)


def find_params_path(tree: Any, caller: str, where: str) -> tuple[str, ...]:
  """Where the params are in a checkpoint tree, when there is one obvious place.

  The shallowest subtree named ``params`` if it is the only one at that depth, else the
  shallowest ``model`` (outside optimizer state: ``opt_state``, ``optimizer``...); with
  neither, the whole tree, unless its top level holds optimizer state. Anything else is
  ambiguous: a ValueError lists the candidates.
  """
  # A 'params' inside optimizer state (e.g. Adam's moments of {'params': ...}) is a copy.
  named = [
      (path, node) for path, node in _subtrees(tree)
      if path and not set(path[:-1]) & set(OPTIMIZER_KEYS)
  ]
  for key in PARAMS_KEYS:
    found = [path for path, _ in named if path[-1] == key]
    if found:
      depth = min(len(p) for p in found)
      shallowest = [p for p in found if len(p) == depth]
      if len(shallowest) == 1:
        return shallowest[0]
      break
  top = [key for key, _ in _children(tree)]
  if not any(p[-1] in PARAMS_KEYS for p, _ in named) and not set(top) & set(
      OPTIMIZER_KEYS
  ):
    return ()
  candidates = [_join(p) for p, _ in named if p[-1] in PARAMS_KEYS] or top
  raise ValueError(
      f"{caller}: cannot tell which part of the checkpoint {where} holds the params; "
      f"candidates: {candidates}. Pass params_path= (--params-path) with the one to "
      f"use, e.g. params_path={candidates[0]!r}, or params_path='' for the whole tree."
  )


def _split_path(params_path: str | None) -> tuple[str, ...] | None:
  if params_path is None:
    return None
  return tuple(part for part in str(params_path).strip("/").split("/") if part)


def _subtree_at(tree: Any, path: tuple[str, ...]) -> Any:
  """The node of ``tree`` at ``path`` (dict keys and list indices), or KeyError."""
  node = tree
  for depth, key in enumerate(path):
    children = dict(_children(node))
    if key not in children:
      raise KeyError(_join(path[: depth + 1]))
    node = children[key]
  return node


def _is_float_array(leaf: Any) -> bool:
  dtype = getattr(leaf, "dtype", None)
  shape = getattr(leaf, "shape", None)
  return dtype is not None and shape is not None and jnp.issubdtype(dtype, jnp.floating)


def _float_leaves(tree: Any) -> Any:
  """``tree`` reduced to its floating-point array leaves; ``None`` if none is left."""
  if isinstance(tree, Mapping):
    mapped = {k: _float_leaves(v) for k, v in tree.items()}
    return {k: v for k, v in mapped.items() if v is not None} or None
  if isinstance(tree, (list, tuple)):
    # A list keeps its positions (orbax restores by index); gaps stay None.
    items = [_float_leaves(v) for v in tree]
    return items if any(v is not None for v in items) else None
  return tree if _is_float_array(tree) else None


def _shapes(tree: Any, prefix: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
  """``{path: shape}`` of the array leaves of a metadata or restored tree."""
  if _is_node(tree):
    shapes = {}
    for key, child in _children(tree):
      shapes.update(_shapes(child, (*prefix, key)))
    return shapes
  if tree is None:
    return {}
  return {_join(prefix): tuple(tree.shape)}


def _unwrap_variables(tree: Any) -> Any:
  """Plain nested dicts, with NNX's ``{'value': array}`` Variable nodes replaced by the
  array (so paths read ``'convs/0/kernel'``, as for the live ``nnx.State``)."""
  if isinstance(tree, Mapping):
    if set(tree) == {"value"} and not _is_node(tree["value"]):
      return tree["value"]
    return {str(k): _unwrap_variables(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_unwrap_variables(v) for v in tree]
  return tree


def _nest(path: tuple[str, ...], node: Any) -> Any:
  for key in reversed(path):
    node = {key: node}
  return node


@dataclasses.dataclass
class _StepReader:
  """Reads the params of one step at a time from a checkpoint directory."""

  ocp: Any
  manager: Any
  params_path: tuple[str, ...] | None
  caller: str

  def __post_init__(self):
    # The handler itself, not a Checkpointer: the manager has already listed only
    # finished steps, and a Checkpointer would look for step metadata in each item.
    self.handler = self.ocp.PyTreeCheckpointHandler()

  def step_dir(self, step: int) -> Any:
    """The step's directory (an ``etils.epath.Path``, as orbax's handlers expect)."""
    return _step_dir(self.ocp, self.manager, step)

  def metadata_tree(self, step: int) -> tuple[Any, bool]:
    """``(tree, single)``: the step's pytree items' metadata; ``single`` when the step
    holds one item named 'default' (then the tree is that item, paths start inside).
    Raises ``_Unreadable`` when orbax fails to read the metadata."""
    step_dir = self.step_dir(step)
    try:
      items = _pytree_items(self.ocp, step_dir)
      if items is None:
        trees = self._probe_items(step_dir)
        items = sorted(trees)
      else:
        trees = {name: _tree_metadata(self.handler, step_dir / name) for name in items}
    except Exception as e:  # anything orbax raises means unreadable
      raise _Unreadable(step, step_dir, e) from e
    if not items:
      raise ValueError(
          f"{self.caller}: step {step} at {str(step_dir)!r} holds no pytree item "
          "(nothing saved with ocp.args.StandardSave or PyTreeSave), so it has no params."
      )
    if items == [_DEFAULT_ITEM]:
      return trees[_DEFAULT_ITEM], True
    return trees, False

  def _probe_items(self, step_dir: Any) -> dict[str, Any]:
    """Without handler metadata: the sub-directories whose pytree metadata reads."""
    trees = {}
    for item_dir in sorted(p for p in step_dir.iterdir() if p.is_dir()):
      try:
        trees[item_dir.name] = _tree_metadata(self.handler, item_dir)
      except Exception:  # not a pytree item (JSON, metrics...)
        continue
    return trees

  def locate(self, step: int, tree: Any) -> tuple[str, ...]:
    """The params path in ``tree``: the given one, or the obvious one (found once)."""
    if self.params_path is None:
      self.params_path = find_params_path(
          tree, self.caller, f"step {step} at {str(self.step_dir(step))!r}"
      )
    return self.params_path

  def read(self, step: int) -> tuple[Any, dict[str, tuple[int, ...]]]:
    """The params of ``step`` as NumPy arrays (floating-point leaves only), and their
    shapes as saved. Raises ``_Unreadable`` for I/O failures, ValueError for a step
    that has no params."""
    step_dir = self.step_dir(step)
    tree, single = self.metadata_tree(step)
    path = self.locate(step, tree)
    if not single and not path and len(tree) == 1:
      path = self.params_path = tuple(tree)  # one pytree item (besides JSON ones)
    try:
      subtree = _subtree_at(tree, path)
    except KeyError as missing:
      top = [key for key, _ in _children(tree)]
      raise ValueError(
          f"{self.caller}: step {step} at {str(step_dir)!r} has no params at "
          f"params_path={_join(path)!r} ({missing.args[0]!r} is missing; its top level "
          f"holds {top}). Pass the params_path that holds the params in every step, or "
          "leave this step out with steps=[...]."
      ) from None
    item = _float_leaves(subtree)
    if item is None or not _is_node(item):
      raise ValueError(
          f"{self.caller}: step {step} at {str(step_dir)!r} has no floating-point arrays "
          f"at params_path={_join(path)!r}, so no params. Pass the params_path of the "
          "params subtree (e.g. 'params', 'state/params')."
      )
    shapes = _shapes(_unwrap_variables(item))
    if single:
      item_name, inner = _DEFAULT_ITEM, path
    elif path:
      item_name, inner = path[0], path[1:]
    else:
      raise ValueError(
          f"{self.caller}: step {step} at {str(step_dir)!r} holds several items "
          f"{[k for k, _ in _children(tree)]}; params_path must start with the item "
          "that holds the params, e.g. params_path='state/params'."
      )
    target = _nest(inner, item)
    restore_args = _restore_args(self.ocp, target)
    try:
      restored = self.handler.restore(
          step_dir / item_name,
          args=self.ocp.args.PyTreeRestore(
              item=target, restore_args=restore_args, partial_restore=True
          ),
      )
      params = _subtree_at(restored, inner)
    except Exception as e:  # same: unreadable
      raise _Unreadable(step, step_dir, e) from e
    return _unwrap_variables(params), shapes


def _restore_args(ocp: Any, target: Any) -> Any:
  """One ``RestoreArgs`` per leaf: restore as host NumPy arrays (no sharding needed)."""
  if isinstance(target, Mapping):
    return {k: _restore_args(ocp, v) for k, v in target.items()}
  if isinstance(target, (list, tuple)):
    return [_restore_args(ocp, v) for v in target]
  if target is None:
    return None
  return ocp.RestoreArgs(restore_type=np.ndarray)


MAX_REASON_CHARS = 300


def short_reason(error: BaseException) -> str:
  """``'ValueError: DATA_LOSS: ...'``: the error's first line, without tensorstore's
  JSON spec, at most :data:`MAX_REASON_CHARS` characters."""
  lines = str(error).split(" [tensorstore_spec=", 1)[0].strip().splitlines()
  text = lines[0] if lines else ""
  if len(text) > MAX_REASON_CHARS:
    text = text[: MAX_REASON_CHARS - 3] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Unreadable(Exception):
  """orbax failed to read a step (corrupt, truncated or missing files)."""

  def __init__(self, step: int, step_dir: Any, cause: BaseException):
    self.step, self.path, self.reason = step, str(step_dir), short_reason(cause)
    super().__init__(self.step, self.path, self.reason)


def _unreadable_error(caller: str, error: _Unreadable, skippable: bool) -> OSError:
  fix = (
      " Pass skip_bad=True (--skip-bad) to skip it; skipped steps are reported."
      if skippable else " The reference step cannot be skipped: pass another "
      "reference_step (--reference-step)."
  )
  return OSError(
      f"{caller}: cannot read step {error.step} at {error.path!r}: {error.reason}.{fix}"
  )


def _check_same_layers(
    caller: str, step: int, path: str, shapes: Mapping[str, tuple[int, ...]],
    reference: Mapping[str, tuple[int, ...]], reference_step: int,
) -> None:
  """A ValueError naming the leaves that differ from the reference step's."""
  missing = [p for p in reference if p not in shapes]
  added = [p for p in shapes if p not in reference]
  changed = [
      f"{p}: {shapes[p]} (reference {reference[p]})"
      for p in reference if p in shapes and shapes[p] != reference[p]
  ]
  if missing or added or changed:
    details = "; ".join(
        f"{label} {items[:4]}{'...' if len(items) > 4 else ''}"
        for label, items in (
            ("shape changed:", changed), ("missing:", missing), ("new:", added)
        ) if items
    )
    raise ValueError(
        f"{caller}: the params of step {step} at {path!r} do not have the layers of the "
        f"reference step {reference_step}: {details}. Layer rotation compares a layer "
        "with itself; pass steps=[...] (--steps) with steps of one architecture."
    )


def _progress(iterable: Sequence[int], enabled: bool) -> Any:
  """A tqdm bar over checkpoints when ``enabled`` and tqdm is installed."""
  if not enabled:
    return iterable
  try:
    tqdm = importlib.import_module("tqdm.auto").tqdm
  except ImportError:
    return iterable
  return tqdm(iterable, desc="checkpoints", unit="step")


def _resolve_steps(
    caller: str, directory: str, available: Sequence[int], steps: Sequence[int] | None,
    reference_step: int | None,
) -> tuple[list[int], int]:
  available = sorted(int(s) for s in available)
  shown = f"{available[:10]}{'...' if len(available) > 10 else ''}"
  if steps is None:
    chosen = available
  else:
    chosen = sorted({int(s) for s in steps})
    unknown = [s for s in chosen if s not in set(available)]
    if unknown or not chosen:
      raise ValueError(
          f"{caller}: steps {unknown or '[]'} are not in {directory!r}, which holds steps "
          f"{shown}. Pass some of those steps, or steps=None for all."
      )
  reference = chosen[0] if reference_step is None else int(reference_step)
  if reference not in set(available):
    raise ValueError(
        f"{caller}: reference_step={reference} is not saved in {directory!r}, which "
        f"holds steps {shown}. Pass one of those; the distance to the initialisation "
        "needs step 0 to have been saved."
    )
  return chosen, reference


def _saved_layer_order(manager: Any) -> tuple[list[str] | None, str]:
  """The ``'layer_order'`` list of the directory's root metadata, and where it came from."""
  try:
    saved = (manager.metadata().custom_metadata or {}).get(LAYER_ORDER_KEY)
  except Exception as e:
    return None, f"natural order (the directory's metadata: {short_reason(e)})"
  if saved:
    return [str(p) for p in saved], "checkpoint metadata"
  return None, "natural order"


def read_curves(
    directory: str | pathlib.Path,
    *,
    params_path: str | None = None,
    reference_step: int | None = None,
    mask: Any = None,
    layer_order: Sequence[str] | None = None,
    rotation_axes: Any = None,
    steps: Sequence[int] | None = None,
    skip_bad: bool = False,
    progress: bool = False,
    caller: str = "curves_from_checkpoints",
) -> tuple[_curves.LayerRotationCurves, list[SkippedStep], dict[str, Any]]:
  """:func:`curves_from_checkpoints`, also returning the skipped steps and what was
  read (``directory``, ``params_path``, ``reference_step``, ``layer_order_source``)."""
  ocp = orbax_checkpoint(caller)
  manager = _open(ocp, directory, caller)
  where = str(manager.directory)
  chosen, reference = _resolve_steps(
      caller, where, manager.all_steps(), steps, reference_step
  )
  layer_order_source = "argument"
  if layer_order is None:
    layer_order, layer_order_source = _saved_layer_order(manager)
  reader = _StepReader(ocp, manager, _split_path(params_path), caller)

  try:
    reference_params, reference_shapes = reader.read(reference)
  except _Unreadable as e:
    raise _unreadable_error(caller, e, skippable=False) from e.__cause__
  curves = _curves.LayerRotationCurves(
      reference_params, layer_order=layer_order, mask=mask, rotation_axes=rotation_axes,
      reference="host",
  )
  # The reference's params serve its own record if it comes first; otherwise they
  # are dropped now and read again at their turn (memory over I/O).
  pending = reference_params if reference == chosen[0] else None
  del reference_params
  skipped = []
  for step in _progress(chosen, progress):
    if pending is not None:
      curves.record(step, pending)
      pending = None
      continue
    try:
      params, shapes = reader.read(step)
    except _Unreadable as e:
      if not skip_bad:
        raise _unreadable_error(caller, e, skippable=True) from e.__cause__
      skipped.append(SkippedStep(e.step, e.path, e.reason))
      continue
    _check_same_layers(
        caller, step, str(reader.step_dir(step)), shapes, reference_shapes, reference
    )
    curves.record(step, params)
    del params
  info = {
      "directory": where,
      "params_path": _join(reader.params_path or ()),
      "reference_step": reference,
      "layer_order_source": layer_order_source,
  }
  return curves, skipped, info


def curves_from_checkpoints(
    directory: str | pathlib.Path,
    *,
    params_path: str | None = None,
    reference_step: int | None = None,
    mask: Any = None,
    layer_order: Sequence[str] | None = None,
    rotation_axes: Any = None,
    steps: Sequence[int] | None = None,
    skip_bad: bool = False,
    progress: bool = False,
) -> _curves.LayerRotationCurves:
  r"""Layer rotation curves of a finished run, read from its orbax checkpoints.

  Walks the steps of an ``orbax.checkpoint.CheckpointManager`` directory (one
  sub-directory per step) and records, for each step :math:`t`, each layer's cosine
  distance to the params of the reference step :math:`t_0`,

  .. math::
    d_l(t) = 1 - \cos\big(w_l(t), w_l(t_0)\big),

  as :class:`layca_optax.LayerRotationCurves` would have recorded it during training.
  With the default reference (the first step) these are the paper's curves only if
  step 0, the initialisation, was saved.

  **Memory.** Steps are restored one at a time, on the host (NumPy arrays: no
  accelerator, no model code and no shardings needed; a checkpoint saved sharded over
  many devices is read whole), and only their params: orbax's partial restore reads
  the floating-point leaves at ``params_path`` and skips the rest (optimizer state,
  step counters, RNG keys). At any time the function holds one step's params plus a
  host copy of the reference's *layer* leaves. Each step is restored once; a
  ``reference_step`` that is not the first recorded step is restored a second time at
  its turn rather than kept.

  **Finding the params.** ``params_path`` is a ``/``-separated path in the checkpoint
  tree. A step saved as one item (``manager.save(step,
  args=ocp.args.StandardSave(tree))``) has paths inside that tree (``'params'`` for a
  Linen ``TrainState`` or ``variables``); a step with several named items
  (``ocp.args.Composite(state=..., meta=...)``) has paths that start with the item
  (``'state/params'``). ``params_path=''`` is the whole tree (an NNX
  ``nnx.State`` saved alone). With ``None``, the one obvious place: the shallowest
  ``params`` subtree, else the shallowest ``model`` subtree (never inside optimizer
  state), else the whole tree if it holds no optimizer state; otherwise a ValueError
  lists the candidates. NNX Variables
  (saved as ``{'value': array}``) are unwrapped, so paths read ``'convs/0/kernel'``.

  Args:
    directory: the checkpoint directory (the one given to ``CheckpointManager``).
    params_path: where the params are in each step's tree (see above).
    reference_step: the step every other is compared with; default: the first of
      ``steps``. Must be a saved step.
    mask: which leaves are layers, as in ``LayerRotationCurves`` (default: the
      kernels, ``ndim >= 2``).
    layer_order: leaf paths from input to output. ``None``: the list saved under
      ``'layer_order'`` in the directory's root metadata
      (``CheckpointManager(directory, metadata={'layer_order': [...]})``) if there is
      one, else :func:`layca_optax.natural_order`.
    rotation_axes: which axes form one vector, as in ``LayerRotationCurves``.
    steps: the steps to record (saved steps; default: all of them, in order).
    skip_bad: skip a step that cannot be read (corrupt or truncated files) instead of
      raising; each skipped step is reported with a ``UserWarning`` that names it.
      Steps without params or with other layer shapes are errors either way.
    progress: show a tqdm progress bar over the checkpoints (if tqdm is installed).

  Returns:
    A :class:`layca_optax.LayerRotationCurves` with one record per step read (plot
    it with ``plot_layer_rotation_curves``, save it with ``.save``). It keeps a host
    copy of the reference layers, so ``.record`` can add more steps.

  Raises:
    ImportError: orbax-checkpoint is not installed.
    FileNotFoundError: ``directory`` does not exist.
    ValueError: no step saved, unknown ``steps``/``reference_step``, no params or an
      ambiguous ``params_path``, layer shapes that change between steps.
    OSError: a step cannot be read (and ``skip_bad`` is false, or it is the reference).

  Examples:
    >>> import tempfile, numpy as np, orbax.checkpoint as ocp
    >>> from layca_optax import curves_from_checkpoints
    >>> directory = tempfile.mkdtemp()
    >>> w = np.array([[1.0, 0.0]], np.float32)
    >>> with ocp.CheckpointManager(directory) as manager:
    ...   for step, kernel in [(0, w), (10, w + [[0.0, 1.0]]), (20, w[:, ::-1])]:
    ...     _ = manager.save(step, args=ocp.args.StandardSave(
    ...         {'params': {'dense': {'kernel': kernel}}}))
    >>> curves = curves_from_checkpoints(directory)
    >>> curves.steps, [round(v, 4) for v in curves.values['dense/kernel']]
    ([0, 10, 20], [0.0, 0.2929, 1.0])
    >>> import shutil; shutil.rmtree(directory)
  """
  caller = "curves_from_checkpoints"
  curves, skipped, _ = read_curves(
      directory, params_path=params_path, reference_step=reference_step, mask=mask,
      layer_order=layer_order, rotation_axes=rotation_axes, steps=steps,
      skip_bad=skip_bad, progress=progress, caller=caller,
  )
  for bad in skipped:
    warnings.warn(
        f"{caller}: skipped step {bad.step} at {bad.path!r}, which cannot be read: "
        f"{bad.reason}",
        UserWarning,
        stacklevel=2,
    )
  return curves
