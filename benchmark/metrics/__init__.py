"""TorchMetrics classes of cam-bench (thin state holders over :mod:`benchmark.metrics.functional`)."""
from benchmark.metrics.adcc import ADCC, AverageDrop, AverageIncrease, Coherency, Complexity
from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.registry import METRICS, create_metric, list_metrics

__all__ = ["ADCC", "AverageDrop", "AverageIncrease", "Coherency", "Complexity", "METRICS", "MetricInputs",
           "PerSampleMetric", "create_metric", "list_metrics"]
