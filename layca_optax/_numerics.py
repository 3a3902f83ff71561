r"""Float32 numerics shared by Layca and the measures: sums, safe ratios and thresholds.

Every reduction of the library is :func:`sum_of_products` in float32, whatever the params'
dtype, summed over a mesh axis when asked. Each threshold is defined here once, with the
measurement behind it:

* :data:`PARALLEL_RTOL`: a step whose part orthogonal to :math:`w` is this small is zero
  (:func:`tangent_is_zero`).
* :data:`NEARLY_PARALLEL`: below this :math:`\|p\|^2 / \|s\|^2` the tangent part of a step
  (or of a change of the params) is measured in a second pass instead of from the three
  sums (:func:`nearly_parallel`).
* :data:`TINY`: squared norms at or below the smallest normal float32 count as zero.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp

__all__: list[str] = []  # private module; PARALLEL_RTOL is re-exported by the package

#: A mesh axis name, or a tuple of them, as ``jax.lax.psum`` takes.
AxisName = Hashable | tuple[Hashable, ...]

#: A step whose component orthogonal to :math:`w` is at most this fraction of its norm
#: (an angle below 1e-5 rad between step and weights) is numerically parallel to
#: :math:`w`: float32 rounding alone leaves up to about 3e-7 of it after the projection,
#: and normalising that residue would rotate the layer in a random direction.
PARALLEL_RTOL = 1e-5

#: Below this ratio :math:`\|p\|^2 / \|s\|^2` the one-pass :math:`\|p\|^2 = s \cdot s -
#: k\,(s \cdot w)` has cancelled: its absolute error is a few :math:`\epsilon\, s \cdot s`
#: (the rounding of the sums), so at this ratio :math:`\|p\|` is still good to ~2e-5
#: relative (measured with XLA:CPU: 2.1e-5 on 2,048 elements, 1.3e-5 on 10^6) and below it
#: :math:`p` is formed and measured in a second pass (``_layca.tangent_parts``).
NEARLY_PARALLEL = 1e-2

#: Squared norms at or below the smallest normal float32 count as zero: their square
#: roots and ratios would be denormal or infinite.
TINY = float(jnp.finfo(jnp.float32).tiny)


def as_f32(x: Any) -> jax.Array:
  """``x`` in float32 (the precision of every reduction, whatever the param dtype).

  Complex leaves (never layers, but they may be biases or other non-layer leaves) become
  complex64 rather than losing their imaginary part. The ``float0`` gradient that
  ``jax.grad(..., allow_int=True)`` gives an integer leaf has no values: it raises.
  """
  dtype = jnp.result_type(x)
  if dtype == jax.dtypes.float0:
    raise TypeError(
        "Got a float0 gradient (what jax.grad(..., allow_int=True) returns for an "
        "integer leaf); it has no values to step with. Differentiate with respect to the "
        "floating-point leaves only, or give the integer leaves a zero update with "
        "optax.partition({'train': tx, 'frozen': optax.set_to_zero()}, labels) and "
        "float gradients."
    )
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return jnp.asarray(x, jnp.complex64)
  return jnp.asarray(x, jnp.float32)


def concrete_float(x: Any) -> float | None:
  """``float(x)`` when ``x`` is a concrete number, ``None`` when it is traced."""
  # float('0.1') would parse a string: a number given as text is a bug to report.
  if isinstance(x, (jax.core.Tracer, str, bytes)):
    return None
  try:
    return float(x)
  except (jax.errors.ConcretizationTypeError, TypeError):
    return None


def safe_ratio(num: Any, den: Any) -> jax.Array:
  """``num / den`` where ``den != 0``, else 0 (no NaN in either branch's gradient)."""
  nonzero = den != 0
  return jnp.where(nonzero, num / jnp.where(nonzero, den, 1.0), 0.0)


def tangent_is_zero(perp_sq: jax.Array, step_sq: jax.Array) -> jax.Array:
  """Is a projected step (squared norm ``perp_sq``, from ``step_sq``) numerically zero?"""
  return (perp_sq <= PARALLEL_RTOL**2 * step_sq) | (perp_sq <= TINY)


def nearly_parallel(perp_sq: jax.Array, step_sq: jax.Array) -> jax.Array:
  """Has ``perp_sq = ||s||^2 - (s.w)^2 / ||w||^2``, computed from the sums, cancelled?"""
  return perp_sq < NEARLY_PARALLEL * step_sq


def sum_of_products(
    a: jax.Array,
    b: jax.Array,
    axes: tuple[int, ...] | None = None,
    axis_name: AxisName | None = None,
) -> jax.Array:
  """``sum(a * b)`` in float32 over ``axes``, and over the mesh axis ``axis_name`` if given.

  ``axes=None`` sums everything into a scalar; a tuple of axes sums over those only and
  keeps them as size-1 axes (one value per rotating vector, broadcastable to ``a``), also
  when they are all of ``a``'s axes. Summed into scalars instead, a whole-leaf layer's
  sums compile faster on XLA:CPU (a 500-layer step 7.4 s against 9.8 s,
  ``benchmarks.compile_time``) but the step of the vgg18m tree ran 3-5 % slower in seven
  paired runs (``python -m benchmarks.paired``, same rounds, 30-60 rounds each:
  ``benchmarks/results_issue23_paired.txt``): the step is paid every iteration. Measured
  on XLA:CPU only; on a GPU neither form has been timed.

  Written as an elementwise product and a sum, not ``jnp.vdot``: dot products of float32
  arrays may run at reduced precision on accelerators (TF32, bf16 passes) and ``vdot`` of
  leaves sharded on a 2-D mesh raises, while this form is exact float32 everywhere.
  Complex leaves count as real vectors of twice the length: ``sum(real(a * conj(b)))``.
  Inside ``shard_map`` (or ``pmap``) each device holds a slice of a leaf: ``axis_name``
  sums the slices' partial results so every device gets the whole leaf's value (over the
  axes the leaf is sharded on, see :func:`summed_mesh_axes`).

  Examples:
    >>> import jax.numpy as jnp
    >>> from layca_optax._numerics import sum_of_products
    >>> x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    >>> float(sum_of_products(x, x))
    30.0
    >>> sum_of_products(x, x, axes=(0,)).tolist()  # one value per column
    [[10.0, 20.0]]
  """
  a, b = as_f32(a), as_f32(b)
  if jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
    # The real inner product of C^n seen as R^2n: norms and angles stay real.
    product = jnp.real(a * jnp.conj(b))
  else:
    product = a * b
  total = jnp.sum(product, axis=axes, keepdims=axes is not None)
  if axis_name is None:
    return total
  mesh_axes = summed_mesh_axes(total, axis_name)
  return jax.lax.psum(total, mesh_axes) if mesh_axes else total


def drop_vector_axes(per_vector: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """``sum_of_products(..., axes)`` without its size-1 ``axes``: one value per vector."""
  return jnp.squeeze(per_vector, axis=axes)


def _varying_axes(x: Any) -> frozenset | None:
  """The mesh axes over which ``x`` varies inside ``shard_map``; ``None`` if unknown.

  JAX tracks it in the abstract value (``vma`` in jax 0.6-0.9, ``manual_axis_type``
  later) unless ``shard_map(..., check_vma=False)``, ``pmap`` or ``vmap``, where every
  set is empty.
  """
  typeof = getattr(jax, "typeof", None)
  if typeof is None:
    return None
  aval = typeof(x)
  varying = getattr(aval, "vma", None)
  if varying is None:
    varying = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
  return None if varying is None else frozenset(varying)


def summed_mesh_axes(total: jax.Array, axis_name: AxisName) -> tuple[Hashable, ...]:
  """The axes of ``axis_name`` that ``psum`` must sum ``total``'s partial results over.

  A leaf replicated over a named axis (a bias next to sharded kernels) already holds its
  whole value there: summing its copies would count it once per device, and ``psum``
  over a mix of axes a value does and does not vary over raises. Where JAX tracks which
  axes vary (``shard_map``'s default ``check_vma=True``) only those axes are summed;
  where it does not (``check_vma=False``, ``pmap``, ``vmap``) every named axis is, and each
  device must hold a distinct slice.
  """
  names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  varying = _varying_axes(total)
  if varying is None:
    return names

  def tracked(name: Hashable) -> bool:  # axis_index varies over its axis iff JAX tracks it
    return name in (_varying_axes(jax.lax.axis_index(name)) or ())

  return tuple(n for n in names if n in varying or not tracked(n))
