"""The offline default benchmark: SyntheticShapes x the shipped backbones x every explainer x every metric.

Everything here runs without network or downloads: the scenes are generated
(:mod:`datamodules.synthetic`) and the backbones are the checkpoints shipped in the package
(``synthetic/<name>``). The settings in :data:`OFFLINE_DEFAULTS` are chosen so that the whole
matrix finishes within 10 minutes on 2 CPU cores (measured figures: README, "Datamodules");
larger settings are one argument away (``size=``, ``metrics=``).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import pytorch_lightning as pl

from benchmark.backbones import create_backbone, list_backbones
from benchmark.explainers import list_explainers
from benchmark.metrics import list_metrics
from benchmark.module import ExplainerModule
from callbacks.per_sample_writer import PerSampleWriter
from datamodules.synthetic import SyntheticShapesDataModule

__all__ = ["OFFLINE_DEFAULTS", "offline_metrics", "run_offline"]

#: The default data, backbones and metric settings (recorded with every result).
OFFLINE_DEFAULTS: Dict[str, Any] = {
    "data": {"size": 96, "split": "val", "image_size": 128, "seed": 0},
    "backbones": [f"synthetic/{name}" for name in list_backbones("synthetic")],
    "metric_settings": {
        # RISE: 224 steps of 224 pixels at 224 x 224; here 16 steps of 1024 pixels cover 128 x 128
        "deletion": {"steps": 16}, "insertion": {"steps": 16},
        # wsolevaluation sweeps 100 thresholds; 20 (0.00:0.05:0.95) keep the run within budget
        "max_box_acc": {"thresholds": [round(0.05 * i, 2) for i in range(20)]},
        # 8 classes: top-1 localization; the recall variant over the top-2 classes
        "localization_error": {"top_k": [1]}, "pointing_game_recall": {"top_k": 2},
    },
    "top_k": 2,  # maps of the 2 best classes (the target's is reused, so one extra explainer call)
    "batch_size": 32,
}


def offline_metrics(settings: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """Every registered metric with the default (or given) keyword arguments.

    Example:
        >>> offline_metrics()["deletion"], offline_metrics()["pointing_game"]
        ({'steps': 16}, {})
    """
    settings = OFFLINE_DEFAULTS["metric_settings"] if settings is None else settings
    return {name: dict(settings.get(name, {})) for name in list_metrics()}


def run_offline(backbones: Optional[Sequence[str]] = None, explainers: Optional[Sequence[str]] = None,
                metrics: Optional[Mapping[str, Mapping[str, Any]]] = None, data: Optional[Mapping[str, Any]] = None,
                batch_size: Optional[int] = None, out: Optional[str] = None,
                **trainer_kwargs: Any) -> List[Dict[str, Any]]:
    """Run the matrix; one row per (backbone, method, metric result) plus timing and the data report.

    Args:
        backbones: backbone names (default: the shipped ``synthetic/*`` models).
        explainers: explainer names (default: every registered one).
        metrics: metric name -> keyword arguments (default: :func:`offline_metrics`).
        data: :class:`~datamodules.synthetic.SyntheticShapesDataModule` arguments (default: the offline data).
        batch_size: images per batch.
        out: run directory: per-sample values are written to ``<out>/per_sample`` (:class:`callbacks.PerSampleWriter`).
        trainer_kwargs: passed to ``pl.Trainer`` (``accelerator``, ``devices``, ``strategy``, ...).

    Returns:
        Rows ``{"backbone", "method", "metric", "value", "n", "n_invalid", "seconds"}`` -- on every rank
        (the metrics are reduced across processes) -- where ``seconds`` is the backbone's wall time.
    """
    data = {**OFFLINE_DEFAULTS["data"], **dict(data or {})}
    rows: List[Dict[str, Any]] = []
    for name in backbones or OFFLINE_DEFAULTS["backbones"]:
        model, prep = create_backbone(name)
        module = ExplainerModule(model, list(explainers or list_explainers()), target="label", keep_maps=False,
                                 input_size=prep.input_size, metrics=offline_metrics() if metrics is None else metrics,
                                 top_k=OFFLINE_DEFAULTS["top_k"])
        dm = SyntheticShapesDataModule(**data, preprocessing=prep, batch_size=batch_size or OFFLINE_DEFAULTS[
            "batch_size"])
        options = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
                   "enable_model_summary": False, **trainer_kwargs}
        if out is not None:
            options["callbacks"] = [PerSampleWriter(out, "synthetic", name)]
        start = time.perf_counter()
        pl.Trainer(**options).predict(module, datamodule=dm, return_predictions=False)
        seconds = time.perf_counter() - start
        rows += [{"backbone": name, **row, "seconds": seconds} for row in module.results]
    return rows
