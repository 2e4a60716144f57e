"""Box ratio of a Grad-CAM reproduction study (Nagy, Nimara, Qian, "Analysis and Evaluation of Grad-CAM
Explanations", Table 5): how much of a map's hot region lies on the object.

Per sample, with ``S`` the ``[0, 1]`` map, ``t`` the threshold and ``O`` the union of the
target class's boxes (rasterised as in :func:`~benchmark.metrics.functional.pointing.boxes_to_mask`:
a box covers the pixels whose unit square it overlaps)::

    box_ratio = 100 * |{p : S_p > t} & O| / |{p : S_p > t}|

The comparison is strict (a pixel equal to ``t`` is not hot); NaN pixels are never hot. A
sample is undefined (NaN, see ``nan_policy``) when no pixel exceeds ``t`` or it has no object pixel.
"""
from __future__ import annotations

import torch
from torch import Tensor

from benchmark.metrics.functional._common import check_saliency, reduce_values
from benchmark.metrics.functional.pointing import Objects, _object_masks

__all__ = ["box_ratio", "check_threshold"]


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """A number in ``[0, 1)`` (a map threshold); ``TypeError`` / ``ValueError`` otherwise.

    Examples:
        >>> check_threshold(0.85)
        0.85
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"Expected `{name}` to be a float in [0, 1), but got {type(threshold).__name__}.")
    if not 0 <= threshold < 1:
        raise ValueError(f"Expected `{name}` in [0, 1), but got {threshold}.")
    return float(threshold)


def box_ratio(saliency: Tensor, objects: Objects, threshold: float = 0.85, reduction: str = "mean",
              nan_policy: str = "omit") -> Tensor:
    """Share (%) of the pixels above ``threshold`` that fall inside the objects (Nagy et al., Table 5).

    ``100 * |{S > t} & O| / |{S > t}|`` per sample (see the module docstring).

    Args:
        saliency: ``(B, H, W)`` maps in ``[0, 1]``.
        objects: per sample, ``(N_i, 4)`` xyxy pixel boxes of the class (their union is the object),
            or ``(H, W)`` bool masks (a list, or one ``(B, H, W)`` tensor).
        threshold: ``t`` in ``[0, 1)`` (0.85).
        reduction: ``"mean"`` or ``"none"`` (per sample, float64).
        nan_policy: undefined samples (nothing above ``t``, or no object pixel): ``"omit"``
            (default), ``"zero"`` or ``"propagate"``.

    Examples:
        >>> maps = torch.tensor([[[0.9, 0.9, 0.0, 1.0],
        ...                       [0.9, 0.2, 0.0, 0.0],
        ...                       [0.0, 0.0, 0.0, 0.0],
        ...                       [0.0, 0.0, 0.0, 0.86]]])
        >>> box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])  # the top-left 2 x 2 pixels
        >>> box_ratio(maps, [box], reduction="none")  # 3 of the 5 hot pixels are in the box
        tensor([60.], dtype=torch.float64)
        >>> box_ratio(maps, [box], threshold=0.95)  # the only hot pixel (1.0) is outside
        tensor(0., dtype=torch.float64)
    """
    check_saliency(saliency)
    threshold = check_threshold(threshold)
    batch, height, width = saliency.shape
    masks = _object_masks(objects, batch, height, width, saliency.device)
    hot = saliency > threshold  # NaN > t is False
    n_hot = hot.flatten(1).sum(dim=1).double()
    inside = (hot & masks).flatten(1).sum(dim=1).double()
    defined = (n_hot > 0) & masks.flatten(1).any(dim=1)
    values = torch.where(defined, 100 * inside / n_hot.clamp(min=1), torch.nan)
    return reduce_values(values, reduction, nan_policy)
