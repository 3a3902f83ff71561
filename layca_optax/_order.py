"""Depth order of parameters: numeric path order, or the order a forward pass uses them.

Layca's per-layer multipliers (``alpha``) are given from the input to the output of the
network, but no pytree is stored in that order: JAX flattens dicts in sorted key order
(``'Dense_10'`` before ``'Dense_2'``, ``'head'`` before ``'stem'``) and Flax NNX sorts
attribute names the same way. This module recovers a depth order, either from the
paths alone (:func:`natural_order`) or by tracing one forward pass
(:func:`forward_order`).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax

from layca_optax import _tree

_Literal: Any
try:  # The public home of jaxpr types since JAX 0.4.2x; duck typing covers the rest.
  from jax.extend.core import Literal as _Literal
except ImportError:  # pragma: no cover
  _Literal = None

__all__ = ["natural_order", "forward_order"]

def natural_order(params: Any) -> list[str]:
  """Leaf paths of ``params`` sorted with digit runs compared as numbers.

  This is the default depth order of the library: auto-named Flax layers
  (``Dense_0`` ... ``Dense_10``) and list entries (``layers/0`` ... ``layers/10``) come
  in numeric order, where JAX's flattening order puts ``Dense_10`` before ``Dense_2``.
  Names that carry no number (``stem``, ``head``) stay in alphabetical order; use
  :func:`forward_order` when they do not follow depth.

  Args:
    params: a pytree of parameters (Flax NNX Variables count as leaves).

  Returns:
    Every leaf path (``'Dense_2/kernel'``, see ``_tree.leaf_paths``), sorted.

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax import natural_order
    >>> params = {f'Dense_{i}': {'kernel': jnp.ones((2, 2))} for i in (10, 2, 1)}
    >>> natural_order(params)
    ['Dense_1/kernel', 'Dense_2/kernel', 'Dense_10/kernel']
  """
  return sorted(_tree.leaf_paths(params), key=_tree.natural_key)


def forward_order(
    fn: Callable[..., Any], params: Any, *args: Any, **kwargs: Any
) -> list[str]:
  """Leaf paths of ``params`` in the order ``fn(params, *args, **kwargs)`` reads them.

  The call is traced with ``jax.make_jaxpr`` (no FLOPs run, ``fn``'s outputs are
  discarded). Each leaf of ``params`` is one input variable of the jaxpr; the equations
  are walked in program order, entering the sub-jaxprs of ``jit``, ``remat``,
  ``custom_jvp_call``/``custom_vjp_call``, ``scan``, ``cond``, ``while`` and any other
  primitive whose sub-jaxpr takes the equation's operands, and each leaf gets the
  position of the first equation reading it. Flax ``apply`` and ``nnx.jit`` wrap the
  whole model in one ``jit``, which is why the walk has to go inside.

  Leaves first read by the same equation are in :func:`natural_order` among
  themselves; leaves never read come last, in natural order.

  Why: JAX flattens dicts in sorted key order and NNX sorts attribute names, so the
  leaf order of ``params`` says nothing about depth (``head`` sorts before ``stem``),
  while Layca's ``alpha`` multipliers are given from the input layer to the output one.

  Args:
    fn: the forward function, called as ``fn(params, *args, **kwargs)``; or a Flax NNX
      ``Module``, then ``params`` is (part of) its state, which replaces the module's
      own in a copy that is called as ``copy(*args, **kwargs)`` in evaluation mode
      (Dropout off, BatchNorm on its running statistics; ``model`` itself is not
      modified). For Linen pass the evaluation call, e.g. ``train=False``.
    params: the parameter pytree whose paths are returned, e.g. Linen's
      ``variables['params']`` or ``nnx.state(model, nnx.Param)``. Its leaves may be
      ``jax.ShapeDtypeStruct``s (from ``jax.eval_shape(model.init, ...)``).
    *args: further inputs of ``fn`` (arrays or static values; they are closed over).
    **kwargs: keyword inputs of ``fn`` (e.g. ``train=False``).

  Returns:
    Every leaf path of ``params`` (as ``_tree.leaf_paths`` spells it: ``'stem/kernel'``
    for an NNX ``State`` of Params), in forward order.

  Raises:
    ValueError: if ``params`` has no leaves.
    TypeError: if ``fn`` is neither callable nor an NNX Module (e.g. arguments swapped).

  Examples:
    A plain function (``'z_first'`` sorts last but is used first):

    >>> import jax.numpy as jnp
    >>> from layca_optax import forward_order
    >>> def fn(params, x):
    ...   return jnp.tanh(x @ params['z_first']) @ params['a_last']
    >>> params = {'a_last': jnp.ones((3, 1)), 'z_first': jnp.ones((2, 3))}
    >>> forward_order(fn, params, jnp.ones((4, 2)))
    ['z_first', 'a_last']

    A Flax Linen model (through ``apply``):

    >>> import flax.linen as nn
    >>> import jax
    >>> class MLP(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     return nn.Dense(1, name='head')(nn.relu(nn.Dense(3, name='stem')(x)))
    >>> model, x = MLP(), jnp.ones((4, 2))
    >>> params = model.init(jax.random.key(0), x)['params']
    >>> forward_order(lambda p, x: model.apply({'params': p}, x), params, x)
    ['stem/kernel', 'stem/bias', 'head/kernel', 'head/bias']

    A Flax NNX model (the module itself, with its Params):

    >>> from flax import nnx
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.stem = nnx.Linear(2, 3, rngs=rngs)
    ...     self.head = nnx.Linear(3, 1, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.head(nnx.relu(self.stem(x)))
    >>> model = Net(nnx.Rngs(0))
    >>> forward_order(model, nnx.state(model, nnx.Param), x)
    ['stem/kernel', 'stem/bias', 'head/kernel', 'head/bias']
  """
  flat = _tree.flatten(params)
  if not flat.leaves:
    raise ValueError(
        "forward_order: `params` has no leaves, so there is nothing to order. Pass the "
        "parameter pytree itself, e.g. `variables['params']` for Linen or "
        "`nnx.state(model, nnx.Param)` for NNX."
    )
  run = _traceable(fn, flat, args, kwargs)
  jaxpr = jax.make_jaxpr(run)(list(flat.leaves)).jaxpr
  if len(jaxpr.invars) != len(flat.leaves):
    raise ValueError(
        f"forward_order: `params` has {len(flat.leaves)} leaves but they trace to "
        f"{len(jaxpr.invars)} inputs; every leaf must be an array or a scalar."
    )
  first_use = _first_uses(jaxpr)
  return _sort_by_first_use(flat.paths, first_use)


def _traceable(
    fn: Any, flat: _tree.Flat, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[list[Any]], tuple[()]]:
  """A function of the leaves of ``params`` alone that runs the forward pass."""
  nnx = sys.modules.get("flax.nnx")
  if nnx is not None and isinstance(fn, nnx.Module):
    return _nnx_traceable(nnx, fn, flat, args, kwargs)
  if not callable(fn):
    raise TypeError(
        f"forward_order: `fn` must be callable, got {type(fn).__name__}. Call it as "
        "`forward_order(fn, params, *args)`, e.g. "
        "`forward_order(lambda p, x: model.apply({'params': p}, x), params, x)` for "
        "Linen or `forward_order(model, nnx.state(model, nnx.Param), x)` for NNX."
    )

  def run(leaves):
    fn(flat.unflatten(leaves), *args, **kwargs)
    # make_jaxpr keeps every traced equation, so the outputs (which need not be
    # arrays) are not needed.
    return ()

  return run


def _nnx_traceable(
    nnx: Any, model: Any, flat: _tree.Flat, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[list[Any]], tuple[()]]:
  """Runs a copy of the NNX ``model`` whose state is updated with the traced params."""
  graphdef, state = nnx.split(model)
  # Merging plain arrays builds fresh Variables, so the copy's side effects (BatchNorm
  # statistics, RNG counts) and the tracers never reach `model`. `nnx.update` rather
  # than a Param-filtered merge accepts any part of the state (Params, all of it, or a
  # pure dict).
  state = _tree.unwrap(state)

  def run(leaves):
    module = nnx.merge(graphdef, state)
    nnx.update(module, flat.unflatten(leaves))
    try:
      _evaluation_mode(nnx, module)(*args, **kwargs)
    except Exception as e:  # re-raised with what forward_order did and how to fix it
      raise type(e)(
          f"forward_order: tracing {type(model).__name__}(*args) failed: {e}\nforward_order "
          "runs the model in evaluation mode (Dropout off, BatchNorm on its running "
          "statistics: nnx.view(model, deterministic=True, use_running_average=True)). If "
          "it needs more to run deterministically, pass it as an argument, e.g. "
          "forward_order(model, params, x, train=False), or order a function instead: "
          "forward_order(lambda p, x: ..., params, x)."
      ) from e
    return ()

  return run


def _evaluation_mode(nnx: Any, module: Any) -> Any:
  """The module with Dropout off and BatchNorm on its running statistics: a forward pass
  that draws no random numbers and updates no statistics, so it can be traced."""
  view = getattr(nnx, "view", None)
  if view is not None:  # Flax >= 0.12
    return view(module, raise_if_not_found=False, deterministic=True, use_running_average=True)
  module.eval()  # pragma: no cover (older Flax)
  return module


def _sort_by_first_use(paths: Sequence[str], first_use: dict[int, int]) -> list[str]:
  """``paths`` by first use, ties and never-used leaves (last) in natural order."""

  def key(i: int):
    tick = first_use.get(i)
    return (tick is None, -1 if tick is None else tick, _tree.natural_key(paths[i]))

  return [paths[i] for i in sorted(range(len(paths)), key=key)]


# ---------------------------------------------------------------------------------
# Jaxpr walk. `env` maps the variables of the jaxpr being walked to leaf indices.


def _first_uses(jaxpr: Any) -> dict[int, int]:
  """``{leaf index: position of the first equation reading it}`` for a top-level jaxpr.

  Positions come from one counter shared by all nesting levels, so an equation deep
  inside a ``jit`` is ordered against the equations around that ``jit``.
  """
  first_use: dict[int, int] = {}
  clock = itertools.count()
  _walk(jaxpr, {v: i for i, v in enumerate(jaxpr.invars)}, first_use, clock)
  return first_use


def _walk(
    jaxpr: Any, env: dict[Any, int], first_use: dict[int, int], clock: Iterator[int]
) -> list[int | None]:
  """Records first uses in ``jaxpr``; returns the leaf each output passes through."""
  for eqn in jaxpr.eqns:
    read = _leaves_read(eqn.invars, env)
    if not read:
      continue
    entered: set[int] = set()
    outputs: list[list[int | None]] = []
    for sub, operands, gives_outputs in _sub_jaxprs(eqn):
      sub_env = _bind(sub.invars, operands, env)
      entered.update(sub_env.values())
      passed = _walk(sub, sub_env, first_use, clock)
      if gives_outputs:
        outputs.append(passed)
    # What is not handed to a sub-jaxpr (a `cond` index, or every operand of a
    # primitive without one) is read by the equation itself.
    tick = next(clock)
    for leaf in read:
      if leaf not in entered:
        first_use.setdefault(leaf, tick)
    _alias_outputs(eqn.outvars, outputs, env)
  return [None if _is_literal(v) else env.get(v) for v in jaxpr.outvars]


def _leaves_read(invars: Sequence[Any], env: dict[Any, int]) -> list[int]:
  return [env[v] for v in invars if not _is_literal(v) and v in env]


def _bind(
    inner: Sequence[Any], outer: Sequence[Any], env: dict[Any, int]
) -> dict[Any, int]:
  """Environment of a sub-jaxpr whose inputs ``inner`` receive the operands ``outer``."""
  return {
      v: env[o] for v, o in zip(inner, outer) if not _is_literal(o) and o in env
  }


def _alias_outputs(
    outvars: Sequence[Any], outputs: list[list[int | None]], env: dict[Any, int]
) -> None:
  """Lets an output that every sub-jaxpr passes through unchanged stand for its leaf.

  ``jax.jit(lambda p: p)(params)`` or an ``nnx.jit`` returning the module's state give
  new variables for the same leaves; later reads of them are reads of those leaves.
  """
  if not outputs:
    return
  for k, var in enumerate(outvars):
    leaves = {passed[k] for passed in outputs}
    if len(leaves) == 1:
      (leaf,) = leaves
      if leaf is not None:
        env[var] = leaf


def _sub_jaxprs(eqn: Any) -> list[tuple[Any, list[Any], bool]]:
  """``(jaxpr, operands bound to its inputs, whether its outputs are eqn's outputs)``.

  ``cond`` and ``while`` pass slices of their operands; every other primitive (``jit``,
  ``remat``, ``custom_jvp_call``, ``custom_vjp_call``, ``scan``, ``shard_map``, ...) is
  recognised generically: a parameter holding jaxprs with as many inputs as the equation
  has operands. Sub-jaxprs matching none of these are not entered, and the equation
  counts as the use of its operands.
  """
  operands = list(eqn.invars)
  name = eqn.primitive.name
  params = eqn.params
  if name == "cond" and "branches" in params:
    candidates = [(j, operands[1:], True) for j in _jaxprs_in(params["branches"])]
  elif name == "while" and {"cond_jaxpr", "body_jaxpr"} <= params.keys():
    n_cond, n_body = params.get("cond_nconsts", 0), params.get("body_nconsts", 0)
    carry = operands[n_cond + n_body:]
    # The condition runs before the body, so its reads come first.
    candidates = [
        (j, operands[:n_cond] + carry, False) for j in _jaxprs_in(params["cond_jaxpr"])
    ] + [
        (j, operands[n_cond:n_cond + n_body] + carry, True)
        for j in _jaxprs_in(params["body_jaxpr"])
    ]
  else:
    candidates = [
        (j, operands, len(j.outvars) == len(eqn.outvars))
        for value in params.values()
        for j in _jaxprs_in(value)
    ]
  return [c for c in candidates if len(c[0].invars) == len(c[1])]


def _jaxprs_in(value: Any) -> list[Any]:
  """The open jaxprs in an equation parameter: a (Closed)Jaxpr or a tuple/list of them.

  Duck-typed, as the jaxpr classes moved between JAX versions: a ClosedJaxpr has
  ``.jaxpr`` and ``.consts``, a Jaxpr has ``.eqns`` and ``.invars``.
  """
  if isinstance(value, (tuple, list)):
    nested = (item for item in value if not isinstance(item, (tuple, list)))
    return [j for item in nested for j in _jaxprs_in(item)]
  if hasattr(value, "jaxpr") and hasattr(value, "consts"):
    value = value.jaxpr
  if hasattr(value, "eqns") and hasattr(value, "invars") and hasattr(value, "outvars"):
    return [value]
  return []


def _is_literal(var: Any) -> bool:
  """True for a constant operand (a Literal), which is no leaf and may be unhashable."""
  if _Literal is not None:
    return isinstance(var, _Literal)
  return hasattr(var, "val")  # pragma: no cover
