"""Pointing game (TorchRay), its top-k "recall" variant and the energy pointing game as Metrics.

Thin per-sample holders over :mod:`benchmark.metrics.functional.pointing`, where the hit test,
the box rasterisation and the ties are documented.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import check_choice
from benchmark.metrics.functional.pointing import Objects, energy_pointing_game, pointing_game, pointing_game_recall
from benchmark.metrics.localization import count_clipped

__all__ = ["EnergyPointingGame", "PointingGame", "PointingGameRecall"]


def _objects_from(inputs: MetricInputs, name: str) -> Objects:
    """``inputs.target_boxes``, else ``inputs.extra["target_masks"]``."""
    if inputs.target_boxes is not None:
        return inputs.target_boxes
    if inputs.extra and inputs.extra.get("target_masks") is not None:
        return inputs.extra["target_masks"]
    raise ValueError(f"{name} needs `target_boxes` (or extra['target_masks']) in the MetricInputs, but got None.")


def _clipped(objects: Objects, saliency: Tensor) -> int:
    """Boxes outside the image (0 for masks)."""
    if isinstance(objects, Tensor) or any(isinstance(o, Tensor) and o.dtype == torch.bool for o in objects):
        return 0
    return count_clipped(objects, *saliency.shape[1:])


def _class_mean(hits: Tensor, classes: Tensor) -> Tensor:
    """Mean over the classes present of the per-class hit rate (float64; NaN when empty)."""
    if hits.numel() == 0:
        return torch.tensor(torch.nan, dtype=torch.float64)
    present, inverse = torch.unique(classes, return_inverse=True)
    sums = torch.zeros(len(present), dtype=torch.float64).index_add_(0, inverse, hits)
    counts = torch.zeros(len(present), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(hits))
    return (sums / counts).mean()


class PointingGame(PerSampleMetric):
    """Pointing game accuracy in % (Zhang et al., "Top-down Neural Attention by Excitation Backprop").

    Per (image, class) sample: a hit when the map's argmax is within ``tolerance`` px of the
    class's boxes or mask (:func:`pointing_game`). ``compute`` returns

    * ``"accuracy"``: the mean over classes of per-class hit rates (TorchRay's
      ``PointingGame.accuracy``; unlike TorchRay, classes never seen are left out instead of
      scoring 0);
    * ``"overall"``: the mean over samples;
    * ``"difficult_accuracy"``: ``"accuracy"`` on the samples flagged ``difficult`` (the
      EBP "difficult" subset: images where the class's objects are small or with distractors);
      NaN when there is none.

    Samples without object pixels are undefined (``n_invalid``, ``nan_policy``). Per sample it
    stores ``(hit, class, difficult)``.

    Args:
        tolerance: pixels (15).
        nan_policy: ``"omit"`` (default), ``"zero"`` (a miss) or ``"propagate"``.

    Examples:
        >>> saliency = torch.zeros(3, 8, 8)
        >>> saliency[:, 0, 0] = 1.0
        >>> near, far = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[7.0, 7.0, 8.0, 8.0]])
        >>> metric = PointingGame(tolerance=3)
        >>> metric.update(saliency, [near, far, near], classes=torch.tensor([0, 0, 1]),
        ...               difficult=torch.tensor([False, True, False]))
        >>> {name: round(value.item(), 2) for name, value in metric.compute().items()}
        {'accuracy': 75.0, 'overall': 66.67, 'difficult_accuracy': 0.0}
    """

    higher_is_better = True
    needs = frozenset({"boxes"})  # the target class's boxes (or masks): checked before any model is built

    def __init__(self, tolerance: float = 15, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.tolerance = tolerance
        self.add_state("n_clipped", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, saliency: Tensor, objects: Objects, classes: Tensor, difficult: Optional[Tensor] = None,
               indices: Optional[Tensor] = None) -> None:
        """Score a batch.

        Args:
            saliency: ``(B, H, W)`` maps of ``classes``.
            objects: per sample, ``(N_i, 4)`` xyxy boxes of the class, or ``(H, W)`` bool masks.
            classes: ``(B,)`` the explained classes.
            difficult: ``(B,)`` bool, the "difficult" flag of each (image, class); default all False.
            indices: ``(B,)`` dataset indices.
        """
        hits = pointing_game(saliency, objects, self.tolerance, reduction="none", nan_policy="propagate")
        batch = len(hits)
        if not isinstance(classes, Tensor) or tuple(classes.shape) != (batch,):
            got = tuple(classes.shape) if isinstance(classes, Tensor) else type(classes).__name__
            raise ValueError(f"Expected `classes` to have shape ({batch},), but got {got}.")
        if difficult is None:
            difficult = torch.zeros(batch, dtype=torch.bool)
        if not isinstance(difficult, Tensor) or tuple(difficult.shape) != (batch,):
            got = tuple(difficult.shape) if isinstance(difficult, Tensor) else type(difficult).__name__
            raise ValueError(f"Expected `difficult` to have shape ({batch},), but got {got}.")
        self.n_clipped += _clipped(objects, saliency)
        values = torch.stack([hits, classes.to(hits.device).double(), difficult.to(hits.device).double()], dim=1)
        self.store(values, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``saliency``, ``target_boxes`` (or ``extra["target_masks"]``), ``targets``, ``difficult``."""
        self.update(inputs.saliency, _objects_from(inputs, type(self).__name__), inputs.targets, inputs.difficult,
                    inputs.indices)

    def reduce(self, values: Tensor) -> Dict[str, Tensor]:
        """Class-mean, overall and difficult-subset accuracies in %, under ``nan_policy``."""
        hits, classes, difficult = values[:, 0], values[:, 1].long(), values[:, 2].bool()
        undefined = torch.isnan(hits)
        if self.nan_policy == "propagate" and undefined.any():
            nan = torch.tensor(torch.nan, dtype=torch.float64)
            return {"accuracy": nan, "overall": nan.clone(), "difficult_accuracy": nan.clone()}
        keep = ~undefined if self.nan_policy == "omit" else torch.ones_like(undefined)
        hits = torch.nan_to_num(hits, nan=0.0)
        hard = keep & difficult
        overall = hits[keep].mean() if keep.any() else torch.tensor(torch.nan, dtype=torch.float64)
        return {"accuracy": 100 * _class_mean(hits[keep], classes[keep]), "overall": 100 * overall,
                "difficult_accuracy": 100 * _class_mean(hits[hard], classes[hard])}


class PointingGameRecall(PerSampleMetric):
    """Top-k pointing "recall" in % of a Grad-CAM reproduction study (seed 000).

    Per image: the ground-truth classes (distinct ``box_labels``) that are among the ``top_k``
    predicted classes, not rejected (raw map maximum ``>= reject_threshold``), and whose map's
    argmax hits their boxes (:func:`pointing_game_recall`); ``recall = 100 * sum(recalled) /
    sum(ground-truth classes)`` over the dataset. Rejection needs the raw maxima of the maps
    (``raw_max``): the maps are min-max normalised, so without them nothing is rejected and
    ``n_without_raw_max`` counts such images. ``ExplainerModule`` passes, as
    ``extra["topk_raw_max"]``, each top-k map's raw maximum (before normalisation) divided by the
    largest of the image's k raw maxima: a class is rejected when its map is weaker than
    ``reject_threshold`` times the strongest candidate's.

    Args:
        tolerance: pointing tolerance in pixels (15).
        reject_threshold: threshold on the raw map maximum (0.5).
        top_k: candidates per image (5); the module must give at least that many maps.
        nan_policy: an image ``ExplainerModule`` marks undefined (a map that is not finite) is left out
            (``"omit"``, default) or makes the recall NaN (``"propagate"``).

    Examples:
        >>> maps = torch.zeros(1, 2, 8, 8)
        >>> maps[0, 0, 1, 1] = maps[0, 1, 6, 6] = 1.0
        >>> metric = PointingGameRecall(top_k=2)
        >>> metric.update(maps, torch.tensor([[3, 7]]), [torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 8.0, 8.0]])],
        ...               [torch.tensor([3, 7])], raw_max=torch.tensor([[0.9, 0.2]]))
        >>> metric.compute()
        tensor(50., dtype=torch.float64)
    """

    higher_is_better = True
    needs = frozenset({"topk", "boxes"})

    def __init__(self, tolerance: float = 15, reject_threshold: float = 0.5, top_k: int = 5,
                 nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=check_choice(nan_policy, "nan_policy", ("omit", "propagate")), **kwargs)
        self.tolerance = tolerance
        self.reject_threshold = reject_threshold
        self.top_k = top_k
        self.add_state("n_clipped", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("n_without_raw_max", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, topk_saliency: Tensor, topk_classes: Tensor, boxes: Sequence[Tensor],
               box_labels: Sequence[Tensor], raw_max: Optional[Tensor] = None,
               indices: Optional[Tensor] = None) -> None:
        """Score a batch: ``(B, K, H, W)`` maps of the ``(B, K)`` top classes, all boxes and their labels."""
        counts = pointing_game_recall(topk_saliency, topk_classes, boxes, box_labels, raw_max, self.tolerance,
                                      self.reject_threshold, self.top_k, reduction="none")
        self.n_clipped += count_clipped(boxes, *topk_saliency.shape[2:])
        if raw_max is None:
            self.n_without_raw_max += len(counts)
        self.store(counts, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``topk_saliency``, ``topk_classes``, ``boxes``, ``box_labels`` and ``extra["topk_raw_max"]``."""
        missing = [name for name in ("topk_saliency", "topk_classes", "boxes", "box_labels")
                   if getattr(inputs, name) is None]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {missing} in the MetricInputs, but they are None.")
        raw_max = (inputs.extra or {}).get("topk_raw_max")
        self.update(inputs.topk_saliency, inputs.topk_classes, inputs.boxes, inputs.box_labels, raw_max,
                    inputs.indices)

    def reduce(self, values: Tensor) -> Tensor:
        """``100 * sum(recalled) / sum(ground-truth classes)`` over the defined images (NaN without any
        ground-truth class); an undefined image (NaN row) is left out (``nan_policy="omit"``) or makes it NaN."""
        undefined = torch.isnan(values).any(dim=1)
        if self.nan_policy == "propagate" and undefined.any():
            return torch.tensor(torch.nan, dtype=torch.float64)
        total = values[~undefined].sum(dim=0)
        return torch.where(total[1] > 0, 100 * total[0] / total[1].clamp(min=1), torch.nan)


class EnergyPointingGame(PerSampleMetric):
    """Energy-based pointing game in % (Wang et al., Score-CAM, CVPRW 2020): map energy inside the boxes.

    Per sample ``100 * sum(map in the union of the boxes) / sum(map)`` (:func:`energy_pointing_game`),
    averaged over samples. All-zero maps and samples without boxes are undefined (``n_invalid``).

    Args:
        nan_policy: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Examples:
        >>> metric = EnergyPointingGame()
        >>> metric.update(torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]),
        ...               [torch.tensor([[0.0, 0.0, 2.0, 1.0]])] * 2)
        >>> metric.compute()  # (100 + 50) / 2
        tensor(75., dtype=torch.float64)
    """

    higher_is_better = True
    needs = frozenset({"boxes"})  # the target class's boxes (or masks): checked before any model is built

    def __init__(self, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.add_state("n_clipped", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, saliency: Tensor, objects: Objects, indices: Optional[Tensor] = None) -> None:
        """Score ``(B, H, W)`` maps against per-sample boxes (or ``(H, W)`` bool masks) of their class."""
        values = energy_pointing_game(saliency, objects, reduction="none", nan_policy="propagate")
        self.n_clipped += _clipped(objects, saliency)
        self.store(values, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``saliency`` and ``target_boxes`` (or ``extra["target_masks"]``)."""
        self.update(inputs.saliency, _objects_from(inputs, type(self).__name__), inputs.indices)
