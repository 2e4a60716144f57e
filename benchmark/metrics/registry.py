"""Metric registry: names used in configs, results and leaderboards -> Metric classes."""
from __future__ import annotations

import difflib
from typing import Dict, List, Type

from benchmark.metrics.adcc import ADCC, AverageDrop, AverageIncrease, Coherency, Complexity
from benchmark.metrics.base import PerSampleMetric
from benchmark.metrics.insertion_deletion import Deletion, Insertion
from benchmark.metrics.localization import LocalizationError, MaxBoxAcc
from benchmark.metrics.pointing import EnergyPointingGame, PointingGame, PointingGameRecall

__all__ = ["METRICS", "create_metric", "list_metrics"]

#: name -> class; the order is the leaderboard's column order.
METRICS: Dict[str, Type[PerSampleMetric]] = {
    "average_drop": AverageDrop,
    "average_increase": AverageIncrease,
    "coherency": Coherency,
    "complexity": Complexity,
    "adcc": ADCC,
    "deletion": Deletion,
    "insertion": Insertion,
    "localization_error": LocalizationError,
    "max_box_acc": MaxBoxAcc,
    "pointing_game": PointingGame,
    "pointing_game_recall": PointingGameRecall,
    "energy_pointing_game": EnergyPointingGame,
}


def list_metrics() -> List[str]:
    """Registered metric names, in leaderboard order.

    Example:
        >>> list_metrics()[:3]
        ['average_drop', 'average_increase', 'coherency']
    """
    return list(METRICS)


def create_metric(name: str, **kwargs) -> PerSampleMetric:
    """Build the metric ``name`` with its keyword arguments.

    Raises:
        KeyError: unknown name; the message lists close matches and every valid name.

    Example:
        >>> create_metric("complexity").higher_is_better
        False
    """
    if name not in METRICS:
        close = difflib.get_close_matches(str(name), list(METRICS), n=3, cutoff=0.5)
        raise KeyError(f"Unknown metric {name!r}. Close matches: {close}. Valid: {list_metrics()}.")
    return METRICS[name](**kwargs)
