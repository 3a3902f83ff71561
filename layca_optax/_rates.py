"""Learning rates: a float or an optax schedule, evaluated at the step count."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from layca_optax import _layers


def check_learning_rate(learning_rate: Any, owner: str) -> None:
  """Raises for a concrete negative or non-finite learning rate, or a wrong type."""
  if callable(learning_rate):
    return
  value = _layers.concrete_float(learning_rate)
  if value is None:
    if isinstance(learning_rate, jax.core.Tracer):
      return  # injected (optax.inject_hyperparams) under jit: checked when concrete
    raise TypeError(
        f"{owner}: learning_rate must be a float or an optax schedule (a callable "
        f"step -> rate), got {learning_rate!r}. For example learning_rate=3**-3 or "
        "optax.piecewise_constant_schedule(3**-3, {8000: 0.2})."
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
  value = _layers.concrete_float(rate)
  if value is not None and not 0.0 <= value < float("inf"):
    raise ValueError(
        f"The learning-rate schedule returned {value} at step {int(count)}; Layca needs "
        "a finite rate >= 0 (tan of the angle per step). Check the schedule, e.g. "
        "optax.piecewise_constant_schedule(3**-3, {8000: 0.2}) never goes below 0."
    )
  return jnp.asarray(rate, jnp.float32)
