"""The settings of a ``cam-bench run``: defaults, validation before any model loads, and fingerprints.

:class:`RunConfig` (defined in :mod:`benchmark.runner.settings`, re-exported here) is what
``cam-bench run`` parses (YAML config + command-line overrides, through jsonargparse) besides the
``trainer`` group. :func:`validate` checks every name and value against the registries -- explainers,
metrics, backbones, the datamodule and its files -- and raises an error naming the valid choices
*before* a model is built. :func:`fingerprint` is the part of a run that decides its numbers (dataset,
subset, preprocessing, metric and explainer settings); a resume and a leaderboard merge refuse runs
whose fingerprints differ and name the fields
(:func:`benchmark.runner.folder.fingerprint_diff`).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
from typing import Any, Dict, Mapping, Optional

import timm
import torchvision

from benchmark.explainers import resolve_explainer
from benchmark.explainers.reshape import as_layout
from benchmark.metrics import create_metric, list_metrics
from benchmark.metrics.functional._common import check_choice
from benchmark.metrics.registry import METRICS
from benchmark.runner.settings import RunConfig, maps_needed
from benchmark.runtime.backbones import list_backbones
from datamodules import create_datamodule, list_datamodules

__all__ = ["RunConfig", "dataset_subset", "effective_data_args", "explainer_settings", "fingerprint", "validate"]

log = logging.getLogger("cam_bench.run")

#: data arguments that change how data is loaded, never which samples or values
_LOADING_ARGS = ("batch_size", "num_workers")


def _positive(value: Any, name: str, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected `{name}` to be an int, but got {type(value).__name__} {value!r}.")
    if value < (0 if allow_zero else 1):
        raise ValueError(f"Expected `{name}` to be {'>= 0' if allow_zero else 'positive'}, but got {value}.")


def _check_scene(config: RunConfig, backbone: str) -> None:
    """Refuse a shipped SyntheticShapes checkpoint on the other scene family than the one it was trained on:
    its accuracy there is unmeasured, so its maps would explain a model that has not learned the task."""
    if config.data != "synthetic" or not backbone.startswith("synthetic/") or config.weights is not None:
        return
    from benchmark.synthetic import model_card

    trained = model_card(backbone.split("/", 1)[1])["config"].get("scene", "classic")
    scene = (config.data_args or {}).get("scene", "classic")
    if scene != trained:
        raise ValueError(f"Expected the scenes {backbone} was trained on, but got --data_args.scene {scene!r}: its "
                         f"shipped checkpoint was trained on {trained!r} scenes (its card), so its accuracy on "
                         f"{scene!r} scenes is unmeasured; pass --data_args.scene {trained}, or train it for these "
                         f"scenes with `cam-bench train-synthetic --model {backbone.split('/', 1)[1]} --scene "
                         f"{scene}` and pass --weights <its .pt>.")


def _check_backbone(name: str) -> None:
    """Fail on an unknown backbone name without building the model."""
    if name.startswith("hf/"):  # a local directory or a cached repo id, else FileNotFoundError (no download)
        from benchmark.runtime.hf_backbone import resolve_hf_source

        resolve_hf_source(name[len("hf/"):])
        return
    source, _, model = name.partition("/") if "/" in name else ("", "", name)
    if source in ("synthetic", "digits"):
        check_choice(model, f"backbone {source}/<name>", list_backbones(source))
        return
    in_tv = model in torchvision.models.list_models()
    in_timm = timm.is_model(model.split(".")[0])
    if source not in ("", "torchvision", "timm"):
        raise ValueError(f"Unknown backbone source {source!r} in {name!r}; valid: 'synthetic/', 'digits/', "
                         "'torchvision/', 'timm/', 'hf/' or a bare name.")
    if (source == "torchvision" and not in_tv) or (source == "timm" and not in_timm) or not (in_tv or in_timm):
        import difflib

        pool = torchvision.models.list_models() + list(timm.list_models())
        close = difflib.get_close_matches(model, pool, n=5)
        raise ValueError(f"Unknown backbone {name!r}. Close matches: {close}. Valid: "
                         f"{[f'synthetic/{n}' for n in list_backbones('synthetic')]}, any of "
                         "torchvision.models.list_models() or timm.list_models().")


def validate(config: RunConfig) -> Any:
    """Check every setting; return a datamodule built with default preprocessing (files checked).

    Raises:
        KeyError / ValueError / TypeError: an unknown name (listing the valid ones) or a bad value.
        FileNotFoundError: missing data files (the message shows the expected layout).
    """
    config = config.resolved()
    for name, value, zero in (("batch_size", config.batch_size, False), ("num_workers", config.num_workers, True),
                              ("top_k", config.top_k, False), ("bootstrap", config.bootstrap, False),
                              ("figures", config.figures, True)):
        _positive(value, name, zero)
    if config.limit is not None:
        _positive(config.limit, "limit")
    check_choice(config.target, "target", ("label", "prediction"))
    if config.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(config.name)):
        raise ValueError(f"Expected `name` to be letters, digits, '.', '_' or '-' (a folder under runs/), but got "
                         f"{config.name!r}; pass --out for another location.")
    check_choice(config.data, "data", list_datamodules())
    if not config.backbones or not config.explainers or not config.metrics:
        raise ValueError("Expected at least one backbone, explainer and metric, but got "
                         f"{config.backbones}, {config.explainers}, {config.metrics}.")
    for backbone in config.backbones:
        _check_backbone(backbone)
        _check_scene(config, backbone)
    for what, per_backbone in (("target_layer", config.target_layer), ("layout", config.layout)):
        for backbone, value in per_backbone.items():
            if backbone not in config.backbones:
                raise ValueError(f"Expected the keys of `{what}` to be among the backbones {config.backbones}, but got "
                                 f"{backbone!r}.")
            if not isinstance(value, str):
                raise TypeError(f"Expected `{what}` of {backbone!r} to be a str, but got {type(value).__name__}.")
    for backbone, value in config.layout.items():
        as_layout(value)  # a reshape function's import path is imported here: fail before the run
    if config.weights not in (None, "default", "random") and not os.path.exists(config.weights) and \
            "/" in config.weights:
        raise FileNotFoundError(f"Weights file {config.weights!r} not found; pass an existing checkpoint path, "
                                "'default' (local hub cache), 'random' or null.")
    names = [resolve_explainer(spec) for spec in config.explainers]
    for name in explainer_settings(config):  # a typo fails (KeyError listing the valid names); an unselected method
        if name not in names:
            log.info("explainer_args for %r ignored: it is not among the selected explainers %s", name, names)
    for name in config.metrics:
        create_metric(name, **config.metric_args.get(name, {}))  # unknown name -> KeyError listing them
    need = maps_needed(config.metrics, config.metric_args)
    if need > config.top_k:
        raise ValueError(f"Expected --top_k >= {need}: the metrics {config.metrics} ask for the maps of the top-{need} "
                         f"classes, but --top_k is {config.top_k}; pass --top_k {need} (or leave it unset), or lower "
                         "the metric's top_k in --metric_args.")
    for name in config.metric_args:
        if name not in list_metrics():
            create_metric(name)
    data = create_datamodule(config.data, **_data_kwargs(config))
    data.prepare_data()
    _check_annotations(config, data)
    return data


def _check_annotations(config: RunConfig, data: Any) -> None:
    """Refuse metrics that need boxes or masks the data do not carry (before any model is built), naming the
    datamodules that carry them."""
    from datamodules.registry import DATAMODULES

    provided = data.provides() if hasattr(data, "provides") else frozenset()
    for need in ("boxes", "masks"):
        names = [m for m in config.metrics if need in METRICS[m].needs]
        if names and need not in provided:
            keep = [m for m in config.metrics if need not in METRICS[m].needs]
            hint = " or give the stream annotations (--data_args.annotations <LOC_val_solution.csv or XML folder>)" \
                if config.data == "hf" and need == "boxes" else ""
            carriers = sorted(n for n, cls in DATAMODULES.items() if need in getattr(cls, "PROVIDES", ()))
            if need == "masks":  # VOC2007 carries masks on its segmentation subset only
                carriers.append("voc2007 with --data_args.segmentation true")
            raise ValueError(f"Metrics {names} need {need}, which the {config.data!r} data do not provide; pass "
                             f"--metrics \"[{', '.join(keep)}]\"{hint}, or use a datamodule with {need}: "
                             f"{', '.join(carriers)}.")


def _data_kwargs(config: RunConfig, preprocessing: Any = None) -> Dict[str, Any]:
    config = config.resolved()
    kwargs = {k: v for k, v in config.data_args.items() if k not in _LOADING_ARGS}
    if preprocessing is not None and "preprocessing" not in kwargs:
        kwargs["preprocessing"] = preprocessing
    return {**kwargs, "batch_size": config.batch_size, "num_workers": config.num_workers}


def dataset_subset(datamodule: Any) -> Dict[str, Any]:
    """``{"n", "ids_sha256"}``: the number of samples used and a hash of their ids in order.

    Examples:
        >>> from datamodules import create_datamodule
        >>> dm = create_datamodule("synthetic", size=3)
        >>> dm.setup("predict")
        >>> dataset_subset(dm)["n"]
        3
    """
    if hasattr(datamodule, "subset_fingerprint"):  # a stream: its source and row count, not every id
        return datamodule.subset_fingerprint()
    dataset = datamodule.dataset
    size = datamodule.used_size() if hasattr(datamodule, "used_size") else len(dataset)
    ids = [str(dataset.sample_id(i)) if hasattr(dataset, "sample_id") else str(i) for i in range(size)]
    return {"n": size, "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def explainer_settings(config: RunConfig) -> Dict[str, Dict[str, Any]]:
    """``explainer_args`` keyed by registered name (a ``file.py:Class`` spec or the name its class registers
    under, e.g. ``mycam``, both work): what the explainers get, what the fingerprint and the leaderboard show.

    Raises:
        ValueError: two keys name the same explainer (e.g. ``my_cam.py:MyCAM`` and ``mycam``).
        KeyError: a key that names no explainer (listing the valid names).

    Examples:
        >>> explainer_settings(RunConfig(explainer_args={"scorecam": {"chunk_size": 8}}))
        {'scorecam': {'chunk_size': 8}}
    """
    settings: Dict[str, Dict[str, Any]] = {}
    keys: Dict[str, str] = {}
    for key, args in config.explainer_args.items():
        name = resolve_explainer(key)
        if name in keys:
            raise ValueError(f"Expected one `explainer_args` entry per explainer, but got {keys[name]!r} and {key!r}, "
                             f"which both name {name!r}; pass its arguments under {name!r} only.")
        keys[name], settings[name] = key, dict(args or {})
    return settings


def effective_data_args(config: RunConfig) -> Dict[str, Any]:
    """The datamodule's arguments with its defaults filled in (loading-only arguments left out).

    Examples:
        >>> effective_data_args(RunConfig(data_args={"size": 8}))["split"]
        'val'
    """
    from datamodules.registry import DATAMODULES

    config = config.resolved()
    params = inspect.signature(DATAMODULES[config.data].__init__).parameters
    args = {name: p.default for name, p in params.items()
            if name != "self" and p.default is not inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD}
    args.update(config.data_args)
    return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in sorted(args.items())
            if k not in _LOADING_ARGS + ("preprocessing",) or k in config.data_args}


def fingerprint(config: RunConfig, subset: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The settings that decide a run's numbers (compared on resume and on merge).

    Examples:
        >>> sorted(fingerprint(RunConfig()))  # doctest: +NORMALIZE_WHITESPACE
        ['batch_size', 'data', 'data_args', 'explainer_args', 'layout', 'metric_args', 'num_classes', 'subset',
         'target', 'target_layer', 'top_k', 'weights']

    ``batch_size`` fixes the shards (a batch's composition changes float rounding, so another size would
    not give the same bytes); the run adds the trainer's ``precision`` and checks each backbone's weight
    hash (:mod:`benchmark.runner.folder`).
    """
    config = config.resolved()
    metric_args = {name: dict(config.metric_args.get(name, {})) for name in sorted(config.metrics)}
    return {"data": config.data,
            "data_args": {k: v for k, v in effective_data_args(config).items() if k not in _LOADING_ARGS},
            "subset": dict(subset or {"limit": config.limit}),
            "metric_args": metric_args,
            "explainer_args": dict(sorted(explainer_settings(config).items())),
            "target_layer": dict(sorted(config.target_layer.items())), "layout": dict(sorted(config.layout.items())),
            "target": config.target, "top_k": config.top_k, "batch_size": config.batch_size,
            "weights": config.weights, "num_classes": config.num_classes}
