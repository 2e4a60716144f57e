"""Bounding boxes through the backbone's preprocessing (resize the shorter side, or squash to a square when
``resize_mode="squash"``; then centre-crop).

Boxes are ``(N, 4)`` ``xyxy`` in pixel-edge coordinates: a box covering pixel columns 3..5
has ``x1 = 3, x2 = 6``. Policy, every case counted (the counts travel with each sample):

* ``boxes_invalid`` -- a non-finite box, or one with ``x2 <= x1`` or ``y2 <= y1`` in the
  annotation: dropped;
* ``boxes_clipped`` -- a box reaching outside the original image, or cut by the centre crop:
  clipped to the image / the crop and kept;
* ``boxes_dropped`` -- a box lying entirely outside the original image, or cropped away
  completely by the centre crop: dropped.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

from benchmark.runtime.preprocessing import RESIZE_MODES, Preprocessing

__all__ = ["BOX_COUNTS", "resized_size", "transform_boxes"]

BOX_COUNTS = ("boxes_invalid", "boxes_clipped", "boxes_dropped")


def resized_size(height: int, width: int, size: int, resize_mode: str = "shorter") -> Tuple[int, int]:
    """``(H, W)`` after resizing: the shorter side to ``size`` (torchvision ``Resize(int)`` rule), or
    ``(size, size)`` for ``resize_mode="squash"`` (``Resize((size, size))``).

    Raises:
        ValueError: ``resize_mode`` not one of :data:`~benchmark.runtime.preprocessing.RESIZE_MODES`.

    Examples:
        >>> resized_size(375, 500, 256)
        (256, 341)
        >>> resized_size(375, 500, 256, "squash")
        (256, 256)
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"Expected `resize_mode` to be one of {list(RESIZE_MODES)}, but got {resize_mode!r}.")
    if resize_mode == "squash":
        return size, size
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _crop_offset(length: int, crop: int) -> int:
    """Left/top offset of torchvision's ``CenterCrop`` (negative: it pads)."""
    if length < crop:
        return -((crop - length) // 2)
    return int(round((length - crop) / 2.0))


def _clip(boxes: Tensor, width: float, height: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Clip to ``[0, width] x [0, height]``; returns (clipped boxes, changed, empty after clipping)."""
    limits = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    clipped = torch.minimum(boxes.clamp(min=0), limits)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    changed = (clipped != boxes).any(dim=1)
    return clipped, changed, empty


def transform_boxes(boxes: Tensor, image_size: Tuple[int, int],
                    prep: Preprocessing) -> Tuple[Tensor, Tensor, Dict[str, int]]:
    """Map annotation boxes of an ``image_size = (H, W)`` image into the preprocessed image.

    Args:
        boxes: ``(N, 4)`` xyxy boxes in the original image's pixels.
        image_size: ``(H, W)`` of the original image.
        prep: the backbone's :class:`~benchmark.runtime.backbones.Preprocessing`.

    Returns:
        ``(boxes, keep, counts)``: the kept boxes (float32, in the crop's pixels), the indices of the
        input boxes kept (to select their labels / flags), and the counts named in :data:`BOX_COUNTS`.

    Examples:
        >>> prep = Preprocessing((3, 224, 224), 256, 224, (0.5,) * 3, (0.5,) * 3, "bilinear")
        >>> boxes = torch.tensor([[100., 50., 300., 250.], [0., 0., 20., 20.], [5., 5., 5., 9.]])
        >>> out, keep, counts = transform_boxes(boxes, (400, 600), prep)
        >>> out.tolist(), keep.tolist(), counts
        ([[0.0, 16.0, 112.0, 144.0]], [0], {'boxes_invalid': 1, 'boxes_clipped': 1, 'boxes_dropped': 1})
        >>> squash = Preprocessing((3, 224, 224), 256, 224, (0.5,) * 3, (0.5,) * 3, "bilinear", "squash")
        >>> transform_boxes(boxes[:1], (400, 600), squash)[0].tolist()  # x * 256/600 - 16, y * 256/400 - 16
        [[26.66666603088379, 16.0, 112.0, 144.0]]
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    height, width = int(image_size[0]), int(image_size[1])
    index = torch.arange(len(boxes))
    valid = torch.isfinite(boxes).all(dim=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    counts = {"boxes_invalid": int((~valid).sum()), "boxes_clipped": 0, "boxes_dropped": 0}
    boxes, index = boxes[valid], index[valid]
    boxes, changed_image, empty = _clip(boxes, width, height)
    new_h, new_w = resized_size(height, width, prep.resize_size, prep.resize_mode)
    scaled = boxes * torch.tensor([new_w / width, new_h / height] * 2, dtype=boxes.dtype)
    left, top = _crop_offset(new_w, prep.crop_size), _crop_offset(new_h, prep.crop_size)
    shifted = scaled - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    out, changed_crop, empty_crop = _clip(shifted, prep.crop_size, prep.crop_size)
    drop = empty | empty_crop
    counts["boxes_dropped"] = int(drop.sum())
    counts["boxes_clipped"] = int(((changed_image | changed_crop) & ~drop).sum())
    return out[~drop].float(), index[~drop], counts
