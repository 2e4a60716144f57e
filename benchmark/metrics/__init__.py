"""TorchMetrics classes of cam-bench (thin state holders over :mod:`benchmark.metrics.functional`)."""
from benchmark.metrics.adcc import ADCC, AverageDrop, AverageIncrease, Coherency, Complexity
from benchmark.metrics.base import MetricInputs, PerSampleMetric
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
from benchmark.metrics.registry import METRICS, create_metric, default_metrics, list_metrics
from benchmark.metrics.road import ROADLeRF, ROADMoRF
from benchmark.metrics.wsol import MaxBoxAccV2, PxAP

__all__ = ["ADCC", "AverageDrop", "AverageIncrease", "BoxRatio", "Coherency", "Complexity", "Contrastivity", "Deletion",
           "EnergyPointingGame", "FGSMRobustness", "Fidelity", "InfidelityGaussian", "InfidelitySquare", "Insertion",
           "LocalizationError", "METRICS", "MPRT", "MaxBoxAcc", "MaxBoxAccV2", "MaxSensitivity", "MetricInputs",
           "OcclusionCorrelation", "OnePixelSensitivity", "PerSampleMetric", "PointingGame", "PointingGameRecall",
           "PxAP", "ROADLeRF", "ROADMoRF", "create_metric", "default_metrics", "list_metrics"]
