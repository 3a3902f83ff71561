"""Float32 error bounds of the library, from which the tests take their tolerances.

Every tolerance a test uses against a float64 reference comes from here, with its
derivation, so that it holds on any x86-64 CPU (whatever the reduction order XLA picks),
not only on the machine that printed a number.
"""

import math

from layca_optax import _numerics

#: Unit roundoff of float32.
EPS = 2.0**-24


def sum_error(size: int) -> float:
  """Relative error bound, in units of EPS, of a float32 sum of ``size`` products.

  A sum reduced as a tree (pairwise, as XLA's reductions are on CPU and GPU) is within
  ``ceil(log2(size)) EPS`` of its value relative to the sum of the terms' magnitudes
  (Higham, *Accuracy and Stability of Numerical Algorithms*, 4.2); one more EPS for the
  rounding of each product.
  """
  return math.ceil(math.log2(max(size, 2))) + 1


def tangent_rtol(size: int = 4096) -> float:
  """Relative error of the tangent norm ``||p||`` of a step ``s = k w + p``.

  From the sums, ``||p||^2 = s.s - k s.w`` is off by up to ``2 sum_error EPS s.s``
  (``s.s`` and ``k s.w`` each). The library uses it only where
  ``||p||^2 >= NEARLY_PARALLEL s.s`` and measures ``p`` directly below, so ``||p||^2`` is
  good to ``2 sum_error EPS / NEARLY_PARALLEL`` and ``||p||`` to half of that.
  """
  return sum_error(size) * EPS / _numerics.NEARLY_PARALLEL


def angle_rtol(size: int = 4096) -> float:
  """Relative error of an angle the library computes or produces (largest leaf ``size``).

  A Layca step's angle is ``arctan(beta ||p|| / ||w||)`` and the measures' angles
  ``atan2(||p||, k ||w||)``: off by ``tangent_rtol`` plus a few roundings (8 EPS), and
  ``d atan(x) / atan(x) <= d x / x``. For leaves up to 4,096 elements: 7.8e-5.
  """
  return tangent_rtol(size) + 8 * EPS


def distance_rtol(size: int = 4096) -> float:
  """Relative error of a cosine distance ``1 - cos(theta) = ||p||^2 / (|a| (|a| + k |b|))``:
  ``||p||^2`` carries twice the relative error of ``||p||``."""
  return 2 * angle_rtol(size)


def norm_rtol(rate: float, tangent_fraction: float = 1.0, size: int = 4096) -> float:
  """Relative error of ``||w'|| = ||w_0||`` after one Layca step.

  Three terms: (1) the factor ``gamma = ||w_0|| / (||w|| sqrt(1 + rho^2))`` assumes
  ``beta ||p|| = rho ||w||``; an error ``tangent_rtol`` in ``||p||`` moves the norm by
  ``rho^2 / (1 + rho^2)`` of it. (2) A few roundings in the scalars and in
  ``apply_updates``: 8 EPS. (3) ``p = s - k w`` formed elementwise carries a rounding of
  about ``EPS |s_i|`` per element, scaled by ``beta = rho ||w|| / ||p||``; its component
  along ``w`` is a sum of ``size`` independent terms, so it moves the norm by about
  ``2 EPS rho / (tangent_fraction sqrt(size))`` (four standard deviations here), where
  ``tangent_fraction = ||p|| / ||s||``.
  """
  gamma = rate**2 / (1.0 + rate**2) * tangent_rtol(size)
  elementwise = 4 * 2 * EPS * rate / (tangent_fraction * math.sqrt(size))
  return gamma + 8 * EPS + elementwise


#: One float32 operation on values (a product, a sum, a cast): within EPS of the float64
#: result; a few chained ones, within ``ELEMENTWISE_RTOL``.
ELEMENTWISE_RTOL = 4 * EPS


def applied_angle_rtol(rate: float, size: int = 4096) -> float:
  """Relative error of a Layca step's angle as measured between float32 params.

  The step's own angle error and the measurement's (``angle_rtol`` each), plus the
  rounding of ``w + u`` to float32: ``EPS |w_i|`` per element, random, of which the part
  along the step's direction (size ``rate ||w||``) is about ``EPS ||w|| / sqrt(size)``;
  four standard deviations, relative to the angle ``~ rate``.
  """
  return 2 * angle_rtol(size) + 4 * EPS / (min(rate, 1.0) * math.sqrt(size))


def trajectory_rtol(
    rate: float, steps: int, size: int = 4096, tangent_fraction: float = 1.0
) -> float:
  """Relative distance ``||w_float32 - w_exact|| / ||w||`` after ``steps`` Layca steps.

  Each step moves ``w`` by ``rate ||w||`` in a direction off by ``angle_rtol`` and puts it
  on its sphere to ``norm_rtol``; the errors of successive steps add (the gradients of
  the tests do not amplify them over a few steps).
  """
  per_step = min(rate, 1.0) * angle_rtol(size) + norm_rtol(rate, tangent_fraction, size)
  return steps * per_step + ELEMENTWISE_RTOL


def assert_close_in_norm(actual, desired, rtol: float, err_msg: str = "") -> None:
  """``||actual - desired|| <= rtol ||desired||`` (in float64): an error bound on a vector.

  Elementwise relative tolerances do not follow from a bound on a vector's error: an
  element near zero carries an error of the size of the others'.
  """
  import numpy as np

  actual = np.asarray(actual, np.float64)
  desired = np.asarray(desired, np.float64)
  error = float(np.linalg.norm(actual - desired))
  scale = float(np.linalg.norm(desired))
  assert error <= rtol * scale, (
      f"{err_msg}: ||actual - desired|| = {error:.3g} > {rtol:.3g} * ||desired|| "
      f"= {rtol * scale:.3g}"
  )


def update_rtol(rate: float, tangent_fraction: float = 1.0, size: int = 4096) -> float:
  """Relative error of a Layca update ``u = w' - w`` (``|u|`` is about ``rate |w|``).

  ``w'``'s direction and norm errors (``angle_rtol`` of the angle ``rate``,
  ``norm_rtol`` of ``|w|``), and the rounding of ``u`` itself, ``EPS |w_i|`` per element:
  ``EPS / rate`` relative to ``|u|``.
  """
  small = min(rate, 1.0)
  return angle_rtol(size) + (norm_rtol(rate, tangent_fraction, size) + 4 * EPS) / small
