"""Functional metrics: pure functions, ``reduction="mean"`` or ``"none"``."""
from benchmark.metrics.functional.adcc import adcc, average_drop, average_increase, coherency, complexity

__all__ = ["adcc", "average_drop", "average_increase", "coherency", "complexity"]
