"""Layouts of a target layer's output, and the one adapter that turns them into ``(B, C, h, w)``.

A CAM method reads the target layer as ``C`` feature maps on an ``h x w`` grid. Layers store that
grid in three ways:

* ``"nchw"`` -- ``(B, C, h, w)``: convolutional networks (torchvision, timm CNNs, ConvNeXt stages);
* ``"nhwc"`` -- ``(B, h, w, C)``: timm Swin / SwinV2 stages and norms, torchvision ``swin_t``,
  any ``nn.LayerNorm`` or ``nn.Linear`` applied to a 4-D tensor;
* ``"tokens:P"`` -- ``(B, N, C)`` with ``P`` prefix tokens (class, distillation, register tokens:
  timm's ``num_prefix_tokens``; torchvision ViT's class token) followed by the ``h x w`` patch
  grid in row-major order: ViT, DeiT, BEiT, EVA, CaiT, XCiT, MLP-Mixer, Hugging Face ViT.

:func:`detect_layout` decides the layout from the tensor and the model's own attributes, never by
guessing. A reading must fit the input image: a grid ``h x w`` is possible for an ``H x W`` image
when one stride ``s`` gives both (``h`` is ``H/s`` rounded down or up: ``H/(h+1) < s < H/(h-1)``,
same for ``w``); a square image thus reads ``(B, C, h, h)`` both ways only when ``|C - h| <= 1``. A
4-D tensor read both ways is settled by the layer's type (a ``Conv2d`` / ``*2d`` layer is NCHW, a
``LayerNorm`` / ``Linear`` is NHWC), then by which axes grow when the image doubles (the spatial
ones), then by the model's ``output_fmt`` (timm); otherwise it is
refused with an error naming the layer, the shape and ``layout=``. Tokens take ``P`` from
``num_prefix_tokens`` (or torchvision's ``class_token``) and the grid from the patch size, else the
unique grid that fits the image; a count that fits none is refused, and so are tokens of one channel
(``(B, C, 1)``: the output of a 1-D pooling over the tokens, no feature maps to weigh).

``layout=`` on every explainer (and in ``--explainer_args``) overrides the decision:
``"nchw"``, ``"nhwc"``, ``"tokens"`` (prefix from the model), ``"tokens:P"`` or ``"tokens:P:HxW"``,
or a reshape function / its import path (verified, see :mod:`benchmark.explainers.reshape`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["LAYOUT_KINDS", "Layout", "check_batch", "detect_layout", "parse_layout", "spatial_readings"]

LAYOUT_KINDS = ("nchw", "nhwc", "tokens")


def _fits(cells: int, size: int) -> Tuple[float, float]:
    """The open interval of strides ``s`` for which ``size / s`` rounds (down or up) to ``cells``."""
    return size / (cells + 1), (math.inf if cells <= 1 else size / (cells - 1))


def grid_fits(grid: Sequence[int], image_hw: Sequence[int]) -> bool:
    """Whether an ``h x w`` grid can come from an ``H x W`` image by one common stride.

    Examples:
        >>> grid_fits((7, 7), (224, 224)), grid_fits((7, 768), (224, 224)), grid_fits((7, 6), (224, 170))
        (True, False, True)
    """
    (h, w), (height, width) = grid, image_hw
    if h < 1 or w < 1 or h > height or w > width:
        return False
    lo_h, hi_h = _fits(h, height)
    lo_w, hi_w = _fits(w, width)
    return max(lo_h, lo_w) < min(hi_h, hi_w)


def spatial_readings(shape: Sequence[int], image_hw: Sequence[int]) -> List[str]:
    """The layouts (``"nchw"``, ``"nhwc"``) under which a 4-D ``shape`` is a grid fitting the image.

    Examples:
        >>> spatial_readings((2, 768, 7, 7), (224, 224)), spatial_readings((2, 7, 7, 768), (224, 224))
        (['nchw'], ['nhwc'])
        >>> spatial_readings((2, 7, 7, 7), (224, 224))
        ['nchw', 'nhwc']
    """
    out = []
    if grid_fits(shape[2:4], image_hw):
        out.append("nchw")
    if grid_fits(shape[1:3], image_hw):
        out.append("nhwc")
    return out


@dataclass(frozen=True)
class Layout:
    """How a layer stores its grid; converts its output to NCHW and back (see the module docstring).

    Examples:
        >>> tokens = torch.arange(2 * 5 * 3.0).view(2, 5, 3)  # 1 class token + a 2 x 2 grid, 3 channels
        >>> layout = Layout("tokens", prefix=1)
        >>> nchw = layout.to_nchw(tokens, (32, 32))
        >>> nchw.shape, torch.equal(layout.from_nchw(nchw, tokens), tokens)
        (torch.Size([2, 3, 2, 2]), True)
        >>> str(layout), str(Layout("nhwc"))
        ('tokens:1', 'nhwc')
    """

    kind: str = "nchw"
    prefix: int = 0  #: tokens before the patch grid
    grid: Optional[Tuple[int, int]] = None  #: fixed token grid (else from the patch size or the image)
    patch: Optional[Tuple[int, int]] = None  #: the model's patch size, when it has one

    def __str__(self) -> str:
        if self.kind != "tokens":
            return self.kind
        return f"tokens:{self.prefix}" + (f":{self.grid[0]}x{self.grid[1]}" if self.grid else "")

    def token_grid(self, tokens: int, image_hw: Sequence[int]) -> Tuple[int, int]:
        """The ``(h, w)`` grid of ``tokens`` patch tokens for an image of ``image_hw``."""
        if self.grid is not None:
            if self.grid[0] * self.grid[1] != tokens:
                raise ValueError(f"Expected {self.grid[0]}x{self.grid[1]} patch tokens (layout {self}), but got "
                                 f"{tokens}.")
            return self.grid
        found = _solve_grid(tokens, image_hw, self.patch)
        if len(found) != 1:
            raise ValueError(
                f"Expected {tokens} patch tokens to form one grid for a {image_hw[0]}x{image_hw[1]} image, but "
                f"{'none fits' if not found else f'{found} all fit'}; pass layout='tokens:{self.prefix}:HxW'.")
        return found[0]

    def to_nchw(self, output: Tensor, image_hw: Sequence[int]) -> Tensor:
        """``(B, C, h, w)`` view of ``output`` (its patch tokens for the tokens layout)."""
        if self.kind == "nchw":
            return output
        if self.kind == "nhwc":
            return output.permute(0, 3, 1, 2)
        h, w = self.token_grid(output.shape[1] - self.prefix, image_hw)
        return output[:, self.prefix:].reshape(output.shape[0], h, w, output.shape[2]).permute(0, 3, 1, 2)

    def from_nchw(self, maps: Tensor, original: Tensor) -> Tensor:
        """Inverse of :meth:`to_nchw`: ``maps`` in the layer's layout, prefix tokens taken from ``original``."""
        if self.kind == "nchw":
            return maps
        if self.kind == "nhwc":
            return maps.permute(0, 2, 3, 1)
        patches = maps.flatten(2).transpose(1, 2)
        return torch.cat([original[:, :self.prefix].to(patches.dtype), patches], dim=1)


def _patch_grid(tokens: int, image_hw: Sequence[int], patch: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """The patch grid of the image (rounded down or up) when it has exactly ``tokens`` cells."""
    for rounding in (math.floor, math.ceil):
        grid = (rounding(image_hw[0] / patch[0]), rounding(image_hw[1] / patch[1]))
        if grid[0] * grid[1] == tokens:
            return grid
    return None


def _solve_grid(tokens: int, image_hw: Sequence[int], patch: Optional[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """The grids of ``tokens`` cells: the patch grid when it matches, else every grid fitting the image."""
    if tokens < 1:
        return []
    grid = _patch_grid(tokens, image_hw, patch) if patch is not None else None
    if grid is not None:
        return [grid]
    return [(h, tokens // h) for h in range(1, tokens + 1)
            if tokens % h == 0 and grid_fits((h, tokens // h), image_hw)]


def parse_layout(spec: Optional[str]) -> Optional[Layout]:
    """``"nchw"``, ``"nhwc"``, ``"tokens"``, ``"tokens:P"`` or ``"tokens:P:HxW"`` -> :class:`Layout`.

    Examples:
        >>> parse_layout("tokens:2:14x14")
        Layout(kind='tokens', prefix=2, grid=(14, 14), patch=None)
        >>> parse_layout("tokens").prefix is None
        True
    """
    if spec is None or isinstance(spec, Layout):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"Expected `layout` to be a str, a reshape function or None, but got {type(spec).__name__}.")
    kind, *rest = spec.strip().lower().split(":")
    if kind not in LAYOUT_KINDS or (rest and kind != "tokens") or len(rest) > 2:
        raise ValueError(f"Expected `layout` to be one of 'nchw', 'nhwc', 'tokens', 'tokens:P', 'tokens:P:HxW' or a "
                         f"reshape function's import path 'package.module:function', but got {spec!r}.")
    try:
        prefix = int(rest[0]) if rest else None
        grid = tuple(int(v) for v in rest[1].split("x")) if len(rest) > 1 else None
    except ValueError:
        raise ValueError(f"Expected `layout` 'tokens:P:HxW' with integers P, H, W, but got {spec!r}.") from None
    if (prefix is not None and prefix < 0) or (grid is not None and (len(grid) != 2 or min(grid) < 1)):
        raise ValueError(f"Expected `layout` 'tokens:P:HxW' with P >= 0 and H, W >= 1, but got {spec!r}.")
    return Layout(kind, prefix, grid) if kind == "tokens" else Layout(kind)


def model_prefix_tokens(model: nn.Module) -> int:
    """Prefix tokens the model declares: timm/HF ``num_prefix_tokens``, torchvision ViT's class token, else 0.

    Examples:
        >>> from torchvision.models import vit_b_16, resnet18
        >>> model_prefix_tokens(vit_b_16()), model_prefix_tokens(resnet18())
        (1, 0)
    """
    count = getattr(model, "num_prefix_tokens", None)
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    return 1 if isinstance(getattr(model, "class_token", None), nn.Parameter) else 0


def model_patch_size(model: nn.Module) -> Optional[Tuple[int, int]]:
    """The model's patch size: timm ``patch_embed.patch_size``, torchvision ViT ``patch_size``, HF config."""
    candidates = (getattr(getattr(model, "patch_embed", None), "patch_size", None), getattr(model, "patch_size", None),
                  getattr(getattr(model, "config", None), "patch_size", None))
    for size in candidates:
        if isinstance(size, int) and not isinstance(size, bool):
            return (size, size)
        if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
            return (int(size[0]), int(size[1]))
    return None


def _module_reading(module: Optional[nn.Module]) -> Optional[str]:
    """The layout a layer's type implies for a 4-D output (``*2d`` layers NCHW, LayerNorm / Linear NHWC)."""
    if module is None:
        return None
    if isinstance(module, (nn.Conv2d, nn.GroupNorm)) or type(module).__name__.endswith("2d"):
        return "nchw"
    if isinstance(module, (nn.LayerNorm, nn.Linear)):
        return "nhwc"
    return None


def _growth_reading(output: Tensor, resized: Optional[Tensor]) -> Optional[str]:
    """NCHW when only the last two axes grow with the image, NHWC when only axes 1 and 2 do."""
    if not isinstance(resized, Tensor) or resized.ndim != 4:
        return None
    grew = [a != b for a, b in zip(output.shape[1:], resized.shape[1:])]
    return {(False, True, True): "nchw", (True, True, False): "nhwc"}.get(tuple(grew))


def check_batch(model: nn.Module, layer: str, output: object, batch: int) -> None:
    """Refuse a layer whose output (for ``batch`` images) does not hold one item per image along its first dimension:
    window attention (Swin) folds its ``windows`` into it, ``(batch * windows, N, C)``.

    Examples:
        >>> check_batch(nn.Identity(), "attn", torch.zeros(4, 49, 96), 1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected target layer 'attn' of Identity to output one item per image along its first dimension...
    """
    if isinstance(output, Tensor) and output.ndim >= 1 and output.shape[0] != batch:
        parent = layer.rsplit(".", 1)[0] if "." in layer else ""
        names = dict(model.named_modules())
        near = [n for n in (parent, f"{parent}.norm1") if n and n in names and n != layer]
        example = " or ".join(repr(n) for n in near) if near else "'layers.<i>.blocks.<j>' or '...blocks.<j>.norm1'"
        raise ValueError(
            f"Expected target layer {layer!r} of {type(model).__name__} to output one item per image along its first "
            f"dimension ({batch} for a probe of {batch} image(s)), but got shape {tuple(output.shape)}: the layer "
            "folds something else into the batch dimension (window attention partitions each image into windows, e.g. "
            "Swin's `blocks.<i>.attn`), so it has no per-image grid. Choose a block's output or its first norm "
            f"instead (e.g. {example}).")


def detect_layout(model: nn.Module, layer: str, output: object, image_hw: Sequence[int],
                  spec: Optional[str] = None, module: Optional[nn.Module] = None,
                  resized: Optional[Tensor] = None) -> Layout:
    """Decide the layout of ``layer``'s ``output`` for an image of ``image_hw`` (see the module docstring).

    Args:
        model: the network (its attributes: ``num_prefix_tokens``, ``class_token``, ``patch_embed``,
            ``output_fmt``).
        layer: the layer's dotted name, for messages.
        output: the layer's output for that image.
        image_hw: ``(H, W)`` of the input.
        spec: the user's ``layout=`` (``None``: decide).
        module: the layer module (its type settles a 4-D tensor that fits both ways).
        resized: the layer's output for an image of twice the size, if the model accepts one: the axis
            that does not grow is the channel axis (settles a 4-D tensor that fits both ways).

    Raises:
        ValueError: the output is not a grid in any layout, or fits two with nothing to tell them apart, or
            is tokens of one channel; the message names the layer, the shape and the ``layout=`` argument.

    Examples:
        >>> from torchvision.models import swin_t
        >>> detect_layout(swin_t(), "norm", torch.zeros(1, 7, 7, 768), (224, 224))
        Layout(kind='nhwc', prefix=0, grid=None, patch=None)
    """
    shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
    where = f"target layer {layer!r} of {type(model).__name__} (output {shape} for a {image_hw[0]}x{image_hw[1]} image)"
    fix = ("pass layout='nchw', 'nhwc', 'tokens:P' (P prefix tokens) or a reshape function ('package.module:function')"
           " to the explainer (--explainer_args) or the run (--layout), or choose another target_layer")
    chosen = parse_layout(spec)
    if chosen is not None and chosen.kind == "reshape" and isinstance(output, Tensor):
        chosen.check(output, image_hw, where, fix)  # a verified user reshape (benchmark.explainers.reshape)
        return chosen
    if not isinstance(output, Tensor) or output.ndim not in (3, 4):
        raise ValueError(f"Expected {where} to be a (B, C, h, w), (B, h, w, C) or (B, N, C) tensor; {fix}.")
    patch = model_patch_size(model)
    if output.ndim == 4:
        readings = spatial_readings(output.shape, image_hw)
        if chosen is not None:
            if chosen.kind not in readings:
                raise ValueError(f"Expected {where} to be a grid in layout {spec!r}, but it is not "
                                 f"({readings or 'none'} fit the image); {fix}.")
            return Layout(chosen.kind, patch=patch)
        if len(readings) == 2:
            hint = (_module_reading(module) or _growth_reading(output, resized)
                    or {"NHWC": "nhwc", "NCHW": "nchw"}.get(str(getattr(model, "output_fmt", ""))))
            readings = [hint] if hint else readings
        if len(readings) != 1:
            reads = " and as ".join(readings) if readings else "no grid"
            raise ValueError(f"Expected {where} to be one grid, but it reads as {reads} with no attribute to tell; "
                             f"{fix}.")
        return Layout(readings[0], patch=patch)
    if chosen is not None and chosen.kind != "tokens":
        raise ValueError(f"Expected {where} to be (B, N, C) tokens, but got layout={spec!r}; {fix}.")
    if output.shape[2] < 2:  # a (B, C, 1) 1-D pooling output would read as C tokens of one channel
        raise ValueError(f"Expected {where} to be (B, N, C) tokens with C > 1 channels (a CAM weighs channels), but "
                         f"it has {output.shape[2]}: a (B, C, 1) output is a 1-D pooling's (e.g. the AdaptiveAvgPool1d "
                         "of Hugging Face Swin); choose the layer before the pooling as target_layer.")
    declared = model_prefix_tokens(model)
    prefixes = [chosen.prefix] if chosen is not None and chosen.prefix is not None else sorted({0, declared})
    found = []
    for prefix in prefixes:
        layout = Layout("tokens", prefix, chosen.grid if chosen is not None else None, patch)
        try:
            layout.token_grid(output.shape[1] - prefix, image_hw)
        except ValueError:
            continue
        found.append(layout)
    if len(found) > 1 and patch is not None:  # the count the model's own patch grid leaves wins
        by_patch = [f for f in found if _patch_grid(output.shape[1] - f.prefix, image_hw, patch)]
        found = by_patch if len(by_patch) == 1 else found
    if len(found) != 1:
        which = f"no prefix count in {prefixes} leaves" if not found else "several prefix counts leave"
        raise ValueError(f"Expected {where} to be prefix tokens then one patch grid, but {which} a grid that fits the "
                         f"image; {fix}.")
    return found[0]
