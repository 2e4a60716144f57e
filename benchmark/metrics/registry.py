"""Metric registry: names used in configs, results and leaderboards -> Metric classes."""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Type

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

__all__ = ["METRICS", "create_metric", "default_metrics", "list_metrics", "unmodelled_metrics",
           "with_normalisation"]

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


#: the constructor arguments through which a metric takes the model's input normalisation
NORMALISATION = ("mean", "std")


def with_normalisation(name: str, args: Mapping[str, Any], mean: Sequence[float], std: Sequence[float]) -> Dict:
    """``args`` of metric ``name`` with the input normalisation the images were made with (``mean``, ``std``)
    filled in where the metric takes it: ROAD's noise, FGSM's step, infidelity's and max-sensitivity's noise and
    the one-pixel attack's colours are in pixel units and become the inputs' units through it, so a metric left
    at its ImageNet default on a model normalised otherwise (0.5 / 0.5: many timm models, the shipped synthetic
    backbones) would perturb by the wrong amount. ``cam-bench run`` builds every metric through this.

    Raises:
        ValueError: ``args`` sets ``mean`` or ``std`` to other values than the images': drop the argument (the
            run takes it from the preprocessing) or fix the preprocessing.

    Examples:
        >>> with_normalisation("road_morf", {"noise": 0.02}, (0.5,) * 3, (0.5,) * 3)
        {'noise': 0.02, 'std': (0.5, 0.5, 0.5)}
        >>> with_normalisation("complexity", {}, (0.5,) * 3, (0.5,) * 3)
        {}
        >>> with_normalisation("fgsm_robustness", {"std": 0.5}, (0.5,) * 3, (0.5,) * 3)["std"]  # per channel
        (0.5, 0.5, 0.5)
        >>> with_normalisation("fgsm_robustness", {"std": 0.25}, (0.5,) * 3, (0.5,) * 3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: metric_args.fgsm_robustness.std is 0.25, but the images are normalised with std (0.5, 0.5, 0.5)...
    """
    takes = inspect.signature(METRICS[name].__init__).parameters
    out = dict(args)
    for key, value in zip(NORMALISATION, (tuple(mean), tuple(std))):
        if key not in takes:
            continue
        out[key] = value
        if key not in args:
            continue
        given = args[key]
        given = [given] * len(value) if isinstance(given, (int, float)) else list(given)
        if len(given) != len(value) or not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(given, value)):
            raise ValueError(f"metric_args.{name}.{key} is {args[key]}, but the images are normalised with {key} "
                             f"{value} (the preprocessing); drop the argument: the run passes the preprocessing's "
                             f"values to the metric.")
    return out


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
