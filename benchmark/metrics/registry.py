"""Metric registry: names used in configs, results and leaderboards -> Metric classes."""
from __future__ import annotations

import difflib
from typing import Dict, Iterable, List, Type

from benchmark.metrics.adcc import ADCC, AverageDrop, AverageIncrease, Coherency, Complexity
from benchmark.metrics.base import PerSampleMetric, passes_unmodelled
from benchmark.metrics.box_ratio import BoxRatio
from benchmark.metrics.fgsm import FGSMRobustness
from benchmark.metrics.fidelity_contrastivity import Contrastivity, Fidelity
from benchmark.metrics.infidelity import InfidelityGaussian, InfidelitySquare, MaxSensitivity
from benchmark.metrics.insertion_deletion import Deletion, Insertion
from benchmark.metrics.localization import LocalizationError, MaxBoxAcc
from benchmark.metrics.mprt import MPRT
from benchmark.metrics.occlusion_correlation import OcclusionCorrelation
from benchmark.metrics.one_pixel import OnePixelSensitivity
from benchmark.metrics.pointing import EnergyPointingGame, PointingGame, PointingGameRecall
from benchmark.metrics.road import ROADLeRF, ROADMoRF
from benchmark.metrics.wsol import MaxBoxAccV2, PxAP

__all__ = ["METRICS", "create_metric", "default_metrics", "list_metrics", "unmodelled_metrics"]

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
    "box_ratio": BoxRatio,
    "fidelity": Fidelity,
    "contrastivity": Contrastivity,
    "occlusion_correlation": OcclusionCorrelation,
    "fgsm_robustness": FGSMRobustness,
    "one_pixel_sensitivity": OnePixelSensitivity,
    "max_box_acc_v2": MaxBoxAccV2,
    "pxap": PxAP,
    "road_morf": ROADMoRF,
    "road_lerf": ROADLeRF,
    "infidelity_square": InfidelitySquare,
    "infidelity_gaussian": InfidelityGaussian,
    "max_sensitivity": MaxSensitivity,
    "mprt": MPRT,
}


def unmodelled_metrics(names: Iterable[str]) -> List[str]:
    """The registered metrics among ``names`` that run the model or the explainer in ways the pass model
    (:mod:`benchmark.runtime.pass_model`) does not count: their measured passes stand as their minimum. In the
    order given; other names are ignored.

    Examples:
        >>> unmodelled_metrics(["deletion", "road_morf", "complexity", "backbone", "mprt"])
        ['road_morf', 'mprt']
    """
    return [n for n in names if n in METRICS and passes_unmodelled(METRICS[n])]


def list_metrics() -> List[str]:
    """Registered metric names, in leaderboard order.

    Examples:
        >>> list_metrics()[:3]
        ['average_drop', 'average_increase', 'coherency']
    """
    return list(METRICS)


def default_metrics() -> List[str]:
    """The metrics ``cam-bench run`` computes when none are named (``in_default_run``), in leaderboard order;
    the reproduction-study metrics (box ratio, fidelity, contrastivity, attacks, occlusion) run only when named.

    Examples:
        >>> len(default_metrics()), "occlusion_correlation" in default_metrics()
        (12, False)
    """
    return [name for name, cls in METRICS.items() if cls.in_default_run]


def create_metric(name: str, **kwargs) -> PerSampleMetric:
    """Build the metric ``name`` with its keyword arguments.

    Raises:
        KeyError: unknown name; the message lists close matches and every valid name.

    Examples:
        >>> create_metric("complexity").higher_is_better
        False
    """
    if name not in METRICS:
        close = difflib.get_close_matches(str(name), list(METRICS), n=3, cutoff=0.5)
        raise KeyError(f"Unknown metric {name!r}. Close matches: {close}. Valid: {list_metrics()}.")
    return METRICS[name](**kwargs)
