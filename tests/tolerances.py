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
