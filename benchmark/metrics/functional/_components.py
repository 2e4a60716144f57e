"""Connected components over a sweep of thresholds, shared by MaxBoxAcc (V1, the largest component's box) and
MaxBoxAccV2 (every component's box): one compiled pass adds the pixels to a union-find forest in decreasing order
of their level (:func:`benchmark.metrics.functional._component_kernel.sweep`), instead of one connected-component
labelling per threshold. Tensors on any device; the sweep runs on the CPU.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["component_events", "largest_component_boxes"]


def _sweep(levels: Tensor, steps: int, connectivity: int) -> Tuple[Tensor, Tensor, Tensor]:
    from benchmark.metrics.functional._component_kernel import sweep  # numba: loaded on first use

    if connectivity not in (4, 8):
        raise ValueError(f"Expected `connectivity` to be 4 or 8, but got {connectivity}.")
    array = np.ascontiguousarray(levels.detach().cpu().numpy(), dtype=np.int64)
    return tuple(torch.from_numpy(out).to(levels.device) for out in sweep(array, int(steps), connectivity == 8))


def largest_component_boxes(levels: Tensor, steps: int, connectivity: int = 4) -> Tensor:
    """``(B, steps, 4)`` float64 xyxy box of the largest component of ``levels > k`` for each ``k < steps`` (NaN
    when there is none).

    ``levels[b, y, x]`` is how many of the ascending thresholds the pixel exceeds (it is foreground at threshold
    ``k`` iff ``k < level``). Equal sizes go to the component whose first pixel comes first in raster order -- the
    smallest label of :func:`~benchmark.metrics.functional.localization.connected_components`, the rule of the
    per-threshold labelling, so the boxes are the same.

    Examples:
        >>> levels = torch.tensor([[[2, 0, 1], [2, 0, 1], [0, 0, 1]]])  # a 2-pixel and a 3-pixel column
        >>> largest_component_boxes(levels, 2)
        tensor([[[2., 0., 3., 3.],
                 [0., 0., 1., 2.]]], dtype=torch.float64)
    """
    return _sweep(levels, steps, connectivity)[0]


def component_events(levels: Tensor, steps: int, connectivity: int = 4) -> Tuple[Tensor, Tensor]:
    """The history of every component of ``levels > k`` over the sweep from ``k = steps - 1`` down to 0.

    Returns ``(events, deaths)``: ``(E, 7)`` int64 rows ``[level, image, root, x1, y1, x2, y2]``, one per component
    that appears or grows at threshold ``level - 1`` (``root`` names it within its image until it merges; the box
    is its xyxy box from then on), in sweep order; ``(K, 3)`` rows ``[level, image, root]``: a named component
    merged into another at ``level`` (that one has an event there).

    Examples:
        >>> events, deaths = component_events(torch.tensor([[[2, 0, 2], [1, 1, 1]]]), 2)
        >>> events.tolist()  # two 1-pixel components at level 2, joined by the bottom row at level 1
        [[2, 0, 0, 0, 0, 1, 1], [2, 0, 2, 2, 0, 3, 1], [1, 0, 3, 0, 0, 3, 2]]
        >>> deaths.tolist()  # both merged into the component named by pixel 3
        [[1, 0, 0], [1, 0, 2]]
    """
    return _sweep(levels, steps, connectivity)[1:]
