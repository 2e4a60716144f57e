"""TorchMetrics classes of cam-bench (thin state holders over :mod:`benchmark.metrics.functional`)."""
from benchmark.metrics.adcc import ADCC, AverageDrop, AverageIncrease, Coherency, Complexity
from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.box_ratio import BoxRatio
from benchmark.metrics.fgsm import FGSMRobustness
from benchmark.metrics.fidelity_contrastivity import Contrastivity, Fidelity
from benchmark.metrics.insertion_deletion import Deletion, Insertion
from benchmark.metrics.localization import LocalizationError, MaxBoxAcc
from benchmark.metrics.occlusion_correlation import OcclusionCorrelation
from benchmark.metrics.one_pixel import OnePixelSensitivity
from benchmark.metrics.pointing import EnergyPointingGame, PointingGame, PointingGameRecall
from benchmark.metrics.registry import METRICS, create_metric, default_metrics, list_metrics

__all__ = ["ADCC", "AverageDrop", "AverageIncrease", "BoxRatio", "Coherency", "Complexity", "Contrastivity", "Deletion",
           "EnergyPointingGame", "FGSMRobustness", "Fidelity", "Insertion", "LocalizationError", "METRICS", "MaxBoxAcc",
           "MetricInputs", "OcclusionCorrelation", "OnePixelSensitivity", "PerSampleMetric", "PointingGame",
           "PointingGameRecall", "create_metric", "default_metrics", "list_metrics"]
