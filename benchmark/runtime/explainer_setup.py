"""How :class:`~benchmark.runtime.module.ExplainerModule` reads its explainer and metric configs, builds its
explainers, computes the maps of the other top-k classes and the curves' endpoints that every method shares."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from benchmark import passes
from benchmark.explainers import create_explainer

__all__ = ["Config", "as_config", "build_explainer", "curve_endpoints", "explain_with", "topk_maps"]

Config = Union[Sequence[str], Mapping[str, Optional[Mapping[str, Any]]], None]


def as_config(value: Config, what: str) -> Dict[str, Dict[str, Any]]:
    """Names or a mapping name -> keyword arguments, as a dict name -> kwargs."""
    if isinstance(value, str):
        raise TypeError(f"Expected `{what}` to be a list of names or a mapping, but got the str {value!r}.")
    if isinstance(value, Mapping):
        return {name: dict(kwargs or {}) for name, kwargs in value.items()}
    return {name: {} for name in value}


def build_explainer(name: str, model: nn.Module, target_layer: Optional[str], layout: Optional[str],
                    input_size: Sequence[int], kwargs: Mapping[str, Any]):
    """The explainer ``name``; the module-level layer and layout go to the methods that read a layer
    (an explainer's own ``target_layer`` / ``layout`` arguments win)."""
    from benchmark.explainers.registry import _lookup

    shared: Dict[str, Any] = {"target_layer": target_layer, "input_size": tuple(input_size)}
    if layout is not None and getattr(_lookup(name), "uses_layer", True):
        shared["layout"] = layout
    return create_explainer(name, model, **{**shared, **kwargs})


def explain_with(explainer, batch_indices: Tensor, images: Tensor, classes: Tensor,
                 indices: Optional[Tensor] = None) -> Tensor:
    """``MetricInputs.explain``: ``explainer(images, classes)`` with the batch's dataset indices when ``images``
    is the batch (or a perturbed copy of it) and ``indices`` is not given."""
    if indices is None and len(images) == len(batch_indices):
        indices = batch_indices
    return explainer(images, classes, indices=indices)


def topk_maps(explainer, images, targets, indices, maps, target_raw_max, classes) -> Tuple[Tensor, Tensor]:
    """Maps and raw maxima of each image's top-k classes; the target class's map is reused, not recomputed, and
    so is every class's for a class-independent method. The other maps are computed in explainer calls of at
    most ``B`` (the batch size) images."""
    b, k = classes.shape
    reuse = (classes == targets[:, None]) | bool(getattr(explainer, "class_independent", False))
    topk = maps.unsqueeze(1).repeat(1, k, 1, 1) * reuse[..., None, None]
    raw = torch.zeros(b, k, device=maps.device)
    if target_raw_max is not None:
        raw = torch.where(reuse, target_raw_max.to(raw.device)[:, None], raw)
    rows, cols = torch.nonzero(~reuse, as_tuple=True)
    for part in torch.arange(len(rows), device=rows.device).split(b) if len(rows) else ():  # a batch per call
        r, c = rows[part], cols[part]
        with passes.phase("topk"):
            topk[r, c] = explainer(images[r], classes[r, c], indices=indices[r])
        raw[r, c] = explainer.last_raw_max.to(raw.device)
    return topk, raw


def curve_endpoints(metrics: Iterable[object], model: nn.Module, images: Tensor) -> Dict[tuple, Tuple[Tensor, Tensor]]:
    """The endpoint probabilities of the perturbation curves (deletion, insertion) for one batch, computed once for
    every method: ``{metric.endpoint_key: (first, last)}``, each ``(B or 1, K)``. The image's own probability is
    computed once for both curves."""
    known: Dict[tuple, Tuple[Tensor, Tensor]] = {}
    memo: dict = {}
    for metric in metrics:
        key = getattr(metric, "endpoint_key", None)
        if key is not None and key not in known:
            known[key] = metric.endpoint_probs(model, images, memo)
    return known
