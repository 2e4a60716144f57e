"""Functional metrics: pure functions, ``reduction="mean"`` or ``"none"``."""
from benchmark.metrics.functional.adcc import adcc, average_drop, average_increase, coherency, complexity
from benchmark.metrics.functional.box_ratio import box_ratio
from benchmark.metrics.functional.fgsm import fgsm_attack, fgsm_robustness
from benchmark.metrics.functional.fidelity_contrastivity import contrastivity, fidelity, top_percent_mask
from benchmark.metrics.functional.infidelity import infidelity, infidelity_perturbations
from benchmark.metrics.functional.insertion_deletion import deletion, deletion_curve, insertion, insertion_curve
from benchmark.metrics.functional.localization import (
    box_iou,
    connected_components,
    localization_box,
    localization_hit,
    max_box_acc,
)
from benchmark.metrics.functional.mprt import layer_groups, mprt_similarity, rank_correlation, ssim
from benchmark.metrics.functional.occlusion_correlation import occlusion_correlation, spearman_correlation
from benchmark.metrics.functional.one_pixel import one_pixel_attack, one_pixel_sensitivity
from benchmark.metrics.functional.pointing import (
    boxes_to_mask,
    energy_pointing_game,
    pointing_game,
    pointing_game_recall,
)
from benchmark.metrics.functional.road import noisy_linear_impute, road_curve, road_lerf, road_morf
from benchmark.metrics.functional.sensitivity import max_sensitivity, sensitivity_perturbations
from benchmark.metrics.functional.wsol import max_box_acc_v2, pxap

__all__ = ["adcc", "average_drop", "average_increase", "box_iou", "box_ratio", "boxes_to_mask", "coherency",
           "complexity", "connected_components", "contrastivity", "deletion", "deletion_curve", "energy_pointing_game",
           "fgsm_attack", "fgsm_robustness", "fidelity", "infidelity", "infidelity_perturbations", "insertion",
           "insertion_curve", "layer_groups", "localization_box", "localization_hit", "max_box_acc", "max_box_acc_v2",
           "max_sensitivity", "mprt_similarity", "noisy_linear_impute", "occlusion_correlation", "one_pixel_attack",
           "one_pixel_sensitivity", "pointing_game", "pointing_game_recall", "pxap", "rank_correlation", "road_curve",
           "road_lerf", "road_morf", "sensitivity_perturbations", "spearman_correlation", "ssim", "top_percent_mask"]
