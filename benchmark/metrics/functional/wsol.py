"""MaxBoxAccV2 and PxAP (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020).

The two WSOL metrics of wsolevaluation (``BoxEvaluator`` with ``box_v2_metric=True`` and
``MaskEvaluator``), on maps of the ground-truth class. Both are dataset-level: a maximum over
thresholds of an accuracy over images (V2), the area under a precision-recall curve pooled over
every pixel of the data (PxAP). So, as :func:`~benchmark.metrics.functional.localization.max_box_acc`
does, ``reduction="none"`` returns per-image statistics that add up over images (hits per
threshold, pixel counts per threshold), from which the dataset value is computed in any order.

Conventions shared with :mod:`benchmark.metrics.functional.localization`: xyxy boxes in continuous
pixel coordinates (a component over columns 10..29 has ``x1 = 10, x2 = 30``); MaxBoxAccV2 thresholds
``saliency > t * max`` as :func:`~benchmark.metrics.functional.localization.max_box_acc`, PxAP scores
the min-max normalised map (the module's maps are min-max normalised already: both are ``t`` on the map
itself, as in wsolevaluation); no ``uint8`` quantisation. A map holding NaN is undefined (a NaN row,
counted in ``n_invalid`` by the Metric classes); an all-zero map is scored (no box: a miss; PxAP: every
pixel at score 0), as wsolevaluation scores the zeros its ``normalize_scoremap`` makes of a constant map.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from benchmark.metrics.functional._common import (
    NAN_POLICIES,
    check_boxes,
    check_choice,
    check_saliency,
    reduce_values,
)
from benchmark.metrics.functional._components import component_events
from benchmark.metrics.functional.localization import check_thresholds, threshold_levels

__all__ = ["max_box_acc_v2", "pxap"]

IOU_THRESHOLDS = (0.3, 0.5, 0.7)  #: wsolevaluation's ``iou_threshold_list`` 30, 50, 70 (%)
_CHUNK_PIXELS = 1 << 19  # pixels swept at once by max_box_acc_v2 (~100 bytes each)


def _hits_of(boxes: Tensor, gt: Tensor, valid: Tensor, deltas: Tensor) -> Tensor:
    """``(M, D)``: whether each ``(M, 4)`` box reaches IoU >= delta with one of its ``(M, G, 4)`` boxes (the
    operations of :func:`~benchmark.metrics.functional.localization.box_iou`, so the same float64 IoU)."""
    area1 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area2 = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    low = torch.maximum(boxes[:, None, :2], gt[..., :2])
    high = torch.minimum(boxes[:, None, 2:], gt[..., 2:])
    inter = (high - low).clamp(min=0).prod(dim=2)
    union = area1[:, None] + area2 - inter
    iou = torch.where(union > 0, inter / union.where(union > 0, 1.0), 0.0)
    return ((iou[..., None] >= deltas) & valid[..., None]).any(dim=1)


def _sweep_hits(levels: Tensor, steps: int, gt: Tensor, valid: Tensor, deltas: Tensor, connectivity: int) -> Tensor:
    """``(B, D, steps)`` bool: at each threshold, does the box of any component hit? One sweep for all thresholds
    (:func:`~benchmark.metrics.functional._components.component_events`): every box a component has over the sweep
    is scored once; an image hits at a threshold while one of its components' current boxes does, so each event
    adds its hit minus the component's previous one, a merge takes the merged component's last hit away, and a
    running sum from the highest threshold down counts the hitting components.
    """
    batch, height, width = levels.shape
    events, deaths = component_events(levels, steps, connectivity)
    level, image = events[:, 0], events[:, 1]
    hit = _hits_of(events[:, 3:].double(), gt.index_select(0, image), valid.index_select(0, image), deltas).long()
    name = image * height * width + events[:, 2]
    by_name = torch.argsort(name, stable=True)  # each component's events in sweep order
    name, hit, level, image = name[by_name], hit[by_name], level[by_name], image[by_name]
    same = name[1:] == name[:-1]
    change = hit.clone()
    change[1:] -= hit[:-1] * same[:, None]  # minus the component's previous hit
    dead = deaths[:, 1] * height * width + deaths[:, 2]
    last = torch.searchsorted(name, dead, right=True) - 1  # its last event, before it merged
    delta = torch.zeros(batch * (steps + 1), len(deltas), dtype=torch.long, device=levels.device)
    delta.index_add_(0, image * (steps + 1) + level, change)
    delta.index_add_(0, deaths[:, 1] * (steps + 1) + deaths[:, 0], -hit.index_select(0, last))
    count = delta.view(batch, steps + 1, -1).flip(1).cumsum(1).flip(1)  # hitting components at each level
    return (count[:, 1:] > 0).transpose(1, 2)


def _box_acc_per_iou(values: Tensor, nan_policy: str) -> Tensor:
    """``(D,)`` MaxBoxAcc in % per IoU threshold from ``(N, D, T)`` per-image hits: ``100 max_t mean_n``."""
    return reduce_values(values, "mean", nan_policy).amax(dim=-1) * 100


def max_box_acc_v2(saliency: Tensor, boxes: Sequence[Tensor], thresholds: Optional[Sequence[float]] = None,
                   iou_thresholds: Sequence[float] = IOU_THRESHOLDS, connectivity: int = 4, reduction: str = "mean",
                   nan_policy: str = "omit") -> Tensor:
    """MaxBoxAccV2 (Choe et al., CVPR 2020, Sec. 4.1; wsolevaluation's ``box_v2_metric``, ``multi_contour_eval``).

    At threshold ``t``, the foreground is ``saliency > t * max`` (as :func:`max_box_acc`) and *every*
    connected component gives a box; an image is correct at ``(t, delta)`` when one of those boxes
    has IoU ``>= delta`` with one of its ground-truth boxes::

        BoxAcc(t, delta) = mean over images of 1[max over components and boxes of IoU >= delta]
        MaxBoxAccV2 = 100 * mean over delta in {0.3, 0.5, 0.7} of max over t of BoxAcc(t, delta)

    All thresholds come from one sweep (:func:`_sweep_hits`), equal to labelling each threshold's map
    apart. Differences from the reference code, as in :func:`max_box_acc`: no ``uint8`` quantisation,
    continuous-coordinate IoU, components (4-connected by default; cv2's contours are 8-connected,
    ``connectivity=8``) rather than ``RETR_TREE`` contours, so holes add no boxes; an empty map gives no
    box (a miss) rather than ``[0, 0, 0, 0]``. Default sweep ``0.00:0.01:0.99`` (wsolevaluation's
    ``evaluation.py``; its training config uses ``cam_curve_interval=0.001``).

    Args:
        saliency: ``(B, H, W)`` maps of the ground-truth class in ``[0, 1]``.
        boxes: per sample, ``(N_i, 4)`` xyxy ground-truth boxes (clipped to the image).
        thresholds: the sweep, values in ``[0, 1]``; default ``0.00:0.01:0.99``.
        iou_thresholds: the ``delta`` values, in ``(0, 1]``.
        connectivity: 4 or 8.
        reduction: ``"none"``: ``(B, D, T)`` 1/0 hits per IoU and map threshold; ``"mean"``: MaxBoxAccV2 in %.
        nan_policy: images without boxes or with a NaN map are undefined: ``"omit"``, ``"zero"``, ``"propagate"``.

    Examples:
        >>> saliency = torch.tensor([[[1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        ...                           [1.0, 1.0, 1.0, 0.0, 0.8, 0.8],
        ...                           [0.0, 0.0, 0.0, 0.0, 0.8, 0.8],
        ...                           [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]])
        >>> box = [torch.tensor([[4.0, 1.0, 6.0, 4.0]])]  # the small blob's box has IoU 4/6 with it
        >>> max_box_acc_v2(saliency, box, thresholds=[0.5, 0.9], reduction="none")
        tensor([[[1., 0.],
                 [1., 0.],
                 [0., 0.]]], dtype=torch.float64)
        >>> max_box_acc_v2(saliency, box, thresholds=[0.5, 0.9])  # V1 (largest component) scores 0
        tensor(66.6667, dtype=torch.float64)
    """
    check_saliency(saliency)
    check_choice(reduction, "reduction", ("mean", "none"))
    check_choice(nan_policy, "nan_policy", NAN_POLICIES)
    check_choice(connectivity, "connectivity", (4, 8))
    deltas = torch.as_tensor(iou_thresholds, dtype=torch.float64, device=saliency.device).reshape(-1)
    if deltas.numel() == 0 or not bool(((deltas > 0) & (deltas <= 1)).all()):
        raise ValueError(f"Expected `iou_thresholds` to be a non-empty sequence of numbers in (0, 1], but got "
                         f"{deltas.tolist()}.")
    batch, height, width = saliency.shape
    gt = check_boxes(boxes, batch, height, width)
    levels, order = threshold_levels(saliency, thresholds)
    steps = len(order)
    no_box = torch.tensor([len(g) == 0 for g in gt], device=saliency.device)
    undefined = torch.isnan(saliency).flatten(1).any(dim=1) | no_box
    levels = levels.masked_fill(undefined[:, None, None], 0)
    most = max([len(g) for g in gt] + [1])
    padded = torch.zeros(batch, most, 4, dtype=torch.float64, device=saliency.device)
    valid = torch.zeros(batch, most, dtype=torch.bool, device=saliency.device)
    for i, g in enumerate(gt):
        padded[i, :len(g)], valid[i, :len(g)] = g.to(saliency.device), True
    per_chunk = max(1, _CHUNK_PIXELS // (height * width))
    swept = torch.cat([_sweep_hits(levels[i:i + per_chunk], steps, padded[i:i + per_chunk], valid[i:i + per_chunk],
                                   deltas, connectivity) for i in range(0, batch, per_chunk)])
    values = torch.empty(swept.shape, dtype=torch.float64, device=saliency.device)
    values[:, :, order] = swept.double()  # back to the caller's threshold order
    values[undefined] = torch.nan
    if reduction == "none":
        return reduce_values(values, "none", nan_policy)
    return _box_acc_per_iou(values, nan_policy).mean()


def _check_masks(masks: Tensor, shape: torch.Size) -> Tensor:
    """``(B, H, W)`` bool (or 0/1) ground-truth masks of the maps' shape, as bool."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"Expected `masks` to be a torch.Tensor, but got {type(masks).__name__}.")
    if tuple(masks.shape) != tuple(shape):
        raise ValueError(f"Expected `masks` to have shape {tuple(shape)} (one mask per map), but got "
                         f"{tuple(masks.shape)}.")
    if masks.dtype != torch.bool and not bool(((masks == 0) | (masks == 1)).all()):
        raise ValueError("Expected `masks` to be bool or 0/1, but got other values.")
    return masks.bool()


def _pxap_compute(counts: Tensor, nan_policy: str = "omit") -> Tensor:
    """PxAP in % from ``(N, 2 + 2T)`` per-image counts ``[P, N, TP(t_1..t_T), FP(t_1..t_T)]`` (ascending ``t``):
    the counts are summed over the defined images and ``AP = sum_t (R_t - R_t') P_t`` over the thresholds
    in decreasing order (``t'`` the next higher one, ``R = 0`` above the highest), as wsolevaluation's
    ``MaskEvaluator.compute``. NaN without any positive pixel."""
    undefined = torch.isnan(counts).any(dim=1)
    if nan_policy == "propagate" and bool(undefined.any()):
        return torch.tensor(torch.nan, dtype=torch.float64)
    total = counts[~undefined].double().sum(dim=0)  # "zero" = "omit": an undefined image adds no pixel
    steps = (len(total) - 2) // 2
    tp, fp = total[2:2 + steps].flip(0), total[2 + steps:].flip(0)  # decreasing thresholds
    predicted = tp + fp
    precision = torch.where(predicted > 0, tp / predicted.where(predicted > 0, 1.0), 0.0)
    recall = tp / total[0]
    return (precision * torch.diff(recall, prepend=recall.new_zeros(1))).sum() * 100


def pxap(saliency: Tensor, masks: Tensor, thresholds: Optional[Sequence[float]] = None, reduction: str = "mean",
         nan_policy: str = "omit") -> Tensor:
    """PxAP, pixel average precision (Choe et al., CVPR 2020, Sec. 4.2; wsolevaluation's ``MaskEvaluator``).

    Every pixel of every image with a ground-truth mask is a sample: its score is the min-max normalised
    map (``(S - min) / (max - min)``; a constant map scores 0, wsolevaluation's ``normalize_scoremap``),
    its label the mask. Over thresholds ``t`` taken in decreasing order, with ``TP_t, FP_t`` the mask /
    background pixels scoring ``>= t`` over the whole dataset and ``P`` the mask pixels::

        precision_t = TP_t / (TP_t + FP_t),   recall_t = TP_t / P
        PxAP = 100 * sum over t of (recall_t - recall_t') * precision_t     (t' the next higher threshold)

    **Histogram thresholds**, as wsolevaluation: ``t`` in ``thresholds`` (default ``0.00:0.01:0.99``) and
    1.0 (its bin ``[1, 2)``), not every distinct score. This is exactly the average precision
    (``sklearn.metrics.average_precision_score``) of the scores rounded down to that grid; on the raw
    scores it differs by at most ``sum_b p_b / P * ((a + p_b) / (c + p_b) - (a + 1) / (c + 1 + n_b))``
    over the bins ``b`` holding ``p_b`` mask and ``n_b`` background pixels below ``c`` pixels (``a`` of
    the mask) of the higher bins -- the spread of the precision inside a bin (both are tested). Per image
    only counts are kept, so the dataset value adds up over batches and processes.

    Args:
        saliency: ``(B, H, W)`` maps of the ground-truth class in ``[0, 1]``.
        masks: ``(B, H, W)`` bool ground-truth masks (the union of the class's instance masks).
        thresholds: the curve's thresholds in ``[0, 1]`` besides 1.0; default ``0.00:0.01:0.99``.
        reduction: ``"none"``: ``(B, 2 + 2T)`` float64 counts ``[P, N, TP(t_1..t_T), FP(t_1..t_T)]`` per image
            (ascending ``t``, 1.0 included); ``"mean"``: PxAP in %.
        nan_policy: an image without mask pixels or with a NaN map is undefined (a NaN row): ``"omit"``
            (default) and ``"zero"`` leave its pixels out, ``"propagate"`` gives NaN.

    Examples:
        >>> saliency = torch.tensor([[[1.0, 0.5], [0.5, 0.0]]])
        >>> mask = torch.tensor([[[True, False], [True, False]]])
        >>> pxap(saliency, mask)  # t = 1: P 1, R 1/2; t = 0.5: P 2/3, R 1; t = 0: P 1/2, R 1
        tensor(83.3333, dtype=torch.float64)
        >>> pxap(saliency, mask, thresholds=[0.0, 0.5], reduction="none")  # P, N, TP at 0, .5, 1, FP at 0, .5, 1
        tensor([[2., 2., 2., 2., 1., 2., 1., 0.]], dtype=torch.float64)
    """
    check_saliency(saliency)
    check_choice(reduction, "reduction", ("mean", "none"))
    check_choice(nan_policy, "nan_policy", NAN_POLICIES)
    masks = _check_masks(masks, saliency.shape).to(saliency.device)
    edges = check_thresholds(thresholds, saliency.device)
    edges = torch.unique(torch.cat([edges, edges.new_ones(1)])).to(saliency.dtype)  # sorted, with 1.0
    batch, steps = len(saliency), len(edges)
    flat, positive = saliency.reshape(batch, -1), masks.reshape(batch, -1)
    low = torch.nan_to_num(flat, nan=0.0).amin(dim=1, keepdim=True)
    span = torch.nan_to_num(flat, nan=0.0).amax(dim=1, keepdim=True) - low
    score = torch.where(span > 0, (flat - low) / span.where(span > 0, 1.0), 0.0)
    level = torch.searchsorted(edges, score.contiguous(), right=True)  # thresholds <= score
    undefined = torch.isnan(flat).any(dim=1) | ~positive.any(dim=1)
    level = level.masked_fill(undefined[:, None], 0) + (steps + 1) * torch.arange(batch, device=level.device)[:, None]
    rows = []
    for kind in (positive, ~positive):
        hist = torch.bincount(level[kind], minlength=batch * (steps + 1)).view(batch, steps + 1)
        above = hist.flip(1).cumsum(dim=1).flip(1)  # above[:, l] = pixels at level >= l
        rows.append(above[:, 1:])  # >= t_j  <=>  level > j
    counts = torch.cat([positive.sum(dim=1, keepdim=True), (~positive).sum(dim=1, keepdim=True), *rows], dim=1)
    counts = counts.double().masked_fill(undefined[:, None], torch.nan)
    if reduction == "none":
        return reduce_values(counts, "none", nan_policy)
    return _pxap_compute(counts, nan_policy)
