"""Shared checks and reductions of the functional metrics (torchmetrics-style messages)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from benchmark._utils import check_choice  # noqa: F401  (re-exported: the metrics' and datamodules' import)

NAN_POLICIES = ("omit", "zero", "propagate")
REDUCTIONS = ("mean", "none")


def check_images(images: Tensor) -> Tensor:
    """``(B, C, H, W)`` floating-point model inputs with B >= 1, else a TypeError / ValueError."""
    if not isinstance(images, Tensor):
        raise TypeError(f"Expected `images` to be a torch.Tensor, but got {type(images).__name__}.")
    if images.ndim != 4 or not images.is_floating_point() or images.shape[0] == 0:
        raise ValueError(f"Expected `images` to have shape (B, C, H, W) with a floating dtype, but got "
                         f"{tuple(images.shape)} {images.dtype}.")
    return images


def _check_unit_range(values: Tensor, expectation: str) -> Tensor:
    """Raise ``ValueError(f"{expectation}, but got values in [lo, hi].")`` outside [0, 1] (NaN ignored)."""
    finite = values[~torch.isnan(values)]
    if finite.numel() and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(f"{expectation}, but got values in [{finite.min().item():.4g}, {finite.max().item():.4g}].")
    return values


def check_saliency(saliency: Tensor, name: str = "saliency") -> Tensor:
    """``(B, H, W)`` floating maps with values in ``[0, 1]`` (NaN allowed: an invalid map)."""
    if not isinstance(saliency, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(saliency).__name__}.")
    if saliency.ndim != 3 or not saliency.is_floating_point() or saliency.shape[0] == 0:
        raise ValueError(f"Expected `{name}` to have shape (B, H, W) with values in [0, 1], but got "
                         f"{tuple(saliency.shape)} {saliency.dtype}.")
    return _check_unit_range(saliency, f"Expected `{name}` to have shape (B, H, W) with values in [0, 1]")


def check_probs(probs: Tensor, name: str, batch: Optional[int] = None) -> Tensor:
    """``(B,)`` probabilities in ``[0, 1]``."""
    if not isinstance(probs, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(probs).__name__}.")
    if probs.ndim != 1 or not probs.is_floating_point() or (batch is not None and len(probs) != batch):
        size = "(B,)" if batch is None else f"({batch},)"
        raise ValueError(f"Expected `{name}` to have shape {size} with probabilities in [0, 1], but got "
                         f"{tuple(probs.shape)} {probs.dtype}.")
    return _check_unit_range(probs, f"Expected `{name}` to hold probabilities in [0, 1]")


def check_same_batch(**tensors: Tensor) -> int:
    """All arguments have the same first dimension; returns it."""
    sizes = {name: len(t) for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Expected the same batch size for {list(sizes)}, but got {sizes}.")
    return next(iter(sizes.values()))


def check_boxes(boxes: Sequence[Tensor], batch: int, height: int, width: int, name: str = "boxes") -> List[Tensor]:
    """A list of ``batch`` ``(N_i, 4)`` xyxy pixel boxes; boxes are clipped to the image.

    Raises:
        ValueError: wrong count, shape, or ``x2 < x1`` / ``y2 < y1`` (not xyxy).
    """
    if not isinstance(boxes, (list, tuple)) or len(boxes) != batch:
        got = len(boxes) if isinstance(boxes, (list, tuple)) else type(boxes).__name__
        raise ValueError(f"Expected `{name}` to be a list of {batch} (N_i, 4) tensors, but got {got}.")
    out = []
    for i, box in enumerate(boxes):
        box = box if isinstance(box, Tensor) else torch.as_tensor(box, dtype=torch.float64)
        if box.numel() == 0:
            box = box.reshape(0, 4)
        if box.ndim != 2 or box.shape[-1] != 4:
            raise ValueError(f"Expected `{name}[{i}]` to have shape (N, 4) in xyxy pixels, but got {tuple(box.shape)}.")
        if torch.isnan(box).any() or (box[:, 2] < box[:, 0]).any() or (box[:, 3] < box[:, 1]).any():
            raise ValueError(f"Expected `{name}[{i}]` in (x1, y1, x2, y2) pixel coordinates with x2 >= x1 and "
                             f"y2 >= y1, but got {box.tolist()}.")
        clipped = box.clone().double()
        clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
        clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
        out.append(clipped)
    return out


def reduce_values(values: Tensor, reduction: str, nan_policy: str) -> Tensor:
    """Apply ``nan_policy`` to per-sample values (NaN = undefined) and ``reduction``.

    ``omit``: undefined samples are left out of the mean (and stay NaN with reduction="none");
    ``zero``: they score 0; ``propagate``: the mean is NaN if any is.

    Examples:
        >>> reduce_values(torch.tensor([1.0, float("nan"), 3.0]), "mean", "omit")
        tensor(2., dtype=torch.float64)
        >>> reduce_values(torch.tensor([1.0, float("nan"), 3.0]), "mean", "zero")
        tensor(1.3333, dtype=torch.float64)
    """
    check_choice(reduction, "reduction", REDUCTIONS)
    check_choice(nan_policy, "nan_policy", NAN_POLICIES)
    if nan_policy == "zero":
        values = torch.nan_to_num(values, nan=0.0)
    if reduction == "none":
        return values
    values = values.double()
    return values.nanmean(dim=0) if nan_policy == "omit" else values.mean(dim=0)
