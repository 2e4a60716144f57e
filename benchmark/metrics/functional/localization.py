"""Box localization from saliency maps: the Grad-CAM / ILSVRC protocol and wsolevaluation's MaxBoxAcc.

Grad-CAM (Selvaraju et al., ICCV 2017, Sec. 4.1, following CAM, Zhou et al., CVPR 2016):
binarise each map at ``threshold`` (15 %) of its maximum, take the box around the largest
connected component and count a hit when its IoU with a ground-truth box of the class is
``>= 0.5``. MaxBoxAcc (Choe et al., "Evaluating Weakly Supervised Object Localization Methods
Right", CVPR 2020) sweeps the binarisation threshold and reports the best box accuracy.

Conventions (all pure torch, batched, on any device):

* boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates (``torchvision.ops``): a
  component covering columns 10..29 has ``x1 = 10, x2 = 30``; areas are ``(x2-x1) * (y2-y1)``;
* foreground = ``saliency > threshold * max(saliency)`` per image (strict ``>``, as
  ``cv2.threshold(..., THRESH_BINARY)`` in the CAM and wsolevaluation code); NaN pixels are
  background; the maps are not quantised to ``uint8`` as the cv2 code does;
* the largest component is the one with most pixels (cv2's ``contourArea`` of the outer contour
  in the reference code); ties go to the component whose first pixel comes first in raster order;
* no foreground (an all-zero or all-NaN map) gives a NaN box, which never hits.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from benchmark.metrics.functional._common import check_boxes, check_choice, check_saliency, reduce_values
from benchmark.metrics.functional._components import largest_component_boxes

__all__ = ["box_iou", "connected_components", "localization_box", "localization_hit", "max_box_acc"]

_DX = {4: (0,), 8: (-1, 0, 1)}  # column offsets of the neighbours in the next row
_SWEEP_PIXELS = 1 << 19  # pixels swept at once by max_box_acc (~80 bytes each)


def connected_components(mask: Tensor, connectivity: int = 4) -> Tensor:
    """Label the connected components of each boolean image (pure torch, GPU-friendly).

    Horizontal runs of foreground pixels are the nodes; runs in consecutive rows that touch
    (4-connectivity: share a column; 8-connectivity: also diagonally) are linked.
    Shiloach-Vishkin-style hooking with pointer jumping then merges them: each round compresses
    the trees to their roots (``parent = parent[parent]`` until stable) and hooks, over every
    link whose roots differ, the larger root onto the smallest root it touches
    (``scatter_reduce(amin)``, order-independent hence deterministic); about ``log2(runs)``
    rounds. The root of a component is its first run in raster order, and labels are numbered
    ``1..n`` in that order -- the numbering of ``scipy.ndimage.label``.

    Args:
        mask: ``(B, H, W)`` bool foreground.
        connectivity: 4 (edge neighbours) or 8 (edge and corner neighbours).

    Returns:
        ``(B, H, W)`` long labels, 0 for the background.

    Examples:
        >>> mask = torch.tensor([[[1, 0, 1], [0, 0, 1], [1, 0, 0]]], dtype=torch.bool)
        >>> connected_components(mask)
        tensor([[[1, 0, 2],
                 [0, 0, 2],
                 [3, 0, 0]]])
        >>> connected_components(torch.tensor([[[1, 0], [0, 1]]], dtype=torch.bool), connectivity=8)
        tensor([[[1, 0],
                 [0, 1]]])
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"Expected `mask` to be a torch.Tensor, but got {type(mask).__name__}.")
    if mask.ndim != 3 or mask.dtype != torch.bool:
        raise ValueError(f"Expected `mask` to have shape (B, H, W) and dtype torch.bool, but got "
                         f"{tuple(mask.shape)} {mask.dtype}.")
    if connectivity not in _DX:
        raise ValueError(f"Expected `connectivity` to be one of (4, 8), but got {connectivity!r}.")
    batch, height, width = mask.shape
    if not mask.any():
        return torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    index = torch.arange(mask.numel(), device=mask.device).view(batch, height, width)
    starts = mask.clone()
    starts[:, :, 1:] &= ~mask[:, :, :-1]  # first pixel of each horizontal run
    run_of = starts.flatten().long().cumsum(0) - 1  # pixel -> its run (for foreground pixels)
    start_pixel = starts.flatten().nonzero().squeeze(1)  # run -> its first pixel, in raster order
    sources, targets = [], []
    for dx in _DX[connectivity]:  # rows y and y + 1; one edge per pair of touching runs
        cols = slice(max(0, -dx), width - max(0, dx))
        below = (slice(None), slice(1, height), slice(max(0, dx), width - max(0, -dx)))
        both = mask[:, :-1, cols] & mask[below]
        both[:, :, 1:] &= ~both[:, :, :-1].clone()  # the pixel to the left links the same two runs
        sources.append(index[:, :-1, cols][both])
        targets.append(index[below][both])
    u, v = run_of.index_select(0, torch.cat(sources)), run_of.index_select(0, torch.cat(targets))
    parent = torch.arange(len(start_pixel), device=mask.device)
    while True:
        while True:  # pointer jumping to the roots
            grand = parent.index_select(0, parent)
            if torch.equal(grand, parent):
                break
            parent = grand
        ru, rv = parent.index_select(0, u), parent.index_select(0, v)
        crossing = (ru != rv).nonzero().squeeze(1)
        if len(crossing) == 0:
            break
        u, v = u.index_select(0, crossing), v.index_select(0, crossing)  # an edge inside a tree stays so
        ru, rv = ru.index_select(0, crossing), rv.index_select(0, crossing)
        parent = parent.scatter_reduce(0, torch.maximum(ru, rv), torch.minimum(ru, rv), reduce="amin")
    own = parent == torch.arange(len(parent), device=mask.device)
    is_root = torch.zeros_like(starts.flatten()).index_fill_(0, start_pixel[own], True)
    numbers = is_root.view(batch, -1).long().cumsum(dim=1).flatten()
    run_number = numbers.index_select(0, start_pixel.index_select(0, parent))  # label of each run
    labels = run_number.index_select(0, run_of.clamp(min=0))
    return torch.where(mask.flatten(), labels, 0).view(batch, height, width)


def _largest_component_box(mask: Tensor, connectivity: int, dtype: torch.dtype) -> Tensor:
    """``(N, 4)`` xyxy box of the largest component of each ``(N, H, W)`` mask; NaN when empty."""
    count, height, width = mask.shape
    labels = connected_components(mask, connectivity).reshape(count, -1)
    sizes = torch.zeros(count, height * width + 1, dtype=torch.long, device=mask.device)
    sizes.scatter_add_(1, labels, torch.ones_like(labels))
    sizes[:, 0] = 0
    best = sizes.argmax(dim=1)  # first maximum = smallest label = first in raster order
    component = (labels == best[:, None]).view(count, height, width)
    cols, rows = component.any(dim=1), component.any(dim=2)
    x1 = cols.int().argmax(dim=1)
    x2 = width - cols.flip(1).int().argmax(dim=1)
    y1 = rows.int().argmax(dim=1)
    y2 = height - rows.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(dtype)
    return torch.where((sizes.amax(dim=1) > 0)[:, None], boxes, torch.nan)


def _box_dtype(saliency: Tensor) -> torch.dtype:
    return torch.float64 if saliency.dtype == torch.float64 else torch.float32


def _check_threshold(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"Expected `{name}` to be a number in [0, 1], but got {value!r}.")
    return float(value)


def localization_box(saliency: Tensor, threshold: float = 0.15, connectivity: int = 4) -> Tensor:
    """Box around the largest connected component of ``saliency > threshold * max`` (Grad-CAM, CAM).

    Selvaraju et al. (ICCV 2017) Sec. 4.1: "binarize with a threshold of 15% of the max
    intensity ... draw a bounding box around the single largest segment". The comparison is
    strict (``cv2.THRESH_BINARY``); see the module docstring for ties and empty maps.

    Args:
        saliency: ``(B, H, W)`` maps in ``[0, 1]``.
        threshold: fraction of each map's maximum, in ``[0, 1]``.
        connectivity: 4 or 8.

    Returns:
        ``(B, 4)`` xyxy boxes (float32, float64 for float64 maps); a NaN row for a map with no
        pixel above the threshold (all zero / NaN, or ``threshold = 1``).

    Examples:
        >>> saliency = torch.tensor([[[0.0, 0.9, 1.0, 0.0],
        ...                           [0.0, 0.5, 0.8, 0.0],
        ...                           [0.0, 0.0, 0.0, 0.1],
        ...                           [0.0, 0.0, 0.0, 0.0]]])
        >>> localization_box(saliency), localization_box(torch.zeros(1, 4, 4))
        (tensor([[1., 0., 3., 2.]]), tensor([[nan, nan, nan, nan]]))
    """
    check_saliency(saliency)
    threshold = _check_threshold(threshold, "threshold")
    peak = torch.nan_to_num(saliency, nan=0.0).amax(dim=(1, 2), keepdim=True)
    return _largest_component_box(saliency > threshold * peak, connectivity, _box_dtype(saliency))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union of xyxy boxes: ``|A n B| / |A u B|``, 0 when the union is empty.

    Args:
        boxes1: ``(N, 4)`` boxes.
        boxes2: ``(M, 4)`` boxes.

    Returns:
        ``(N, M)`` IoU; NaN where a box is NaN.

    Examples:
        >>> box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0]]))
        tensor([[0.3333, 0.0000]])
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    low = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    high = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=2)
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / union.where(union > 0, 1.0)
    return torch.where(union > 0, iou, torch.where(torch.isnan(union), torch.nan, 0.0))


def _check_pred_boxes(pred_boxes: Tensor, name: str = "pred_boxes") -> Tensor:
    if not isinstance(pred_boxes, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(pred_boxes).__name__}.")
    if pred_boxes.ndim != 2 or pred_boxes.shape[1] != 4 or not pred_boxes.is_floating_point():
        raise ValueError(f"Expected `{name}` to have shape (B, 4) in xyxy pixels, but got "
                         f"{tuple(pred_boxes.shape)} {pred_boxes.dtype}.")
    defined = pred_boxes[~torch.isnan(pred_boxes).any(dim=1)]
    if ((defined[:, 2] < defined[:, 0]) | (defined[:, 3] < defined[:, 1])).any():
        raise ValueError(f"Expected `{name}` in (x1, y1, x2, y2) pixel coordinates with x2 >= x1 and y2 >= y1, "
                         f"but got {defined.tolist()}.")
    return pred_boxes


def _hits(pred: Tensor, gt_boxes: Sequence[Tensor], rule: str, iou_threshold: float) -> Tensor:
    """``(B, P)`` 1/0 hits of ``(B, P, 4)`` predicted boxes against each sample's boxes (NaN: none)."""
    out = torch.full(pred.shape[:2], torch.nan, dtype=torch.float64, device=pred.device)
    for i, gt in enumerate(gt_boxes):
        if len(gt) == 0:
            continue
        gt = gt.to(pred.device)
        iou = box_iou(pred[i].double(), gt)
        need = torch.full((len(gt),), iou_threshold, dtype=torch.float64, device=pred.device)
        if rule == "size_aware":
            m, n = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
            need = torch.minimum(need, m * n / ((m + 10) * (n + 10)))
        out[i] = (iou >= need).any(dim=1).double()
    return out


def localization_hit(pred_boxes: Tensor, gt_boxes: Sequence[Tensor], rule: str = "iou", iou_threshold: float = 0.5,
                     reduction: str = "mean", nan_policy: str = "omit",
                     image_size: Optional[Tuple[int, int]] = None) -> Tensor:
    """Whether each predicted box localises one of its ground-truth boxes (ILSVRC protocol).

    ``rule="iou"``: hit when ``IoU >= iou_threshold`` (0.5, Grad-CAM / ILSVRC CLS-LOC) with any
    ground-truth box. ``rule="size_aware"``: the ILSVRC detection rule, used by a Grad-CAM
    reproduction: ``IoU >= min(iou_threshold, m n / ((m + 10)(n + 10)))``, with ``m, n`` the
    width and height of that ground-truth box, which eases the threshold for small objects.
    Pass the boxes of the right class; a sample without any is undefined (NaN, see
    ``nan_policy``). A NaN predicted box (empty map) is a miss.

    Args:
        pred_boxes: ``(B, 4)`` xyxy predicted boxes.
        gt_boxes: per sample, ``(N_i, 4)`` xyxy ground-truth boxes.
        rule: ``"iou"`` or ``"size_aware"``.
        iou_threshold: IoU needed, in ``[0, 1]``.
        reduction: ``"mean"`` (hit rate in %) or ``"none"`` (1/0 per sample, float64).
        nan_policy: ``"omit"`` (default), ``"zero"`` (a miss) or ``"propagate"``.
        image_size: ``(H, W)`` to clip the ground-truth boxes to; without it they are only
            clipped at 0.

    Examples:
        >>> pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
        >>> gt = [torch.tensor([[0.0, 0.0, 10.0, 12.0]]), torch.tensor([[0.0, 0.0, 1.0, 4.0]])]
        >>> localization_hit(pred, gt, reduction="none")  # IoU 0.83, 0.25
        tensor([1., 0.], dtype=torch.float64)
        >>> localization_hit(pred, gt, rule="size_aware", reduction="none")  # needs min(0.5, 4 / (11 * 14))
        tensor([1., 1.], dtype=torch.float64)
        >>> localization_hit(pred, [gt[0], torch.zeros(0, 4)], reduction="mean")
        tensor(100., dtype=torch.float64)
    """
    _check_pred_boxes(pred_boxes)
    check_choice(rule, "rule", ("iou", "size_aware"))
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    height, width = image_size if image_size is not None else (float("inf"), float("inf"))
    gt = check_boxes(gt_boxes, len(pred_boxes), height, width, "gt_boxes")
    values = _hits(pred_boxes[:, None], gt, rule, iou_threshold)[:, 0]
    values = reduce_values(values, reduction, nan_policy)
    return values * 100 if reduction == "mean" else values


def default_thresholds(device: Optional[torch.device] = None) -> Tensor:
    """``0.00, 0.01, ..., 0.99`` (float64): the sweep of :func:`max_box_acc`.

    Examples:
        >>> default_thresholds()[[0, 1, -1]]
        tensor([0.0000, 0.0100, 0.9900], dtype=torch.float64)
    """
    return torch.arange(100, dtype=torch.float64, device=device) / 100


def check_thresholds(thresholds: Optional[Sequence[float]], device: Optional[torch.device] = None) -> Tensor:
    """The thresholds of a sweep as a float64 tensor, checked to lie in ``[0, 1]``; :func:`default_thresholds` when
    None."""
    if thresholds is None:
        return default_thresholds(device)
    thr = torch.as_tensor(thresholds, dtype=torch.float64, device=device).reshape(-1)
    if thr.numel() == 0 or torch.isnan(thr).any() or (thr < 0).any() or (thr > 1).any():
        raise ValueError(f"Expected `thresholds` to be a non-empty sequence of numbers in [0, 1], but got "
                         f"{thr.tolist()}.")
    return thr


def threshold_levels(saliency: Tensor, thresholds: Optional[Sequence[float]] = None) -> Tuple[Tensor, Tensor]:
    """``(levels, order)``: how many of the sorted thresholds each pixel exceeds (``saliency > t * max``, in the
    map's dtype; NaN pixels none, as the comparison gives) as ``(B, H, W)``, and the sort that ordered the
    caller's thresholds (``sorted = thresholds[order]``).

    Examples:
        >>> threshold_levels(torch.tensor([[[1.0, 0.4], [0.0, 0.7]]]), [0.5, 0.0])
        (tensor([[[2, 1],
                 [0, 2]]]), tensor([1, 0]))
    """
    ascending, order = torch.sort(check_thresholds(thresholds, saliency.device).to(saliency.dtype), stable=True)
    flat = saliency.reshape(len(saliency), -1)
    peak = torch.nan_to_num(flat, nan=0.0).amax(dim=1)
    levels = torch.searchsorted((ascending[None, :] * peak[:, None]).contiguous(), flat.contiguous())
    return levels.masked_fill(torch.isnan(flat), 0).view(saliency.shape), order


def max_box_acc(saliency: Tensor, boxes: Sequence[Tensor], thresholds: Optional[Sequence[float]] = None,
                iou_threshold: float = 0.5, connectivity: int = 4, reduction: str = "mean",
                nan_policy: str = "omit") -> Tensor:
    """MaxBoxAcc (Choe et al., CVPR 2020, wsolevaluation's ``BoxEvaluator``), "V1".

    For each threshold ``t`` of the sweep, the box of the largest component of
    ``saliency > t * max`` (:func:`localization_box`) is correct when its IoU with a
    ground-truth box is ``>= iou_threshold``; ``BoxAcc(t)`` = the fraction of correct images and
    ``MaxBoxAcc = 100 * max_t BoxAcc(t)``. Use the maps of the ground-truth class
    ("GT-known"). V1 = one box (largest component) and one IoU threshold; V2 (all components, IoU in
    {0.3, 0.5, 0.7}) is :func:`~benchmark.metrics.functional.wsol.max_box_acc_v2`. Every threshold comes from
    one sweep (:func:`~benchmark.metrics.functional._components.largest_component_boxes`: one sort, a union-find
    forest), the same boxes as labelling each threshold's map apart (tested). Differences from the
    reference code: no ``uint8`` quantisation, component size in pixels rather than the
    contour area, continuous-coordinate IoU (the reference clips ``x2`` to ``W - 1`` and counts
    ``+1`` pixel areas). The default sweep is
    ``0.00:0.01:0.99``; wsolevaluation's default ``cam_curve_interval`` is 0.001 (pass
    ``thresholds=torch.arange(1000) / 1000`` for it, 10x the cost).

    Args:
        saliency: ``(B, H, W)`` maps of the ground-truth class in ``[0, 1]``.
        boxes: per sample, ``(N_i, 4)`` xyxy ground-truth boxes (clipped to the image).
        thresholds: the sweep, values in ``[0, 1]``; default :func:`default_thresholds`.
        iou_threshold: IoU needed (0.5).
        connectivity: 4 or 8.
        reduction: ``"none"``: ``(B, T)`` 1/0 hits per threshold; ``"mean"``: MaxBoxAcc in %.
        nan_policy: samples without boxes are undefined: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> saliency = torch.tensor([[[1.0, 0.3, 0.0], [0.3, 0.3, 0.0], [0.0, 0.0, 0.0]]])
        >>> box = [torch.tensor([[0.0, 0.0, 1.0, 1.0]])]
        >>> max_box_acc(saliency, box, thresholds=[0.2, 0.5], reduction="none")
        tensor([[0., 1.]], dtype=torch.float64)
        >>> max_box_acc(saliency, box, thresholds=[0.2, 0.5])
        tensor(100., dtype=torch.float64)
    """
    check_saliency(saliency)
    check_choice(reduction, "reduction", ("mean", "none"))
    check_choice(nan_policy, "nan_policy", ("omit", "zero", "propagate"))
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    batch, height, width = saliency.shape
    gt = check_boxes(boxes, batch, height, width)
    levels, order = threshold_levels(saliency, thresholds)
    per_chunk = max(1, _SWEEP_PIXELS // max(1, height * width))
    swept = torch.cat([largest_component_boxes(levels[i:i + per_chunk], len(order), connectivity)
                       for i in range(0, batch, per_chunk)])
    pred = torch.empty_like(swept)
    pred[:, order] = swept  # back to the caller's threshold order
    values = _hits(pred.to(_box_dtype(saliency)), gt, "iou", iou_threshold)
    if reduction == "none":
        return reduce_values(values, "none", nan_policy)
    return reduce_values(values, "mean", nan_policy).max() * 100
