"""Localization error (Grad-CAM / ILSVRC protocol) and MaxBoxAcc (wsolevaluation) as Metrics.

Thin per-sample holders over :mod:`benchmark.metrics.functional.localization`; the maths and
the conventions (thresholding, components, boxes, IoU) are documented there.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import check_boxes, check_choice, check_same_batch, reduce_values
from benchmark.metrics.functional.localization import localization_box, localization_hit, max_box_acc

__all__ = ["LocalizationError", "MaxBoxAcc"]


def count_clipped(boxes: Sequence[Tensor], height: int, width: int) -> int:
    """Number of boxes that reach outside a ``height x width`` image (clipped by ``check_boxes``).

    Examples:
        >>> count_clipped([torch.tensor([[-1.0, 0.0, 4.0, 4.0], [0.0, 0.0, 8.0, 8.0]])], 8, 8)
        1
    """
    checked = check_boxes(boxes, len(boxes), height, width)
    return sum(int((torch.as_tensor(b, dtype=torch.float64, device=c.device).reshape(-1, 4) != c).any(dim=1).sum())
               for b, c in zip(boxes, checked))


def _class_boxes(boxes: Sequence[Tensor], box_labels: Sequence[Tensor], labels: Tensor) -> list:
    """Per sample, the boxes whose label is that sample's ``labels`` entry."""
    if not isinstance(box_labels, (list, tuple)) or len(box_labels) != len(labels):
        got = len(box_labels) if isinstance(box_labels, (list, tuple)) else type(box_labels).__name__
        raise ValueError(f"Expected `box_labels` to be a list of {len(labels)} (N_i,) tensors, but got {got}.")
    out = []
    for i, (box, box_label) in enumerate(zip(boxes, box_labels)):
        box_label = torch.as_tensor(box_label).reshape(-1)
        if len(box_label) != len(box):
            raise ValueError(f"Expected `box_labels[{i}]` to have shape ({len(box)},), but got "
                             f"{tuple(box_label.shape)}.")
        out.append(box[(box_label.to(labels.device) == labels[i]).to(box.device)])
    return out


class LocalizationError(PerSampleMetric):
    """Top-k localization error in % (Selvaraju et al., Grad-CAM, ICCV 2017, Table 1; ILSVRC CLS-LOC).

    For the ``k`` best predicted classes of an image with ground-truth class ``y``: the image is
    correctly localised at top-k when one of those classes equals ``y`` and the box of that
    class's map (:func:`localization_box`, 15 % of the max, largest component) hits a
    ground-truth box of ``y`` (:func:`localization_hit`). ``error_k = 100 * (1 - mean(correct_k))``.
    Only the map of the ground-truth class can make an image correct, so only that one is
    localised. Images with no box of ``y`` are undefined (counted in ``n_invalid``;
    ``nan_policy="omit"`` leaves them out, ``"zero"`` counts them as errors). Ground-truth boxes
    reaching outside the image are clipped and counted in ``n_clipped``.

    Args:
        top_k: the ``k`` values reported, e.g. ``(1, 5)``; the module must give at least ``max(top_k)`` maps.
        threshold: binarisation threshold, fraction of each map's max (0.15).
        rule: ``"iou"`` (IoU >= 0.5) or ``"size_aware"`` (the ILSVRC detection rule).
        connectivity: 4 or 8.
        nan_policy: ``"omit"``, ``"zero"`` or ``"propagate"``.

    Examples:
        >>> maps = torch.zeros(2, 2, 8, 8)
        >>> maps[:, 1, 2:6, 2:6] = 1.0  # the second-best class's map covers the object
        >>> metric = LocalizationError(top_k=(1, 2))
        >>> metric.update(maps, torch.tensor([[0, 3], [3, 0]]), torch.tensor([3, 3]),
        ...               [torch.tensor([[2.0, 2.0, 6.0, 6.0]])] * 2, [torch.tensor([3])] * 2)
        >>> metric.compute()  # image 1: right class but empty map; image 0: class 3 second
        {'top1': tensor(100., dtype=torch.float64), 'top2': tensor(50., dtype=torch.float64)}
    """

    higher_is_better = False
    needs = frozenset({"topk", "boxes"})

    def __init__(self, top_k: Sequence[int] = (1, 5), threshold: float = 0.15, rule: str = "iou",
                 connectivity: int = 4, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        top_k = tuple(top_k)
        if not top_k or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in top_k):
            raise ValueError(f"Expected `top_k` to be a non-empty sequence of positive ints, but got {top_k!r}.")
        self.top_k: Tuple[int, ...] = top_k
        self.threshold = threshold
        self.rule = check_choice(rule, "rule", ("iou", "size_aware"))
        self.connectivity = connectivity
        self.add_state("n_clipped", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, topk_saliency: Tensor, topk_classes: Tensor, labels: Tensor, boxes: Sequence[Tensor],
               box_labels: Sequence[Tensor], indices: Optional[Tensor] = None) -> None:
        """Score a batch.

        Args:
            topk_saliency: ``(B, K, H, W)`` maps of the ``K >= max(top_k)`` best classes.
            topk_classes: ``(B, K)`` those classes, best first.
            labels: ``(B,)`` ground-truth classes.
            boxes: per sample, ``(N_i, 4)`` xyxy boxes of all objects.
            box_labels: per sample, ``(N_i,)`` their classes (only boxes of ``labels`` count).
            indices: ``(B,)`` dataset indices.
        """
        if not isinstance(topk_saliency, Tensor) or topk_saliency.ndim != 4 or topk_saliency.shape[1] < max(self.top_k):
            got = tuple(topk_saliency.shape) if isinstance(topk_saliency, Tensor) else type(topk_saliency).__name__
            raise ValueError(f"Expected `topk_saliency` to have shape (B, K, H, W) with K >= {max(self.top_k)}, "
                             f"but got {got}.")
        batch, k, height, width = topk_saliency.shape
        if not isinstance(topk_classes, Tensor) or tuple(topk_classes.shape) != (batch, k):
            got = tuple(topk_classes.shape) if isinstance(topk_classes, Tensor) else type(topk_classes).__name__
            raise ValueError(f"Expected `topk_classes` to have shape ({batch}, {k}), but got {got}.")
        if not isinstance(labels, Tensor) or labels.ndim != 1:
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"Expected `labels` to have shape ({batch},), but got {got}.")
        check_same_batch(topk_saliency=topk_saliency, labels=labels)
        labels = labels.to(topk_classes.device)
        gt = _class_boxes(check_boxes(boxes, batch, height, width), box_labels, labels)
        self.n_clipped += count_clipped(boxes, height, width)
        match = topk_classes[:, :max(self.top_k)] == labels[:, None]
        found = match.any(dim=1)
        position = match.int().argmax(dim=1)  # where the ground-truth class is among the top classes
        rows = found.nonzero().squeeze(1)
        pred = torch.full((batch, 4), torch.nan, dtype=torch.float64, device=topk_saliency.device)
        if len(rows):
            maps = topk_saliency[rows.to(topk_saliency.device), position[rows].to(topk_saliency.device)]
            pred[rows.to(pred.device)] = localization_box(maps, self.threshold, self.connectivity).double()
        hit = localization_hit(pred, gt, self.rule, reduction="none", nan_policy="propagate",
                               image_size=(height, width))
        found, position = found.to(hit.device), position.to(hit.device)
        correct = [torch.where(torch.isnan(hit), torch.nan, (found & (position < k_) & (hit == 1)).double())
                   for k_ in self.top_k]
        self.store(torch.stack(correct, dim=1), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use the module's ``topk_saliency``, ``topk_classes``, ``labels``, ``boxes``, ``box_labels``."""
        missing = [name for name in ("topk_saliency", "topk_classes", "labels", "boxes", "box_labels")
                   if getattr(inputs, name) is None]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {missing} in the MetricInputs, but they are None.")
        self.update(inputs.topk_saliency, inputs.topk_classes, inputs.labels, inputs.boxes, inputs.box_labels,
                    inputs.indices)

    def reduce(self, values: Tensor) -> Dict[str, Tensor]:
        """``{"top<k>": 100 * (1 - mean correct)}`` under ``nan_policy``."""
        accuracy = reduce_values(values, "mean", self.nan_policy)
        return {f"top{k}": 100 * (1 - accuracy[i]) for i, k in enumerate(self.top_k)}


class MaxBoxAcc(PerSampleMetric):
    """MaxBoxAcc in % (Choe et al., CVPR 2020; wsolevaluation V1), with the maps of the ground-truth class.

    Stores, per image, the ``(T,)`` 1/0 box hits at each threshold of the sweep
    (:func:`max_box_acc`); ``compute = 100 * max_t mean_images hit[t]``. Images without boxes are
    undefined (``n_invalid``, ``nan_policy``). In the module the explained targets are the labels,
    so ``saliency`` and ``target_boxes`` are the ground-truth class's.

    Args:
        thresholds: the sweep, default ``0.00:0.01:0.99``.
        iou_threshold: IoU needed (0.5).
        connectivity: 4 or 8.
        nan_policy: ``"omit"``, ``"zero"`` or ``"propagate"``.

    Examples:
        >>> saliency = torch.tensor([[[1.0, 0.3, 0.0], [0.3, 0.3, 0.0], [0.0, 0.0, 0.0]]])
        >>> metric = MaxBoxAcc(thresholds=[0.2, 0.5])
        >>> metric.update(saliency, [torch.tensor([[0.0, 0.0, 1.0, 1.0]])])
        >>> metric.update(saliency, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])])
        >>> metric.compute()  # each threshold localises one of the two images
        tensor(50., dtype=torch.float64)
    """

    higher_is_better = True
    needs = frozenset({"boxes"})

    def __init__(self, thresholds: Optional[Sequence[float]] = None, iou_threshold: float = 0.5,
                 connectivity: int = 4, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        self.iou_threshold = iou_threshold
        self.connectivity = connectivity
        self.add_state("n_clipped", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, saliency: Tensor, target_boxes: Sequence[Tensor], indices: Optional[Tensor] = None) -> None:
        """Score a batch of ``(B, H, W)`` maps against per-sample ``(N_i, 4)`` boxes of their class."""
        values = max_box_acc(saliency, target_boxes, self.thresholds, self.iou_threshold, self.connectivity,
                             reduction="none", nan_policy="propagate")
        self.n_clipped += count_clipped(target_boxes, *saliency.shape[1:])
        self.store(values, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use the module's ``saliency`` and ``target_boxes``."""
        if inputs.target_boxes is None:
            raise ValueError(f"{type(self).__name__} needs `target_boxes` in the MetricInputs, but they are None.")
        self.update(inputs.saliency, inputs.target_boxes, inputs.indices)

    def reduce(self, values: Tensor) -> Tensor:
        """``100 * max over thresholds of the mean hit`` under ``nan_policy``."""
        return reduce_values(values, "mean", self.nan_policy).max() * 100
