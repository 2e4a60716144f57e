"""Functional metrics: pure functions, ``reduction="mean"`` or ``"none"``."""
from benchmark.metrics.functional.adcc import adcc, average_drop, average_increase, coherency, complexity
from benchmark.metrics.functional.insertion_deletion import deletion, deletion_curve, insertion, insertion_curve
from benchmark.metrics.functional.localization import (
    box_iou,
    connected_components,
    localization_box,
    localization_hit,
    max_box_acc,
)
from benchmark.metrics.functional.pointing import (
    boxes_to_mask,
    energy_pointing_game,
    pointing_game,
    pointing_game_recall,
)

__all__ = ["adcc", "average_drop", "average_increase", "box_iou", "boxes_to_mask", "coherency", "complexity",
           "connected_components", "deletion", "deletion_curve", "energy_pointing_game", "insertion",
           "insertion_curve", "localization_box", "localization_hit", "max_box_acc", "pointing_game",
           "pointing_game_recall"]
