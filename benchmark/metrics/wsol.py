"""MaxBoxAccV2 and PxAP (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
CVPR 2020) as Metrics.

Thin per-sample holders over :mod:`benchmark.metrics.functional.wsol`, where the definitions and their
differences from wsolevaluation are documented. Both are dataset-level values, so, as
:class:`~benchmark.metrics.localization.MaxBoxAcc`, each image stores statistics that add up over
images (hits per threshold; pixel counts per threshold) and ``compute`` reduces them in dataset-index
order. Opt-in (``in_default_run = False``): name them, e.g. ``--metrics+=[max_box_acc_v2, pxap]``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional.wsol import IOU_THRESHOLDS, _box_acc_per_iou, _pxap_compute, max_box_acc_v2, pxap
from benchmark.metrics.localization import count_clipped

__all__ = ["MaxBoxAccV2", "PxAP", "target_masks"]


class MaxBoxAccV2(PerSampleMetric):
    """MaxBoxAccV2 in % (Choe et al., CVPR 2020): any component's box, mean over IoU 30/50/70 % of the best threshold.

    Stores, per image, the ``D x T`` 1/0 hits at each IoU and map threshold (:func:`max_box_acc_v2`,
    flattened IoU-major); ``compute = mean_delta 100 * max_t mean_images hit[delta, t]``; ``extra_values``
    gives each IoU's MaxBoxAcc (``iou30``, ``iou50``, ``iou70``). Images without boxes or with a NaN map
    are undefined (``n_invalid``, ``nan_policy``). In the module the explained targets are the labels,
    so ``saliency`` and ``target_boxes`` are the ground-truth class's.

    Args:
        thresholds: the map thresholds, default ``0.00:0.01:0.99``.
        iou_thresholds: the IoU thresholds, default ``(0.3, 0.5, 0.7)``.
        connectivity: 4 or 8.
        nan_policy: ``"omit"``, ``"zero"`` or ``"propagate"``.

    Examples:
        >>> blobs = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.6], [0.0, 0.0, 0.0, 0.0]]])
        >>> metric = MaxBoxAccV2(thresholds=[0.5])
        >>> metric.update(blobs, [torch.tensor([[3.0, 1.0, 4.0, 2.0]])])  # the small blob's box: IoU 1
        >>> metric.update(blobs, [torch.tensor([[0.0, 0.0, 2.0, 3.0]])])  # the large blob's: IoU 4/6
        >>> metric.compute(), metric.extra_values()["iou70"]
        (tensor(83.3333, dtype=torch.float64), tensor(50., dtype=torch.float64))
    """

    higher_is_better = True
    needs = frozenset({"boxes"})
    in_default_run = False

    def __init__(self, thresholds: Optional[Sequence[float]] = None, iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
                 connectivity: int = 4, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        self.iou_thresholds = [float(t) for t in iou_thresholds]
        self.connectivity = connectivity
        self.add_state("n_clipped", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, saliency: Tensor, target_boxes: Sequence[Tensor], indices: Optional[Tensor] = None) -> None:
        """Score a batch of ``(B, H, W)`` maps against per-sample ``(N_i, 4)`` boxes of their class."""
        values = max_box_acc_v2(saliency, target_boxes, self.thresholds, self.iou_thresholds, self.connectivity,
                                reduction="none", nan_policy="propagate")
        self.n_clipped += count_clipped(target_boxes, *saliency.shape[1:])
        self.store(values.flatten(1), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use the module's ``saliency`` and ``target_boxes``."""
        if inputs.target_boxes is None:
            raise ValueError(f"{type(self).__name__} needs `target_boxes` in the MetricInputs, but they are None.")
        self.update(inputs.saliency, inputs.target_boxes, inputs.indices)

    def _per_iou(self, values: Tensor) -> Tensor:
        return _box_acc_per_iou(values.view(len(values), len(self.iou_thresholds), -1), self.nan_policy)

    def reduce(self, values: Tensor) -> Tensor:
        """The mean over IoU thresholds of ``100 * max over map thresholds of the mean hit``."""
        return self._per_iou(values).mean()

    def extra_reduce(self, values: Tensor) -> Dict[str, Tensor]:
        """``{"iou30": MaxBoxAcc at IoU >= 0.3, ...}``, one per IoU threshold."""
        return {f"iou{round(100 * t)}": value for t, value in zip(self.iou_thresholds, self._per_iou(values))}


def target_masks(inputs: MetricInputs) -> Tensor:
    """``(B, H, W)`` bool: per sample, the union of its instance ``masks`` (``inputs.extra["masks"]``) whose box
    label is the explained target (all of them without ``box_labels``); all False without any.

    Examples:
        >>> masks = [torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 1]]], dtype=torch.bool)]
        >>> inputs = MetricInputs(torch.zeros(1, 3, 2, 2), torch.tensor([7]), torch.tensor([0]), torch.zeros(1, 2, 2),
        ...                       torch.ones(1), torch.ones(1, 9), box_labels=[torch.tensor([7, 3])],
        ...                       extra={"masks": masks})
        >>> target_masks(inputs).int()
        tensor([[[1, 0],
                 [0, 0]]], dtype=torch.int32)
    """
    masks = (inputs.extra or {}).get("masks")
    if masks is None:
        raise ValueError("PxAP needs the ground-truth `masks` of the batch (MetricInputs.extra['masks']), but got "
                         "none; use a datamodule that provides masks (e.g. synthetic).")
    batch, height, width = inputs.saliency.shape
    if not isinstance(masks, (list, tuple)) or len(masks) != batch:
        got = len(masks) if isinstance(masks, (list, tuple)) else type(masks).__name__
        raise ValueError(f"Expected `masks` to be a list of {batch} (N_i, H, W) bool tensors, but got {got}.")
    out = []
    for i, mask in enumerate(masks):
        mask = torch.as_tensor(mask, device=inputs.saliency.device).bool()
        mask = mask.reshape(-1, *mask.shape[-2:]) if mask.ndim >= 2 else mask
        if mask.ndim != 3 or tuple(mask.shape[1:]) != (height, width):
            raise ValueError(f"Expected `masks[{i}]` to have shape (N, {height}, {width}), but got "
                             f"{tuple(mask.shape)}.")
        if inputs.box_labels is not None:
            labels = torch.as_tensor(inputs.box_labels[i], device=mask.device).reshape(-1)
            if len(labels) != len(mask):
                raise ValueError(f"Expected `box_labels[{i}]` to have one label per mask ({len(mask)}), but got "
                                 f"{len(labels)}.")
            mask = mask[labels == inputs.targets[i].to(mask.device)]
        out.append(mask.any(dim=0))
    return torch.stack(out)


class PxAP(PerSampleMetric):
    """PxAP in % (Choe et al., CVPR 2020): average precision of the map's pixels against the mask, over the dataset.

    Stores, per image, the pixel counts ``[P, N, TP(t), FP(t)]`` of the curve's thresholds
    (:func:`pxap`, histogram thresholds ``0.00:0.01:0.99`` and 1.0 as wsolevaluation's
    ``MaskEvaluator``); ``compute`` sums them over the images and integrates the precision-recall
    curve. Images without mask pixels of the target class or with a NaN map are undefined
    (``n_invalid``; ``"omit"`` and ``"zero"`` leave their pixels out, ``"propagate"`` gives NaN). Needs
    ``masks``: a run on data without them is refused before any model is built.

    Args:
        thresholds: the curve's thresholds besides 1.0, default ``0.00:0.01:0.99``.
        nan_policy: ``"omit"``, ``"zero"`` or ``"propagate"``.

    Examples:
        >>> metric = PxAP()
        >>> metric.update(torch.tensor([[[1.0, 0.5], [0.5, 0.0]]]), torch.tensor([[[True, False], [True, False]]]))
        >>> metric.update(torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[False, False]]]))  # no mask: undefined
        >>> metric.compute(), int(metric.n_invalid)
        (tensor(83.3333, dtype=torch.float64), 1)
    """

    higher_is_better = True
    needs = frozenset({"masks"})
    in_default_run = False

    def __init__(self, thresholds: Optional[Sequence[float]] = None, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]

    def update(self, saliency: Tensor, masks: Tensor, indices: Optional[Tensor] = None) -> None:
        """Count a batch of ``(B, H, W)`` maps against ``(B, H, W)`` bool masks of their class."""
        self.store(pxap(saliency, masks, self.thresholds, reduction="none", nan_policy="propagate"), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use the module's ``saliency`` and the union of the target class's instance masks (:func:`target_masks`)."""
        self.update(inputs.saliency, target_masks(inputs), inputs.indices)

    def reduce(self, values: Tensor) -> Tensor:
        """PxAP of the summed counts of the defined images."""
        return _pxap_compute(values, self.nan_policy)
