"""TorchMetrics classes of cam-bench (thin state holders over :mod:`benchmark.metrics.functional`)."""
from benchmark.metrics.adcc import ADCC, AverageDrop, AverageIncrease, Coherency, Complexity
from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.insertion_deletion import Deletion, Insertion
from benchmark.metrics.localization import LocalizationError, MaxBoxAcc
from benchmark.metrics.pointing import EnergyPointingGame, PointingGame, PointingGameRecall
from benchmark.metrics.registry import METRICS, create_metric, list_metrics

__all__ = ["ADCC", "AverageDrop", "AverageIncrease", "Coherency", "Complexity", "Deletion", "EnergyPointingGame",
           "Insertion", "LocalizationError", "METRICS", "MaxBoxAcc", "MetricInputs", "PerSampleMetric",
           "PointingGame", "PointingGameRecall", "create_metric", "list_metrics"]
