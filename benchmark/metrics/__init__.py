"""TorchMetrics classes of cam-bench (thin state holders over :mod:`benchmark.metrics.functional`)."""
from benchmark.metrics.base import MetricInputs, PerSampleMetric

__all__ = ["MetricInputs", "PerSampleMetric"]
