"""Box ratio (Nagy et al., "Analysis and Evaluation of Grad-CAM Explanations", Table 5) as a Metric.

The maths lives in :mod:`benchmark.metrics.functional.box_ratio`.
"""
from __future__ import annotations

from typing import Optional

import torch  # noqa: F401  (doctest namespace)
from torch import Tensor

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional.box_ratio import box_ratio, check_threshold
from benchmark.metrics.functional.pointing import Objects
from benchmark.metrics.pointing import _objects_from

__all__ = ["BoxRatio"]


class BoxRatio(PerSampleMetric):
    """Box ratio %: share of the pixels above ``threshold`` inside the target class's boxes, averaged over samples.

    Per sample ``100 * |{S > t} & O| / |{S > t}|`` (:func:`~benchmark.metrics.functional.box_ratio.box_ratio`),
    ``O`` the union of the boxes of the explained class (or its mask). Samples with no pixel above
    ``t`` or without an object pixel are undefined (``n_invalid``, ``nan_policy``).

    Args:
        threshold: ``t`` in ``[0, 1)`` on the ``[0, 1]`` map (0.85).
        nan_policy: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Examples:
        >>> maps = torch.tensor([[[0.9, 0.0], [0.0, 0.9]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> metric = BoxRatio()
        >>> metric.update(maps, [torch.tensor([[0.0, 0.0, 1.0, 1.0]])] * 2, indices=torch.tensor([0, 1]))
        >>> metric.compute(), int(metric.n_invalid)  # 1 of 2 hot pixels in the box; an all-zero map
        (tensor(50., dtype=torch.float64), 1)
    """

    higher_is_better = True
    in_default_run = False  # a reproduction-study metric: runs when named
    needs = frozenset({"boxes"})

    def __init__(self, threshold: float = 0.85, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.threshold = check_threshold(threshold)

    def update(self, saliency: Tensor, objects: Objects, indices: Optional[Tensor] = None) -> None:
        """Score ``(B, H, W)`` maps against per-sample boxes (or ``(H, W)`` bool masks) of their class."""
        self.store(box_ratio(saliency, objects, self.threshold, reduction="none", nan_policy="propagate"), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``saliency`` and ``target_boxes`` (or ``extra["target_masks"]``)."""
        self.update(inputs.saliency, _objects_from(inputs, type(self).__name__), inputs.indices)
