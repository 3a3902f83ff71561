r"""Learning rates: a float, an optax schedule, or one of those per leaf (AdaptCopy).

Layca's learning rate is :math:`\rho(t) = \tan(\text{angle per step})`. It is a float, an
optax schedule (``step -> rate``), or a :class:`PerLeafRates`: a rate or schedule per leaf
of the params, which is what :func:`replay_rates` builds to replay recorded rotation rates.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layca_optax import _numerics, _tree

__all__ = ["PerLeafRates", "replay_rates"]


def _is_rate(x: Any) -> bool:
  """A leaf of a per-leaf rate tree: ``None``, a number, an array or a schedule."""
  return x is None or callable(x) or isinstance(x, (int, float, np.ndarray, jax.Array))


@dataclasses.dataclass(frozen=True)
class PerLeafRates:
  r"""A learning rate per leaf: :math:`\rho_\text{leaf}(t)` instead of one :math:`\rho(t)`.

  ``layca``, ``scale_by_layer_rates`` (and so the composable chain) accept it as their
  ``learning_rate``. Each leaf's rate replaces the global :math:`\rho(t)`: a layer leaf
  rotates by :math:`\arctan(m_l \rho_\text{leaf}(t))` per step (:math:`m_l = 1` for the
  default ``alpha=0``), a non-layer leaf is stepped by :math:`-\rho_\text{leaf}(t)\, s`.

  Attributes:
    rates: a pytree with the structure of the params, or a prefix of it (one value for a
      whole subtree), whose leaves are floats, optax schedules, or ``None`` (use
      ``default``). A rate may also be an array (or a schedule returning one) with one
      value per rotating vector of a leaf with ``rotation_axes``: the leaf's shape
      without its rotation axes.
    default: the rate (float or schedule) of leaves whose rate is ``None``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from layca_optax import PerLeafRates, layca, rotation_angle
    >>> params = {'a': jnp.eye(2), 'b': jnp.eye(2)}
    >>> grads = {'a': jnp.ones((2, 2)).at[0, 0].set(0.0), 'b': jnp.ones((2, 2))}
    >>> tx = layca(PerLeafRates({'a': 0.1, 'b': optax.constant_schedule(0.2)}))
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> angles = rotation_angle(optax.apply_updates(params, updates), params)
    >>> [round(float(jnp.tan(angles[k])), 4) for k in 'ab']
    [0.1, 0.2]
  """

  rates: Any
  default: optax.ScalarOrSchedule = 0.0

  def __post_init__(self):
    for value in [*jax.tree.leaves(self.rates, is_leaf=_is_rate), self.default]:
      if value is not None and not callable(value):
        _check_concrete_rates(np.asarray(value), "PerLeafRates")

  def per_leaf(self, params: Any, owner: str) -> list[Any]:
    """Each leaf's rate or schedule (``default`` where ``None``), flattening order."""
    full = _tree.broadcast_prefix(self.rates, params, is_leaf=_is_rate)
    if full is None:
      raise ValueError(
          f"{owner}: PerLeafRates.rates must have the structure of the params (or a "
          "prefix of it) with a float, schedule or None per leaf. Its structure does not "
          f"fit the params:\n  rates:  {jax.tree.structure(self.rates, is_leaf=_is_rate)}"
          f"\n  params: {jax.tree.structure(_tree.unwrap(params))}\nFor example "
          "PerLeafRates({'Dense_0': {'kernel': 0.1, 'bias': None}}, default=0.0)."
      )
    return [self.default if rate is None else rate for rate in full]


def _check_concrete_rates(values: np.ndarray, owner: str) -> None:
  if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
    raise TypeError(
        f"{owner}: a learning rate must be a real number or a schedule, got an array of "
        f"dtype {values.dtype}. For example 0.1 or optax.constant_schedule(0.1)."
    )
  bad = ~(np.isfinite(values) & (values >= 0))
  if bad.any():
    raise ValueError(
        f"{owner}: learning rates must be finite numbers >= 0 (tan of the angle per "
        f"step), got {values[bad].ravel()[:3].tolist()}. For example 3**-3."
    )


def check_learning_rate(learning_rate: Any, owner: str) -> None:
  """Raises for a concrete negative or non-finite learning rate, or a wrong type."""
  if callable(learning_rate) or isinstance(learning_rate, PerLeafRates):
    return  # a PerLeafRates checked its constant rates when it was built
  value = _numerics.concrete_float(learning_rate)
  if value is None:
    if isinstance(learning_rate, jax.core.Tracer):
      return  # injected (optax.inject_hyperparams) under jit: checked when concrete
    raise TypeError(
        f"{owner}: learning_rate must be a float or an optax schedule (a callable "
        f"step -> rate) or a layca_optax.PerLeafRates, got {learning_rate!r}. For example "
        "learning_rate=3**-3 or optax.piecewise_constant_schedule(3**-3, {8000: 0.2})."
    )
  if not value >= 0 or value == float("inf"):
    raise ValueError(
        f"{owner}: learning_rate must be a finite number >= 0, got {value}. Layca's "
        "rate rho is tan(angle per step) and the step always descends; for example "
        "learning_rate=3**-3 rotates each layer by arctan(1/27) = 2.1 degrees per step."
    )


def rate_at(learning_rate: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """rho(t) as a float32 scalar: the schedule at ``count``, or the constant."""
  if not callable(learning_rate):
    return jnp.asarray(learning_rate, jnp.float32)
  rate = learning_rate(count)
  # Outside jit the schedule's value is known: check it as the constructor checks a
  # constant (a negative rate would rotate uphill). Under jit it is traced: no check.
  value = _numerics.concrete_float(rate) if jnp.ndim(rate) == 0 else None
  if value is not None and not 0.0 <= value < float("inf"):
    raise ValueError(
        f"The learning-rate schedule returned {value} at step {int(count)}; Layca needs "
        "a finite rate >= 0 (tan of the angle per step). Check the schedule, e.g. "
        "optax.piecewise_constant_schedule(3**-3, {8000: 0.2}) never goes below 0."
    )
  return jnp.asarray(rate, jnp.float32)


def leaf_rates(learning_rate: Any, count: jax.Array, params: Any, plan: Any) -> list[jax.Array]:
  """rho(t) of every leaf (float32): the global rate, or each leaf's own.

  ``plan`` is the params' ``_plan.LayerPlan``. A leaf's rate is a scalar, or for a leaf
  with rotation axes an array with one value per rotating vector, returned with size-1
  vector axes so that it broadcasts on the leaf.
  """
  if not isinstance(learning_rate, PerLeafRates):
    return [rate_at(learning_rate, count)] * len(plan.leaves)
  out = []
  for rate, leaf in zip(learning_rate.per_leaf(params, plan.owner), plan.leaves):
    rho = rate_at(rate, count)
    if rho.ndim:
      if rho.shape != leaf.vector_count_shape:
        raise ValueError(
            f"{plan.owner}: the rate of {leaf.path!r} has shape {rho.shape}; a rate is a "
            "scalar, or one value per rotating vector of the leaf: shape "
            f"{leaf.vector_count_shape} for its rotation axes {leaf.vector_axes}."
        )
      rho = leaf.expand(rho)
    out.append(rho)
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class _Replay:
  """The schedule ``t -> tan(angles[min(t, T - 1)])`` of one recorded leaf."""

  rates: jax.Array  # (T, *vectors) float32

  def __call__(self, count: jax.Array) -> jax.Array:
    return self.rates[jnp.minimum(count, self.rates.shape[0] - 1)]


def replay_rates(angles: Any, *, default: optax.ScalarOrSchedule = 0.0) -> PerLeafRates:
  r"""AdaptCopy: learning rates that make Layca rotate each layer by recorded angles.

  One Layca step rotates a layer by exactly :math:`\arctan \rho` (Algorithm 1), so the rates

  .. math::
    \rho_l(t) = \tan \theta_l(t)

  replay angles :math:`\theta_l(t)` recorded while training with another optimizer (for
  example Adam, with ``measure_rotation`` and ``rotation_rates``): the copy has the same
  layer rotation rates without the parameter-level adaptivity (the paper's AdaptCopy,
  Section 5.4). The tangent is computed in float64 from the recorded angles.

  Args:
    angles: a pytree (the params' structure, or a prefix of it) of arrays of shape
      ``(T,)``: the angle in radians of step ``t = 0..T-1`` (or ``(T, *vectors)`` for a
      leaf recorded with ``rotation_axes``). ``None`` leaves get ``default``. Stack the
      per-step ``rotation_rates(opt_state)`` with
      ``jax.tree.map(lambda *a: jnp.stack(a), *records)``. After its last recorded step a
      leaf keeps its last angle.
    default: the rate of leaves without recorded angles (``None``); 0 freezes them.

  Returns:
    A :class:`PerLeafRates` for ``layca(learning_rate=...)`` or ``scale_by_layer_rates``.
    Use it with ``alpha=0`` (the default): alpha would multiply the replayed rates.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from layca_optax import layca, replay_rates, rotation_angle
    >>> params = {'w': jnp.eye(3)}
    >>> grads = {'w': jnp.ones((3, 3))}
    >>> tx = layca(replay_rates({'w': jnp.array([0.1, 0.02])}))
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   new, state = tx.update(grads, state, params)
    ...   new = optax.apply_updates(params, new)
    ...   print(f"{float(rotation_angle(new, params)['w']):.4f}")
    ...   params = new
    0.1000
    0.0200
  """
  def leaf(a):
    if a is None:
      return None
    values = np.asarray(a, np.float64)
    if values.ndim < 1 or values.shape[0] == 0:
      raise ValueError(
          "replay_rates: each leaf of `angles` must be an array of per-step angles of "
          f"shape (T,) or (T, *vectors) with T >= 1, got shape {values.shape}. Stack the "
          "recorded rotation_rates(opt_state) with jax.tree.map(lambda *a: jnp.stack(a), "
          "*records)."
      )
    bad = ~(np.isfinite(values) & (values >= 0) & (values < math.pi / 2))
    if bad.any():
      step = int(np.argwhere(bad)[0][0])
      raise ValueError(
          "replay_rates: one Layca step rotates by arctan(rho) < pi/2, so angles must be "
          f"finite and in [0, pi/2); got {values[bad].ravel()[0]} at step {step}. Record "
          "angles with measure_rotation (one step's angle, in radians)."
      )
    return _Replay(jnp.asarray(np.tan(values), jnp.float32))

  return PerLeafRates(jax.tree.map(leaf, angles, is_leaf=lambda x: x is None), default)


#: What ``layca``, ``scale_by_layca`` and ``scale_by_layer_rates`` take as a learning rate.
LearningRate: TypeAlias = "optax.ScalarOrSchedule | PerLeafRates"
