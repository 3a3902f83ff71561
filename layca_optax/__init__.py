"""layca_optax: control and measure layer rotation in JAX with Optax.

Layca (LAYer-level Controlled Amount of weight rotation) rotates every layer's weights by
exactly ``arctan(learning_rate)`` per step, on top of any base optimizer, and the layer
rotation utilities measure how far each layer has turned from its initialisation
(Carbonnelle & De Vleeschouwer, "Layer rotation: a surprisingly powerful indicator of
generalization in deep networks?", 2019).
"""

from layca_optax._checkpoints import curves_from_checkpoints
from layca_optax._curves import (
    CurveBuffer,
    LayerRotationCurves,
    init_curve_buffer,
    record_curve,
)
from layca_optax._layca import LaycaState, ScaleByLaycaState, layca, scale_by_layca
from layca_optax._logging import rotation_scalars
from layca_optax._measure import (
    MeasureRotationState,
    cosine_distance,
    measure_rotation,
    rotation_angle,
    rotation_rates,
)
from layca_optax._numerics import PARALLEL_RTOL
from layca_optax._order import forward_order, natural_order
from layca_optax._plan import (
    alpha_multipliers,
    default_mask,
    output_unit_axes,
    stacked_layer_axes,
    whole_leaf_axes,
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
from layca_optax._tree import leaf_paths, leaves_by_path

__version__ = "0.1.0"

__all__ = [
    "CurveBuffer",
    "LaycaState",
    "LayerRotationCurves",
    "MeasureRotationState",
    "PARALLEL_RTOL",
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
    "leaf_paths",
    "leaves_by_path",
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
    "whole_leaf_axes",
]
