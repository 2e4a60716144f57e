"""Target-layer resolution for CAM explainers: which layer, and in which layout it stores its grid.

The CAM papers explain the last convolutional stage of the backbone. This module turns the
user's ``target_layer`` argument (a dotted module name, a module, or ``None``) into the dotted
name of a module of the model and its :class:`~benchmark.explainers.layouts.Layout`, with these rules:

1. ``None`` and the model names its own layer (``default_target_layer``, set by the Hugging Face
   wrapper of :mod:`benchmark.runtime.hf_backbone`): that layer.
2. ``None`` and the model is a family the papers used: the papers' layer (:data:`PAPER_LAYERS`).
3. ``None`` and the model is a vision transformer pooled by its class token: the last block's first
   norm (:data:`TRANSFORMER_LAYERS`). Later layers hold patch tokens that no longer reach the class
   token (their gradient is exactly zero), earlier ones miss the last attention.
4. ``None`` otherwise: a forward pass with hooks on every module finds the last module whose
   output is a feature grid of spatial size > 1 in any layout (NCHW, NHWC or tokens, see
   :mod:`benchmark.explainers.layouts`) that is not (and does not merely return the output of)
   a pooling layer (2-D, or 1-D over the tokens as in Hugging Face Swin), is not an identity / dropout /
   flatten / permute layer, and keeps the batch dimension (not window-partitioned). Of several modules
   returning the same tensor (a block and its last ReLU), the outermost is chosen
   (``layer4`` rather than ``layer4.1.relu``). The choice is refused when its grid does not reach
   the logits (zero gradient on a probe input: e.g. class-token pooling after it), since every
   gradient CAM there would be zero.
5. A name or a module: checked to exist in the model and to hold one item per image along its first
   dimension (a window attention's output folds the windows into the batch: refused).

The layout is then decided from the layer's output on a dummy input (or ``layout=``). The chosen
name and layout are logged and stored on the explainer (``target_layer``, ``layout``) so that results
carry them.
"""
from __future__ import annotations

import difflib
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from benchmark._utils import eval_mode
from benchmark.explainers.layouts import Layout, check_batch, detect_layout, parse_layout, spatial_readings
from benchmark.explainers.reshape import as_layout

log = logging.getLogger(__name__)
_LOGGED: set = set()


def _info_once(message: str, *args: Any) -> None:
    """Log at INFO the first time this process sees the message (every explainer of a backbone resolves the
    same layer: one line, not one per explainer), at DEBUG after."""
    text = message % args
    log.log(logging.DEBUG if text in _LOGGED else logging.INFO, text)
    _LOGGED.add(text)


__all__ = ["PAPER_LAYERS", "TRANSFORMER_LAYERS", "candidate_layers", "resolve_layer", "resolve_target_layer"]


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


def _last_block_layer(*paths: Tuple[str, str]) -> Callable[[nn.Module], Optional[str]]:
    """Rule: ``<blocks>.<last>.<norm>`` for the first ``(blocks, norm)`` of ``paths`` the model has."""
    def select(model: nn.Module) -> Optional[str]:
        modules = dict(model.named_modules())
        for blocks, norm in paths:
            container = modules.get(blocks)
            children = list(container.named_children()) if container is not None else []
            if children and hasattr(children[-1][1], norm):
                return f"{blocks}.{children[-1][0]}.{norm}"
        return None

    return select


_VIT_NORM1 = ("the last block's first norm (tokens: prefix + patch grid); the blocks after it never reach the "
              "class token")
#: Vision transformers pooled by a class token, keyed by model class name: the community's Grad-CAM layer
#: (pytorch-grad-cam's ViT tutorial), the last block's first norm. Value: (rule, description and reason).
TRANSFORMER_LAYERS: Dict[str, Tuple[Callable[[nn.Module], Optional[str]], str]] = {
    # timm VisionTransformer (ViT, DeiT III, register ViTs) and torchvision's VisionTransformer share the class name
    "VisionTransformer": (_last_block_layer(("blocks", "norm1"), ("encoder.layers", "ln_1")),
                          f"timm `blocks.<last>.norm1`, torchvision `encoder.layers.<last>.ln_1`: {_VIT_NORM1}"),
    "VisionTransformerDistilled": (_last_block_layer(("blocks", "norm1")),
                                   f"`blocks.<last>.norm1` (DeiT: class + distillation tokens): {_VIT_NORM1}"),
    "Eva": (_last_block_layer(("blocks", "norm1")), f"`blocks.<last>.norm1`: {_VIT_NORM1}"),
    "Beit": (_last_block_layer(("blocks", "norm1")), f"`blocks.<last>.norm1`: {_VIT_NORM1}"),
    "Cait": (_last_block_layer(("blocks_token_only", "norm1")),
             "`blocks_token_only.<last>.norm1`: class token + patches entering the last class-attention block"),
    "Xcit": (_last_block_layer(("cls_attn_blocks", "norm1")),
             "`cls_attn_blocks.<last>.norm1`: class token + patches entering the last class-attention block"),
}

#: Pooling layers: neither their output nor a container returning it is a target. The 1-D ones pool the tokens of
#: Hugging Face Swin / SwinV2 / FocalNet / DiNAT / Hiera to ``(B, C, 1)``.
_POOLING = (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.LPPool1d,
            nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)
#: Layers that pass their input through: never named as the target, but they do not disqualify
#: the tensor (timm's ``BatchNormAct2d`` runs norm -> Identity drop -> in-place activation). A
#: ``Permute`` (torchvision Swin: NHWC -> NCHW before pooling) only changes the layout.
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)


def _passes_through(module: nn.Module) -> bool:
    return isinstance(module, _PASS_THROUGH) or type(module).__name__ == "Permute"


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
        with eval_mode(model), torch.no_grad():
            model(_dummy(model, input_size))
    finally:
        for handle in handles:
            handle.remove()
    return records


def _dummy(model: nn.Module, input_size: Sequence[int], random: bool = False) -> torch.Tensor:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if random:
        return torch.randn((1, *input_size), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    return torch.zeros((1, *input_size), device=device, dtype=dtype)


def candidate_layers(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> List[str]:
    """Names of the modules whose output is a feature grid (NCHW, NHWC or tokens) with spatial size > 1.

    Args:
        model: the network.
        input_size: ``(C, H, W)`` of the dummy input used to trace the output shapes.

    Returns:
        The names in forward (completion) order, pooling / identity / dropout layers excluded.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        >>> candidate_layers(net, (3, 8, 8))
        ['0', '1']
    """
    return [name for name, _, _ in _candidates(model, _module_outputs(model, input_size), input_size[1:])]


def _layout_or_none(model: nn.Module, name: str, module: nn.Module, output: torch.Tensor,
                    image_hw: Sequence[int]) -> Optional[Layout]:
    readings = spatial_readings(output.shape, image_hw) if output.ndim == 4 else []
    if len(readings) == 2:  # a grid either way (settled by resolve_layer for the chosen layer)
        return Layout(readings[0]) if output.shape[2] * output.shape[3] > 1 else None
    try:
        layout = detect_layout(model, name, output, image_hw, module=module)
    except ValueError:
        return None
    grid = layout.to_nchw(output, image_hw).shape[-2:]
    return layout if grid[0] * grid[1] > 1 else None


def _candidates(model: nn.Module, records: List[Tuple[str, nn.Module, object]],
                image_hw: Sequence[int]) -> List[Tuple[str, torch.Tensor, Layout]]:
    """Keep the grid outputs (spatial > 1, any layout) not produced by (or passed through from) a pooling layer."""
    pooled = set()
    kept = []
    for name, module, output in records:
        if not isinstance(output, torch.Tensor):
            continue
        if isinstance(module, _POOLING) or id(output) in pooled:
            pooled.add(id(output))
            continue
        # first dimension = the probe's batch of 1: window attention folds (B * windows) into it
        if not _passes_through(module) and output.ndim in (3, 4) and output.shape[0] == 1:
            layout = _layout_or_none(model, name, module, output, image_hw)
            if layout is not None:
                kept.append((name, output, layout))
    return kept


def _auto_layer(model: nn.Module, input_size: Sequence[int]) -> str:
    kept = _candidates(model, _module_outputs(model, input_size), input_size[1:])
    if not kept:
        raise ValueError(
            f"Expected `model` ({type(model).__name__}) to have a layer whose output is a feature grid "
            f"(NCHW, NHWC or tokens) of spatial size > 1 for an input of size {tuple(input_size)}, but found none; "
            "pass `target_layer` (and `layout`) explicitly or check `input_size`."
        )
    best = kept[-1]
    # Outermost candidate module returning the very same tensor (the one that completes last).
    name = [n for n, output, _ in kept if output is best[1]][-1]
    if not _grid_reaches_logits(model, name, best[2], input_size):
        hint = (" -- for a ViT-like model the last block's first norm, e.g. 'blocks.<last>.norm1'"
                if best[2].kind == "tokens" and best[2].prefix > 0 else "")
        raise ValueError(
            f"The last feature grid of {type(model).__name__}, {name!r} (layout {best[2]}), does not reach the logits "
            f"(e.g. the model pools a class token after it): Grad-CAM there is zero. Pass `target_layer`{hint}; "
            f"`candidate_layers(model)` lists the grids.")
    return name


def _grid_reaches_logits(model: nn.Module, name: str, layout: Layout, input_size: Sequence[int]) -> bool:
    """Whether the logits depend on the grid cells of layer ``name`` (prefix tokens excluded): one probe
    forward and backward on a seeded random input. A model the probe cannot run counts as reaching."""
    store: List[torch.Tensor] = []

    def hook(module, args, output):
        leaf = output.detach().requires_grad_(True)
        store.append(leaf)
        return leaf.clone()  # in-place operations after the layer act on the clone

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        with eval_mode(model), torch.enable_grad():
            logits = model(_dummy(model, input_size, random=True))
            grad = torch.autograd.grad(logits.sum(), store[-1], allow_unused=True)[0]
    except Exception as err:  # noqa: BLE001 -- no evidence either way: keep the layer, say so
        log.info("Could not probe whether %r reaches the logits (%s: %s)", name, type(err).__name__, err)
        return True
    finally:
        handle.remove()
    return grad is not None and bool(layout.to_nchw(grad, input_size[1:]).abs().sum() > 0)


def _default_layer(model: nn.Module) -> Tuple[Optional[str], str]:
    """The model's own, the papers' or the transformer table's layer, if one applies."""
    own = getattr(model, "default_target_layer", None)
    if isinstance(own, str) and own:
        return own, "the model's own default"
    for table, how in ((PAPER_LAYERS, "the papers' layer"), (TRANSFORMER_LAYERS, "the transformer convention")):
        rule = table.get(type(model).__name__)
        name = rule[0](model) if rule is not None else None
        if name is not None:
            return name, how
    return None, "auto-detected"


def _layer_output(model: nn.Module, module: nn.Module, input_size: Sequence[int]) -> object:
    """The output of ``module`` for a dummy input of ``input_size`` (``None`` if it is not called)."""
    seen: List[object] = []
    handle = module.register_forward_hook(lambda mod, args, output: seen.append(output))
    try:
        with eval_mode(model), torch.no_grad():
            model(_dummy(model, input_size))
    finally:
        handle.remove()
    return seen[-1] if seen else None


def resolve_layer(model: nn.Module, target_layer: Union[str, nn.Module, None] = None,
                  input_size: Sequence[int] = (3, 224, 224), layout: Optional[str] = None) -> Tuple[str, Layout]:
    """Resolve ``target_layer`` to a dotted module name and decide its layout (see the module docstring).

    Args:
        model: the network.
        target_layer: dotted module name, a module of ``model``, or ``None`` (the default layer).
        input_size: ``(C, H, W)`` of the dummy input used to trace the model.
        layout: the user's layout (``"nchw"``, ``"nhwc"``, ``"tokens:P"``...), or ``None`` to decide it.

    Returns:
        ``(name, layout)``.

    Raises:
        KeyError / ValueError / TypeError: as :func:`resolve_target_layer`; ValueError also for a layer
            whose output is no grid in any layout, or reads two ways (the message names ``layout=``), or does not
            hold one item per image along its first dimension (window-partitioned attention).

    Examples:
        >>> from torchvision.models import swin_t
        >>> name, layout = resolve_layer(swin_t(num_classes=4))
        >>> name, str(layout)
        ('norm', 'nhwc')
    """
    layout = as_layout(layout)
    name = resolve_target_layer(model, target_layer, input_size)
    module = model.get_submodule(name)
    output = _layer_output(model, module, input_size)
    if output is None:
        raise ValueError(f"Target layer {name!r} was not called by the forward pass of {type(model).__name__}.")
    check_batch(model, name, output, 1)  # the probe's one image
    resized = None
    if parse_layout(layout) is None and isinstance(output, torch.Tensor) and output.ndim == 4 and \
            len(spatial_readings(output.shape, input_size[1:])) == 2:
        try:  # the axes that grow with the image are the spatial ones
            resized = _layer_output(model, module, (input_size[0], 2 * input_size[1], 2 * input_size[2]))
        except Exception:  # noqa: BLE001 -- a model of fixed input size: no such evidence
            resized = None
    found = detect_layout(model, name, output, tuple(input_size[1:]), layout, module, resized)
    _info_once("Layout of %s.%s: %s", type(model).__name__, name, found)
    return name, found


def resolve_target_layer(
    model: nn.Module,
    target_layer: Union[str, nn.Module, None] = None,
    input_size: Sequence[int] = (3, 224, 224),
) -> str:
    """Resolve ``target_layer`` to the dotted name of a module of ``model``.

    Args:
        model: the network.
        target_layer: dotted module name, a module of ``model``, or ``None`` (the model's own, the
            papers' or the transformer table's layer, else automatic detection, see the module docstring).
        input_size: ``(C, H, W)`` of the dummy input used by automatic detection.

    Returns:
        The dotted module name.

    Raises:
        KeyError: unknown name; the message lists close matches and candidate layers.
        ValueError: the module is not part of ``model``, or the model has no spatial layer.
        TypeError: ``target_layer`` is of another type.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        >>> resolve_target_layer(net, None, (3, 8, 8))
        '1'
    """
    modules = dict(model.named_modules())
    if target_layer is None:
        name, how = _default_layer(model)
        if name is None:
            name = _auto_layer(model, input_size)
        _info_once("Target layer of %s: %r (%s)", type(model).__name__, name, how)
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
