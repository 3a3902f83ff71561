"""A plain NumPy (float64) transcription of Algorithm 1 of the paper, to test against.

Written from the paper and ALGORITHM.md only, line by line, with no code shared with the
library: loops over named arrays, one operation per line.
"""

from __future__ import annotations

import numpy as np


def multipliers(num_layers, alpha, depth_exponent=5.0):
  """Equation (1) with the authors' factor on the exponent, layer 0 = input side."""
  out = []
  for l in range(num_layers):
    if num_layers == 1:
      out.append(1.0)
    elif alpha > 0:
      out.append((1 - alpha) ** (depth_exponent * (num_layers - 1 - l) / (num_layers - 1)))
    else:
      out.append((1 + alpha) ** (depth_exponent * l / (num_layers - 1)))
  return out


class ReferenceLayca:
  """Layca over a dict of NumPy arrays; arrays with ndim >= 2 are layers.

  base: 'sgd' (s = g), 'momentum' (optax.trace: m = mu m + g, s = m) or 'amom' (SGD_AMom,
  an EMA without debiasing: m = mu m + (1 - mu) g, s = m).
  """

  def __init__(self, params, *, lr, alpha=0.0, depth_exponent=5.0, order=None,
               base="sgd", mu=0.9):
    self.lr, self.base, self.mu = lr, base, mu
    layers = [k for k in params if params[k].ndim >= 2]
    order = [k for k in (order or sorted(layers)) if k in layers]
    m = multipliers(len(order), alpha, depth_exponent)
    self.multiplier = {name: m[i] for i, name in enumerate(order)}
    self.norm0 = {k: np.linalg.norm(params[k]) for k in layers}
    self.buffer = {k: np.zeros_like(v, dtype=np.float64) for k, v in params.items()}
    self.t = 0

  def rate(self):
    return self.lr(self.t) if callable(self.lr) else self.lr

  def step(self, params, grads):
    rho = self.rate()
    new = {}
    for name, w in params.items():
      w = np.asarray(w, np.float64)
      g = np.asarray(grads[name], np.float64)
      if self.base == "sgd":
        s = g
      elif self.base == "momentum":
        self.buffer[name] = self.mu * self.buffer[name] + g
        s = self.buffer[name]
      else:
        self.buffer[name] = self.mu * self.buffer[name] + (1 - self.mu) * g
        s = self.buffer[name]
      if name not in self.multiplier:
        new[name] = w - rho * s
        continue
      s = s - (np.sum(s * w)) * w / np.sum(w * w)  # 1: project
      s = s * np.linalg.norm(w) / np.linalg.norm(s)  # 2: normalise
      w_new = w - self.multiplier[name] * rho * s  # 3: step (descent)
      w_new = w_new * self.norm0[name] / np.linalg.norm(w_new)  # 4: back on the sphere
      new[name] = w_new
    self.t += 1
    return new


def angle(a, b):
  """Angle between two arrays in float64 (the unit-vector form: accurate for small angles)."""
  a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
  a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
  return float(2.0 * np.arctan2(np.linalg.norm(a - b), np.linalg.norm(a + b)))
