"""Functional metrics: pure functions, ``reduction="mean"`` or ``"none"``."""
from benchmark.metrics.functional.adcc import adcc, average_drop, average_increase, coherency, complexity
from benchmark.metrics.functional.box_ratio import box_ratio
from benchmark.metrics.functional.fgsm import fgsm_attack, fgsm_robustness
from benchmark.metrics.functional.fidelity_contrastivity import contrastivity, fidelity, top_percent_mask
from benchmark.metrics.functional.insertion_deletion import deletion, deletion_curve, insertion, insertion_curve
from benchmark.metrics.functional.localization import (
    box_iou,
    connected_components,
    localization_box,
    localization_hit,
    max_box_acc,
)
from benchmark.metrics.functional.occlusion_correlation import occlusion_correlation, spearman_correlation
from benchmark.metrics.functional.one_pixel import one_pixel_attack, one_pixel_sensitivity
from benchmark.metrics.functional.pointing import (
    boxes_to_mask,
    energy_pointing_game,
    pointing_game,
    pointing_game_recall,
)

__all__ = ["adcc", "average_drop", "average_increase", "box_iou", "box_ratio", "boxes_to_mask", "coherency",
           "complexity", "connected_components", "contrastivity", "deletion", "deletion_curve", "energy_pointing_game",
           "fgsm_attack", "fgsm_robustness", "fidelity", "insertion", "insertion_curve", "localization_box",
           "localization_hit", "max_box_acc", "occlusion_correlation", "one_pixel_attack", "one_pixel_sensitivity",
           "pointing_game", "pointing_game_recall", "spearman_correlation", "top_percent_mask"]
