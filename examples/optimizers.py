"""The optimizers and schedules of the paper's experiments, built from optax and layca_optax.

Schedules are in steps (what optax counts), built from epochs and the steps per epoch:

* :func:`step_decay`: the paper's step decay (x0.2 at 80 % of training for C10-CNN1).
* :func:`with_warmup`: a linear warm-up from a tenth of the rate (Section 5.3).

Optimizers that are not one call of ``optax`` or ``layca_optax``:

* :func:`sgd_weight_decay`: SGD + L2 weight decay, the paper's strong baseline.
* :func:`lars_ng_adap`: the LARS-like variant of Supplementary A.4 (Layca without its
  operations 1 and 4, with a cap on norm growth), built on layca_optax's transforms.
* :data:`ADAPTIVE_BASES`: the adaptive methods of Section 5.4 as Layca bases and as
  plain optimizers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import layca_optax

#: The paper's decay factor (x0.2) and its points for C10-CNN1 (80, 90, 97 of 100 epochs).
DECAY_FACTOR = 0.2
PAPER_DECAY_AT = (0.8, 0.9, 0.97)


def step_decay(
    init_value: float,
    epochs: int,
    steps_per_epoch: int,
    *,
    at: Sequence[float] = (0.8,),
    factor: float = DECAY_FACTOR,
) -> optax.Schedule:
  """``init_value``, times ``factor`` from each epoch ``round(a * epochs)``, ``a`` in ``at``.

  Decay points that round to epoch 0 or to the end of training (too short a run) and
  repeated points are dropped, so a 1-epoch run is a constant rate.

  Examples:
    >>> from examples.optimizers import step_decay
    >>> schedule = step_decay(1.0, epochs=10, steps_per_epoch=5)
    >>> [float(schedule(s)) for s in (39, 40)]
    [1.0, 0.2]
  """
  epochs_at = sorted({round(a * epochs) for a in at} - {0, epochs})
  epochs_at = [e for e in epochs_at if 0 < e < epochs]
  if not epochs_at:
    return optax.constant_schedule(init_value)
  return optax.piecewise_constant_schedule(
      init_value, {e * steps_per_epoch: factor for e in epochs_at}
  )


def with_warmup(
    schedule: optax.Schedule,
    warmup_epochs: float,
    steps_per_epoch: int,
    *,
    start_factor: float = 0.1,
) -> optax.Schedule:
  """A linear warm-up from ``start_factor * schedule(0)`` to ``schedule`` over the epochs.

  The paper (Section 5.3) warms SGD up from a tenth of its rate; after the warm-up the
  ``schedule`` continues at its own step count.
  """
  steps = round(warmup_epochs * steps_per_epoch)
  if steps <= 0:
    return schedule
  start = schedule(0)
  warmup = optax.linear_schedule(start_factor * start, start, steps)
  return optax.join_schedules([warmup, lambda count: schedule(count + steps)], [steps])


def sgd_weight_decay(
    learning_rate: optax.ScalarOrSchedule, weight_decay: float, *, momentum: float | None = None
) -> optax.GradientTransformation:
  r"""SGD with L2 weight decay: :math:`w \leftarrow w - \eta (g + \lambda w)`.

  Weight decay on the kernels of a BatchNorm network keeps their norm small, which makes
  SGD's steps rotate them more (the paper's explanation of why it works, Section 5.2).
  """
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=layca_optax.default_mask),
      optax.sgd(learning_rate, momentum=momentum),
  )


#: name -> (a layca base, the plain optimizer at rate lr).
ADAPTIVE_BASES: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {
    "Adam": (optax.scale_by_adam, optax.adam),
    "RMSProp": (lambda: optax.scale_by_rms(decay=0.9, eps=1e-7), optax.rmsprop),
    "Adagrad": (lambda: optax.scale_by_rss(initial_accumulator_value=0.0), optax.adagrad),
}


class CapNormGrowthState(NamedTuple):
  initial_norms: tuple[jax.Array, ...]  # ||w_0|| per leaf (flattening order), 0 if not a layer


def _norm(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x, jnp.float32)
  return jnp.sqrt(jnp.sum(x * x))


def cap_norm_growth(max_growth: float = 1e-4) -> optax.GradientTransformation:
  r"""Caps each kernel's norm *increase* per step at ``max_growth * ||w_0||``.

  With :math:`w' = w + u`: if :math:`\|w'\| > \|w\| + c \|w_0\|` then :math:`w'` is scaled
  back to that norm (its direction is kept); otherwise, decreases included, the update
  passes unchanged (Supplementary A.4 of the paper). Kernels are
  ``layca_optax.default_mask``'s layers (``ndim >= 2``); other leaves, and kernels whose
  initial norm is zero (no reference norm), pass. Must come last in a chain.
  """
  def init_fn(params):
    leaves = jax.tree.leaves(params)  # arrays (NNX Variables flatten to their values)
    return CapNormGrowthState(tuple(
        _norm(w) if jnp.ndim(w) >= 2 else jnp.zeros([], jnp.float32) for w in leaves
    ))

  def update_fn(updates, state, params=None):
    def cap(u, w, norm0):
      if jnp.ndim(w) < 2:
        return u
      w32 = jnp.asarray(w, jnp.float32)
      new = w32 + jnp.asarray(u, jnp.float32)
      limit, new_norm = _norm(w32) + max_growth * norm0, _norm(new)
      capped = new * (limit / jnp.maximum(new_norm, 1e-30)) - w32
      # Uncapped updates are returned as they are (not as (w + u) - w, which rounds).
      return jnp.where((new_norm > limit) & (norm0 > 0), capped, u).astype(u.dtype)

    leaves, treedef = jax.tree.flatten(updates)
    capped = map(cap, leaves, jax.tree.leaves(params), state.initial_norms)
    return jax.tree.unflatten(treedef, list(capped)), state

  return optax.GradientTransformation(init_fn, update_fn)


def lars_ng_adap(
    learning_rate: optax.ScalarOrSchedule,
    *,
    base: optax.GradientTransformation | None = None,
    max_growth: float = 1e-4,
    layer_order: Sequence[str] | None = None,
) -> optax.GradientTransformation:
  r"""The LARS / NG_adap variant of Supplementary A.4: Layca without operations 1 and 4.

  .. math::
    w' = w - \rho\, s\, \frac{\|w\|}{\|s\|}, \qquad
    \|w'\| \le \|w\| + 10^{-4} \|w_0\|

  The step is not projected orthogonally to :math:`w`, and the norm is not reset to the
  initial sphere; only its growth per step is capped.
  """
  return optax.chain(
      base or optax.identity(),
      layca_optax.normalize_rotation(),
      layca_optax.scale_by_layer_rates(learning_rate, layer_order=layer_order),
      cap_norm_growth(max_growth),
  )
