"""layca_optax: control and measure layer rotation in JAX with Optax.

Layca (LAYer-level Controlled Amount of weight rotation) rotates every layer's weights by
exactly ``arctan(learning_rate)`` per step, on top of any base optimizer, and the layer
rotation utilities measure how far each layer has turned from its initialisation
(Carbonnelle & De Vleeschouwer, "Layer rotation: a surprisingly powerful indicator of
generalization in deep networks?", 2019).

The optimizer: :func:`layca` (``optax.chain(base_optimizer, scale_by_layca(...))``), its
four composable operations, the layer-wise rates. Measurement: cosine distances and
angles, the per-step monitor, layer rotation curves (from a training loop or from
checkpoints), their plots and logger scalars.
"""

import warnings as _warnings

from layca_optax import _layca, _numerics, _plan, _tree
from layca_optax._checkpoints import curves_from_checkpoints
from layca_optax._curves import (
    CurveBuffer,
    LayerRotationCurves,
    init_curve_buffer,
    record_curve,
)
from layca_optax._layca import ScaleByLaycaState, layca, scale_by_layca
from layca_optax._logging import rotation_scalars
from layca_optax._measure import (
    MeasureRotationState,
    cosine_distance,
    measure_rotation,
    rotation_angle,
    rotation_rates,
)
from layca_optax._order import forward_order, natural_order
from layca_optax._plan import (
    alpha_multipliers,
    default_mask,
    output_unit_axes,
    stacked_layer_axes,
)
from layca_optax._plotting import plot_layer_rotation_curves, plot_rotation_rates
from layca_optax._rates import PerLeafRates, replay_rates
from layca_optax._transforms import (
    ProjectToSphereState,
    ScaleByLayerRatesState,
    normalize_rotation,
    project_orthogonal,
    project_to_sphere,
    scale_by_layer_rates,
)

__version__ = "0.1.0"

__all__ = [
    "CurveBuffer",
    "LayerRotationCurves",
    "MeasureRotationState",
    "PerLeafRates",
    "ProjectToSphereState",
    "ScaleByLaycaState",
    "ScaleByLayerRatesState",
    "alpha_multipliers",
    "cosine_distance",
    "curves_from_checkpoints",
    "default_mask",
    "forward_order",
    "init_curve_buffer",
    "layca",
    "measure_rotation",
    "natural_order",
    "normalize_rotation",
    "output_unit_axes",
    "plot_layer_rotation_curves",
    "plot_rotation_rates",
    "project_orthogonal",
    "project_to_sphere",
    "record_curve",
    "replay_rates",
    "rotation_angle",
    "rotation_rates",
    "rotation_scalars",
    "scale_by_layca",
    "scale_by_layer_rates",
    "stacked_layer_axes",
]

#: Names of 0.1 that still work for one release, with a DeprecationWarning: name ->
#: (what to use instead, the object).
_DEPRECATED = {
    "LaycaState": (
        "use layca_optax.ScaleByLaycaState (the same class: checkpoints are unchanged)",
        _layca.ScaleByLaycaState,
    ),
    "PARALLEL_RTOL": (
        "it is an internal threshold of the library, not a setting",
        _numerics.PARALLEL_RTOL,
    ),
    "whole_leaf_axes": (
        "rotation_axes=None (the default) already makes each leaf one vector",
        _plan.whole_leaf_axes,
    ),
    "leaf_paths": (
        "use [jax.tree_util.keystr(p, simple=True, separator='/') for p, _ in "
        "jax.tree_util.tree_flatten_with_path(tree)[0]]",
        _tree.leaf_paths,
    ),
    "leaves_by_path": (
        "use {jax.tree_util.keystr(p, simple=True, separator='/'): x for p, x in "
        "jax.tree_util.tree_flatten_with_path(tree)[0]}",
        _tree.leaves_by_path,
    ),
}


def __getattr__(name: str):
  if name in _DEPRECATED:
    instead, value = _DEPRECATED[name]
    _warnings.warn(
        f"layca_optax.{name} is deprecated and will be removed in the next release: "
        f"{instead}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
  raise AttributeError(f"module 'layca_optax' has no attribute {name!r}")
