"""Target-layer resolution for CAM explainers.

The CAM papers explain the last convolutional stage of the backbone. This module turns the
user's ``target_layer`` argument (a dotted module name, a module, or ``None``) into the dotted
name of a module of the model, with these rules:

1. ``None`` and the model is a family the papers used: the papers' layer (:data:`PAPER_LAYERS`).
2. ``None`` otherwise: a forward pass with hooks on every module finds the last module whose
   output is 4-D with spatial size > 1 that is not (and does not merely return the output of)
   a pooling layer, and is not an identity / dropout / flatten layer. Of several modules
   returning the same tensor (a block and its last ReLU), the outermost is chosen
   (``layer4`` rather than ``layer4.1.relu``).
3. A name or a module: checked to exist in the model.

The chosen name is logged, and stored as ``explainer.target_layer`` so that results carry it.
"""
from __future__ import annotations

import difflib
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from benchmark._utils import eval_mode

log = logging.getLogger(__name__)

__all__ = ["PAPER_LAYERS", "candidate_layers", "resolve_target_layer"]


def _last_relu_of_features(model: nn.Module) -> Optional[str]:
    """Name of the last ``nn.ReLU`` inside ``model.features`` (VGG / AlexNet last conv ReLU)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        return None
    names = [name for name, mod in features.named_modules() if isinstance(mod, nn.ReLU)]
    return f"features.{names[-1]}" if names else None


def _named(name: str) -> Callable[[nn.Module], Optional[str]]:
    def select(model: nn.Module) -> Optional[str]:
        return name if name in dict(model.named_modules()) else None

    return select


#: The layers the Grad-CAM paper and the Grad-CAM reproduction study explain, keyed by the
#: model class name (torchvision and timm use the same class names for these families).
#: Value: (rule that returns the dotted name or ``None`` when it does not apply, description).
PAPER_LAYERS: Dict[str, Tuple[Callable[[nn.Module], Optional[str]], str]] = {
    "VGG": (_last_relu_of_features, "last conv ReLU of `features` (14x14 at 224)"),
    "AlexNet": (_last_relu_of_features, "last conv ReLU of `features` (13x13 at 224)"),
    "ResNet": (_named("layer4"), "`layer4` (7x7 at 224); ResNeXt and Wide-ResNet too"),
    "DenseNet": (_named("features.norm5"), "`features.norm5` (7x7 at 224)"),
    "GoogLeNet": (_named("inception5b"), "`inception5b` (7x7 at 224)"),
}

#: Pooling layers: neither their output nor a container returning it is a target.
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)
#: Layers that pass their input through: never named as the target, but they do not disqualify
#: the tensor (timm's ``BatchNormAct2d`` runs norm -> Identity drop -> in-place activation).
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)


def _module_outputs(model: nn.Module, input_size: Sequence[int]) -> List[Tuple[str, nn.Module, object]]:
    """Run one dummy forward and return ``(name, module, output)`` in completion order."""
    records: List[Tuple[str, nn.Module, object]] = []
    handles = []
    for name, module in model.named_modules():
        if name == "":
            continue

        def hook(mod, args, output, name=name):
            records.append((name, mod, output))

        handles.append(module.register_forward_hook(hook))
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with eval_mode(model), torch.no_grad():
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return records


def candidate_layers(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> List[str]:
    """Names of the modules whose output is a 4-D feature map with spatial size > 1.

    Args:
        model: the network.
        input_size: ``(C, H, W)`` of the dummy input used to trace the output shapes.

    Returns:
        The names in forward (completion) order, pooling / identity / dropout layers excluded.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        >>> candidate_layers(net, (3, 8, 8))
        ['0', '1']
    """
    return [name for name, _ in _candidates(_module_outputs(model, input_size))]


def _candidates(records: List[Tuple[str, nn.Module, object]]) -> List[Tuple[str, torch.Tensor]]:
    """Keep the 4-D, spatial > 1 outputs not produced by (or passed through from) a pooling layer."""
    pooled = set()
    kept = []
    for name, module, output in records:
        if not isinstance(output, torch.Tensor):
            continue
        if isinstance(module, _POOLING) or id(output) in pooled:
            pooled.add(id(output))
            continue
        if not isinstance(module, _PASS_THROUGH) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            kept.append((name, output))
    return kept


def _auto_layer(model: nn.Module, input_size: Sequence[int]) -> str:
    kept = _candidates(_module_outputs(model, input_size))
    best = kept[-1] if kept else None
    if best is None:
        raise ValueError(
            f"Expected `model` ({type(model).__name__}) to have a layer with a 4-D output of "
            f"spatial size > 1 for an input of size {tuple(input_size)}, but found none; pass "
            "`target_layer` explicitly or check `input_size`."
        )
    # Outermost candidate module returning the very same tensor (the one that completes last).
    return [name for name, output in kept if output is best[1]][-1]


def resolve_target_layer(
    model: nn.Module,
    target_layer: Union[str, nn.Module, None] = None,
    input_size: Sequence[int] = (3, 224, 224),
) -> str:
    """Resolve ``target_layer`` to the dotted name of a module of ``model``.

    Args:
        model: the network.
        target_layer: dotted module name, a module of ``model``, or ``None`` (papers' layer for
            known families, else automatic detection, see the module docstring).
        input_size: ``(C, H, W)`` of the dummy input used by automatic detection.

    Returns:
        The dotted module name.

    Raises:
        KeyError: unknown name; the message lists close matches and candidate layers.
        ValueError: the module is not part of ``model``, or the model has no spatial layer.
        TypeError: ``target_layer`` is of another type.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        >>> resolve_target_layer(net, None, (3, 8, 8))
        '1'
    """
    modules = dict(model.named_modules())
    if target_layer is None:
        rule = PAPER_LAYERS.get(type(model).__name__)
        name = rule[0](model) if rule is not None else None
        how = "the papers' layer" if name is not None else "auto-detected"
        if name is None:
            name = _auto_layer(model, input_size)
        log.info("Target layer of %s: %r (%s)", type(model).__name__, name, how)
        return name
    if isinstance(target_layer, nn.Module):
        for name, module in modules.items():
            if module is target_layer and name:
                return name
        raise ValueError(
            f"Expected `target_layer` to be a submodule of the model, but got "
            f"{type(target_layer).__name__} which is not part of {type(model).__name__}."
        )
    if not isinstance(target_layer, str):
        raise TypeError(
            "Expected `target_layer` to be a str, an nn.Module or None, but got "
            f"{type(target_layer).__name__}."
        )
    if target_layer not in modules or target_layer == "":
        close = difflib.get_close_matches(target_layer, [n for n in modules if n], n=5)
        try:
            candidates = candidate_layers(model, input_size)[-8:]
        except Exception as err:  # the model may not run on the dummy input; say so
            candidates = [f"<could not trace the model: {err}>"]
        raise KeyError(
            f"Unknown `target_layer` {target_layer!r} in {type(model).__name__}. "
            f"Close matches: {close}. Last candidate feature-map layers: {candidates}."
        )
    return target_layer
