"""CAM explainers behind a registry.

>>> from benchmark.explainers import create_explainer, default_explainers, list_explainers
>>> len(list_explainers()), len(default_explainers())
(28, 14)

Each method is registered by its module's import below (explicit, no ``import *``).
"""
from benchmark.explainers import (  # noqa: E402  (registration imports)
    ablationcam,
    attention_rollout,
    center,
    chefer,
    eigencam,
    eigengradcam,
    fakecam,
    finercam,
    fullgrad,
    gradcam,
    gradcampp,
    gradient_shap,
    guided_backprop,
    guided_gradcam,
    hirescam,
    integrated_gradients,
    iscam,
    kpcacam,
    layercam,
    occlusion,
    random_cam,
    rise,
    scorecam,
    shapleycam,
    smoothgradcampp,
    sscam,
    xgradcam,
)
from benchmark.explainers.base import BaseExplainer, CAMInputs, normalize_maps
from benchmark.explainers.layers import PAPER_LAYERS, candidate_layers, resolve_target_layer
from benchmark.explainers.plugins import load_entry_points, resolve_explainer
from benchmark.explainers.registry import (
    create_explainer,
    default_explainers,
    describe_explainer,
    explainer_class,
    list_explainers,
    register_explainer,
)

__all__ = [
    "BaseExplainer",
    "CAMInputs",
    "PAPER_LAYERS",
    "candidate_layers",
    "create_explainer",
    "default_explainers",
    "describe_explainer",
    "explainer_class",
    "list_explainers",
    "load_entry_points",
    "normalize_maps",
    "register_explainer",
    "resolve_explainer",
    "resolve_target_layer",
]
