"""Pointing game (Zhang et al., ECCV 2016 / IJCV 2018, TorchRay) and energy pointing game (Score-CAM).

* Pointing game ("Top-down Neural Attention by Excitation Backprop"): the map's maximum
  points at the object when it lies within ``tolerance`` pixels of an object pixel. As in
  TorchRay's ``PointingGame.evaluate``: distances are Euclidean between pixel indices and the
  test is strict, ``dy^2 + dx^2 < tolerance^2`` (15 px exactly is a miss); ties in the argmax
  go to the first maximum in raster order; NaN pixels never win it.
* Energy pointing game (Wang et al., "Score-CAM", CVPRW 2020, Sec. 5.2): the share of the
  map's energy (sum) that falls inside the object; undefined for an all-zero map.

Objects are the union of a sample's xyxy boxes (continuous pixel coordinates, torchvision
convention) or a ``(H, W)`` bool mask. A box covers pixel columns ``floor(x1) .. ceil(x2) - 1``
and rows ``floor(y1) .. ceil(y2) - 1`` -- the pixels whose unit square overlaps the box; a VOC
box ``(xmin, ymin, xmax, ymax)`` (1-based, inclusive) given as ``(xmin - 1, ymin - 1, xmax,
ymax)`` covers exactly the pixels TorchRay's ``voc_as_mask`` marks. A sample without any object
pixel is undefined (NaN, see ``nan_policy``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from benchmark.metrics.functional._common import check_boxes, check_choice, check_saliency, reduce_values

__all__ = ["boxes_to_mask", "energy_pointing_game", "pointing_game", "pointing_game_recall"]

Objects = Union[Tensor, Sequence[Tensor]]


def boxes_to_mask(boxes: Sequence[Tensor], height: int, width: int) -> Tensor:
    """Rasterise each sample's boxes into one ``(H, W)`` bool mask (their union).

    Pixel ``(i, j)`` is inside box ``(x1, y1, x2, y2)`` when ``floor(x1) <= j <= ceil(x2) - 1``
    and ``floor(y1) <= i <= ceil(y2) - 1``.

    Args:
        boxes: per sample, ``(N_i, 4)`` xyxy boxes (checked and clipped to the image).
        height: image height ``H``.
        width: image width ``W``.

    Returns:
        ``(B, H, W)`` bool masks.

    Examples:
        >>> boxes_to_mask([torch.tensor([[0.5, 1.0, 2.0, 2.2]])], 4, 3).int()
        tensor([[[0, 0, 0],
                 [1, 1, 0],
                 [1, 1, 0],
                 [0, 0, 0]]], dtype=torch.int32)
    """
    checked = check_boxes(boxes, len(boxes), height, width)
    device = checked[0].device if checked else None
    most = max([len(b) for b in checked] + [1])
    padded = torch.full((len(checked), most, 4), torch.nan, dtype=torch.float64, device=device)
    for i, box in enumerate(checked):
        padded[i, :len(box)] = box
    cols = torch.arange(width, dtype=torch.float64, device=device)
    rows = torch.arange(height, dtype=torch.float64, device=device)
    in_x = (cols >= padded[..., 0:1].floor()) & (cols < padded[..., 2:3].ceil())  # (B, N, W); NaN: False
    in_y = (rows >= padded[..., 1:2].floor()) & (rows < padded[..., 3:4].ceil())  # (B, N, H)
    return (in_y[..., :, None] & in_x[..., None, :]).any(dim=1)


def _object_masks(objects: Objects, batch: int, height: int, width: int, device: torch.device) -> Tensor:
    """``(B, H, W)`` bool object masks from boxes or masks (see :func:`pointing_game`)."""
    if isinstance(objects, Tensor):
        if objects.dtype != torch.bool or objects.shape != (batch, height, width):
            raise ValueError(f"Expected `objects` as a tensor to be a ({batch}, {height}, {width}) bool mask, but got "
                             f"{tuple(objects.shape)} {objects.dtype}.")
        return objects.to(device)
    if isinstance(objects, (list, tuple)) and len(objects) == batch and all(
            isinstance(o, Tensor) and o.dtype == torch.bool for o in objects):
        shapes = {tuple(o.shape) for o in objects}
        if shapes != {(height, width)}:
            raise ValueError(f"Expected `objects` masks of shape ({height}, {width}), but got {sorted(shapes)}.")
        return torch.stack(list(objects)).to(device)
    if isinstance(objects, (list, tuple)):
        objects = [o.to(device) if isinstance(o, Tensor) else o for o in objects]
    return boxes_to_mask(check_boxes(objects, batch, height, width, "objects"), height, width).to(device)


def _check_tolerance(tolerance: float) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
        raise ValueError(f"Expected `tolerance` to be a positive number of pixels, but got {tolerance!r}.")
    return float(tolerance)


def _point_hits(saliency: Tensor, masks: Tensor, tolerance: float) -> Tensor:
    """1/0 per map (NaN without object pixels): argmax within ``tolerance`` of the mask."""
    batch, height, width = saliency.shape
    point = torch.nan_to_num(saliency, nan=-torch.inf).flatten(1).argmax(dim=1)  # first maximum
    row, col = (point // width).double(), (point % width).double()
    rows = torch.arange(height, dtype=torch.float64, device=saliency.device)
    cols = torch.arange(width, dtype=torch.float64, device=saliency.device)
    dist2 = (rows[None, :, None] - row[:, None, None]) ** 2 + (cols[None, None, :] - col[:, None, None]) ** 2
    hits = (masks & (dist2 < tolerance ** 2)).flatten(1).any(dim=1).double()
    return torch.where(masks.flatten(1).any(dim=1), hits, torch.nan)


def pointing_game(saliency: Tensor, objects: Objects, tolerance: float = 15, reduction: str = "mean",
                  nan_policy: str = "omit") -> Tensor:
    """Pointing game hit: the map's argmax lies within ``tolerance`` px of the object (Zhang et al. 2018).

    ``hit = any over object pixels p of |p - argmax|^2 < tolerance^2`` (pixel indices, strict,
    as TorchRay). The benchmark score -- the mean over classes of per-class hit rates -- is
    :class:`benchmark.metrics.PointingGame`'s; here ``"mean"`` is the plain batch mean.

    Args:
        saliency: ``(B, H, W)`` maps in ``[0, 1]``.
        objects: per sample, ``(N_i, 4)`` xyxy boxes of the class (their union is the object),
            or ``(H, W)`` bool masks (a list, or one ``(B, H, W)`` tensor).
        tolerance: pixels (15 in the paper and TorchRay), > 0.
        reduction: ``"mean"`` (hit rate in %) or ``"none"`` (1/0 per sample, float64).
        nan_policy: samples without object pixels: ``"omit"`` (default), ``"zero"`` (a miss), ``"propagate"``.

    Examples:
        >>> saliency = torch.zeros(2, 32, 32)
        >>> saliency[0, 24, 20] = saliency[1, 24, 21] = 1.0
        >>> box = torch.tensor([[0.0, 0.0, 11.0, 15.0]])  # pixels 0..10 x 0..14
        >>> pointing_game(saliency, [box, box], reduction="none")  # from (14, 10): 14.14 px and 14.87 px
        tensor([1., 1.], dtype=torch.float64)
        >>> pointing_game(saliency, [box, box], tolerance=14.5)
        tensor(50., dtype=torch.float64)
    """
    check_saliency(saliency)
    tolerance = _check_tolerance(tolerance)
    batch, height, width = saliency.shape
    masks = _object_masks(objects, batch, height, width, saliency.device)
    values = reduce_values(_point_hits(saliency, masks, tolerance), reduction, nan_policy)
    return values * 100 if reduction == "mean" else values


def energy_pointing_game(saliency: Tensor, objects: Objects, reduction: str = "mean",
                         nan_policy: str = "omit") -> Tensor:
    """Energy-based pointing game, in %: ``100 * sum(map inside the object) / sum(map)`` (Score-CAM).

    Wang et al. (CVPRW 2020), Sec. 5.2: "how much energy of the saliency map falls into the
    target object bounding box". NaN pixels count as 0. An all-zero map (total 0) or a sample
    without object pixels is undefined (NaN, see ``nan_policy``).

    Args:
        saliency: ``(B, H, W)`` maps in ``[0, 1]``.
        objects: per sample, ``(N_i, 4)`` xyxy boxes (their union) or ``(H, W)`` bool masks.
        reduction: ``"mean"`` or ``"none"`` (per sample, %).
        nan_policy: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> saliency = torch.tensor([[[1.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 1.0]]])
        >>> energy_pointing_game(saliency, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])])  # 2 / 3
        tensor(66.6667, dtype=torch.float64)
    """
    check_saliency(saliency)
    batch, height, width = saliency.shape
    masks = _object_masks(objects, batch, height, width, saliency.device)
    energy = torch.nan_to_num(saliency.double(), nan=0.0).flatten(1)
    total, inside = energy.sum(dim=1), (energy * masks.flatten(1)).sum(dim=1)
    defined = (total > 0) & masks.flatten(1).any(dim=1)
    values = torch.where(defined, inside / total.where(total > 0, 1.0) * 100, torch.nan)
    return reduce_values(values, reduction, nan_policy)


def pointing_game_recall(topk_saliency: Tensor, topk_classes: Tensor, boxes: Sequence[Tensor],
                         box_labels: Sequence[Tensor], raw_max: Optional[Tensor] = None, tolerance: float = 15,
                         reject_threshold: float = 0.5, top_k: int = 5, reduction: str = "mean") -> Tensor:
    """Top-k pointing "recall" of a Grad-CAM reproduction study (seed 000): ground-truth classes found.

    Definition used here: for each image, the ground-truth classes are the distinct
    ``box_labels``; the candidates are the first ``top_k`` predicted classes; a candidate at
    position ``j`` is *rejected* when ``raw_max[:, j] < reject_threshold`` (its map's maximum
    before the per-image min-max normalisation). A ground-truth class ``c`` is *recalled* when
    it is a non-rejected candidate and its map's argmax hits the union of the boxes of ``c``
    (:func:`pointing_game`'s rule). ``recall = 100 * sum(recalled) / sum(ground-truth classes)``
    over the batch (micro average). Without ``raw_max`` no candidate can be rejected (the maps
    are min-max normalised, their maximum is 1 or 0), so every top-k class counts.

    Args:
        topk_saliency: ``(B, K, H, W)`` maps of the ``K >= top_k`` top predicted classes.
        topk_classes: ``(B, K)`` those classes, best first.
        boxes: per sample, ``(N_i, 4)`` xyxy boxes of all objects.
        box_labels: per sample, ``(N_i,)`` their classes.
        raw_max: ``(B, K)`` maxima of the raw (un-normalised) maps, or None (no rejection).
        tolerance: pointing tolerance in pixels (15).
        reject_threshold: rejection threshold on ``raw_max`` (0.5).
        top_k: number of candidates (5).
        reduction: ``"none"``: ``(B, 2)`` float64 (recalled, ground-truth classes) per image;
            ``"mean"``: the recall in %.

    Examples:
        >>> maps = torch.zeros(1, 2, 8, 8)
        >>> maps[0, 0, 1, 1] = maps[0, 1, 6, 6] = 1.0
        >>> boxes, labels = [torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 8.0, 8.0]])], [torch.tensor([3, 7])]
        >>> pointing_game_recall(maps, torch.tensor([[3, 7]]), boxes, labels, top_k=2)
        tensor(100., dtype=torch.float64)
        >>> pointing_game_recall(maps, torch.tensor([[3, 7]]), boxes, labels, raw_max=torch.tensor([[0.9, 0.2]]),
        ...                      top_k=2, reduction="none")
        tensor([[1., 2.]], dtype=torch.float64)
    """
    check_choice(reduction, "reduction", ("mean", "none"))
    tolerance = _check_tolerance(tolerance)
    if not isinstance(topk_saliency, Tensor) or topk_saliency.ndim != 4:
        got = tuple(topk_saliency.shape) if isinstance(topk_saliency, Tensor) else type(topk_saliency).__name__
        raise ValueError(f"Expected `topk_saliency` to have shape (B, K, H, W), but got {got}.")
    batch, k, height, width = topk_saliency.shape
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= k:
        raise ValueError(f"Expected `top_k` to be an int in [1, {k}] (the maps given), but got {top_k!r}.")
    if not isinstance(topk_classes, Tensor) or tuple(topk_classes.shape) != (batch, k):
        got = tuple(topk_classes.shape) if isinstance(topk_classes, Tensor) else type(topk_classes).__name__
        raise ValueError(f"Expected `topk_classes` to have shape ({batch}, {k}), but got {got}.")
    if raw_max is not None and (not isinstance(raw_max, Tensor) or tuple(raw_max.shape) != (batch, k)):
        got = tuple(raw_max.shape) if isinstance(raw_max, Tensor) else type(raw_max).__name__
        raise ValueError(f"Expected `raw_max` to have shape ({batch}, {k}), but got {got}.")
    if not isinstance(box_labels, (list, tuple)) or len(box_labels) != batch:
        raise ValueError(f"Expected `box_labels` to be a list of {batch} (N_i,) tensors, but got "
                         f"{len(box_labels) if isinstance(box_labels, (list, tuple)) else type(box_labels).__name__}.")
    saliency = check_saliency(topk_saliency[:, :top_k].reshape(-1, height, width), "topk_saliency")
    checked = check_boxes(boxes, batch, height, width)
    device = saliency.device
    kept = torch.ones(batch, top_k, dtype=torch.bool, device=device)
    if raw_max is not None:
        kept = raw_max[:, :top_k].to(device) >= reject_threshold
    classes = topk_classes[:, :top_k].to(device)
    kept &= ~(classes[:, :, None] == classes[:, None, :]).tril(-1).any(dim=2)  # a repeated class counts once
    # one (B * top_k) object mask: the boxes of the candidate class, if it is a ground-truth class
    per_map = []
    counts = torch.zeros(batch, 2, dtype=torch.float64, device=device)
    for i in range(batch):
        labels = torch.as_tensor(box_labels[i], device=device).reshape(-1)
        if len(labels) != len(checked[i]):
            raise ValueError(f"Expected `box_labels[{i}]` to have shape ({len(checked[i])},), but got "
                             f"{tuple(labels.shape)}.")
        counts[i, 1] = len(torch.unique(labels))
        per_map += [checked[i][(labels == c).to(checked[i].device)] for c in classes[i].tolist()]
    hits = _point_hits(saliency, boxes_to_mask(per_map, height, width).to(device), tolerance).view(batch, top_k)
    counts[:, 0] = (torch.nan_to_num(hits, nan=0.0).bool() & kept).sum(dim=1).double()
    if reduction == "none":
        return counts
    total = counts.sum(dim=0)
    return torch.where(total[1] > 0, total[0] / total[1].clamp(min=1) * 100, torch.nan)
