"""The settings of a ``cam-bench run`` as a plain dataclass, importable without a model library.

:class:`RunConfig` is what ``cam-bench run`` parses (YAML config + command-line overrides, through
jsonargparse) besides the ``trainer`` group; its defaults come from :mod:`benchmark.catalog` and
:mod:`benchmark.runner.offline`, so ``cam-bench run --help`` answers without importing torch.
Validation against the registries and fingerprints are in :mod:`benchmark.runner.config`.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from benchmark.catalog import DEFAULT_EXPLAINERS, DEFAULT_METRICS
from benchmark.runner.offline import OFFLINE_DEFAULTS

__all__ = ["RunConfig", "maps_needed"]


@dataclass
class RunConfig:
    """One benchmark run: the matrix backbones x explainers x metrics over one datamodule.

    Args:
        data: registered datamodule name (``cam-bench list``).
        data_args: its keyword arguments (e.g. ``root``, ``split``); ``None``: the offline default data
            for ``synthetic`` (96 ``val`` images of 128 x 128), the datamodule's defaults otherwise.
        backbones: ``synthetic/<name>``, ``digits/<name>``, ``torchvision/<name>``, ``timm/<name>``,
            ``hf/<local dir or cached repo id>`` or a bare torchvision/timm name.
        weights: ``None`` (random init; the shipped checkpoint for ``synthetic/``), ``"default"`` (the local
            torch-hub / Hugging Face cache, never downloaded), ``"random"`` or a checkpoint path.
        num_classes: classifier size for random init or a checkpoint (default: the model's own).
        explainers: registered names, ``file.py:Class``, ``module:Class`` or entry points;
            ``--explainers+=my_cam.py:MyCAM`` appends to the default (every registered method).
        explainer_args: explainer name -> keyword arguments (e.g. ``{scorecam: {chunk_size: 128}}``; also
            ``target_layer`` / ``layout`` for one method). A ``file.py:Class`` method is keyed by its spec or by
            the name it registers (``mycam``), not both.
        target_layer: backbone -> the target layer of every layer-reading explainer on it (e.g.
            ``{timm/vit_small_patch16_224: blocks.10.norm1}``); a backbone not listed gets its default layer.
        layout: backbone -> that layer's layout (``nchw``, ``nhwc``, ``tokens:P``, or a reshape function
            ``package.module:function`` / ``file.py:function``; see :mod:`benchmark.explainers.layouts`); a
            backbone not listed has it decided (ambiguous ones refused).
        metrics: metric names (``cam-bench list``); default: ``default_metrics()`` (the reproduction-study
            metrics run when named).
        metric_args: metric name -> keyword arguments. ``None``: the papers' settings (each metric's
            defaults), except on ``synthetic`` data, where the offline settings keep the default run
            within 10 minutes (16 deletion/insertion steps, 20 MaxBoxAcc thresholds, top-1 localization).
        target: ``label`` (the ground-truth class) or ``prediction`` (the top-1 class).
        top_k: maps of the top-k classes for the metrics that need them (localization, pointing recall);
            ``None``: the most any selected metric asks for, at least 2. A value below that is refused.
        batch_size: images per batch; also the shard size (the unit of resume).
        num_workers: DataLoader workers.
        limit: use only the first ``limit`` samples (``None``: all).
        name: run name (letters, digits, ``._-``); the default output directory is ``runs/<name>`` (default:
            the datamodule name). The committed ``leaderboards/<name>`` folders are written with ``--out``.
        out: output directory (default ``runs/<name>``).
        overwrite: delete earlier results in ``out`` instead of resuming them.
        bootstrap: bootstrap resamples for the 95 % confidence intervals.
        seed: seed of the bootstrap and of random initialisation (with the backbone's name).
        figures: images shown in the saliency grid (their maps are kept).
    """

    data: str = "synthetic"
    data_args: Optional[Dict[str, Any]] = None
    backbones: List[str] = field(default_factory=lambda: list(OFFLINE_DEFAULTS["backbones"]))
    weights: Optional[str] = None
    num_classes: Optional[int] = None
    explainers: List[str] = field(default_factory=lambda: list(DEFAULT_EXPLAINERS))
    explainer_args: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    target_layer: Dict[str, str] = field(default_factory=dict)
    layout: Dict[str, str] = field(default_factory=dict)
    metrics: List[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    metric_args: Optional[Dict[str, Dict[str, Any]]] = None
    target: str = "label"
    top_k: Optional[int] = None
    batch_size: int = OFFLINE_DEFAULTS["batch_size"]
    num_workers: int = 0
    limit: Optional[int] = None
    name: Optional[str] = None
    out: Optional[str] = None
    overwrite: bool = False
    bootstrap: int = 1000
    seed: int = 0
    figures: int = 4

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / (self.name or self.data)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def resolved(self) -> "RunConfig":
        """A copy with ``data_args`` and ``metric_args`` filled in (see the class docstring).

        Examples:
            >>> RunConfig().resolved().metric_args["deletion"], RunConfig(data="imagenet").resolved().metric_args
            ({'steps': 16}, {})
            >>> RunConfig().resolved().data_args["size"], RunConfig(data="imagenet").resolved().data_args
            (96, {})
            >>> RunConfig(data_args={"seed": 1}).resolved().data_args["size"]  # merged into the offline defaults
            96
        """
        synthetic = self.data == "synthetic"
        defaults = OFFLINE_DEFAULTS["data"] if synthetic else {}  # --data_args.seed 1 keeps the other defaults
        data_args = {**defaults, **(self.data_args or {})}
        metric_args = self.metric_args if self.metric_args is not None else \
            OFFLINE_DEFAULTS["metric_settings"] if synthetic else {}
        metric_args = {k: dict(v or {}) for k, v in metric_args.items()}
        top_k = self.top_k if self.top_k is not None else max(2, maps_needed(self.metrics, metric_args))
        return replace(self, data_args=dict(data_args), metric_args=metric_args, top_k=top_k)


def maps_needed(metrics: List[str], metric_args: Mapping[str, Mapping[str, Any]]) -> int:
    """The most class maps any of ``metrics`` asks for (its ``top_k`` argument, else the class default).

    Examples:
        >>> maps_needed(["localization_error", "complexity"], {}), maps_needed(["complexity"], {})
        (5, 1)
        >>> maps_needed(["localization_error"], {"localization_error": {"top_k": [1]}})
        1
    """
    from benchmark.metrics.registry import METRICS

    need = 1
    for name in metrics:
        cls = METRICS.get(name)
        default = inspect.signature(cls.__init__).parameters.get("top_k") if cls is not None else None
        value = (metric_args.get(name) or {}).get("top_k", default.default if default is not None else 1)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        need = max([need, *[int(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]])
    return need
