"""Rank correlation of a map with the occlusion map (Selvaraju et al., "Grad-CAM", ICCV 2017, Sec. 5.3;
Table 3 of a Grad-CAM reproduction study: Nagy, Nimara, Qian, "Analysis and Evaluation of Grad-CAM
Explanations").

Both maps of the same image and class -- the explainer's ``[0, 1]`` map and the signed
occlusion map (the class score drop when a patch around each pixel is occluded, before any
ReLU or normalisation) -- are average-pooled to ``size x size`` cells
(:func:`torch.nn.functional.adaptive_avg_pool2d`, 14 x 14 by default), and the score is
Spearman's rank correlation of the cells::

    rho = Pearson(rank(a), rank(b))

with average ranks for ties (``scipy.stats.spearmanr``'s convention). Undefined (NaN) when
either pooled map is constant or holds NaN.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from benchmark.metrics.functional._common import check_saliency, reduce_values
from benchmark.metrics.functional.adcc import _pearson
from benchmark.metrics.functional.insertion_deletion import _check_positive_int

__all__ = ["average_ranks", "occlusion_correlation", "pool_maps", "spearman_correlation"]


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks along the last dimension, tied values sharing their average rank (float64).

    Examples:
        >>> average_ranks(torch.tensor([[0.5, 0.1, 0.5, 0.9]]))
        tensor([[2.5000, 1.0000, 2.5000, 4.0000]], dtype=torch.float64)
    """
    values = values.double()
    ordered = values.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, values.contiguous(), right=False)  # values strictly smaller
    upto = torch.searchsorted(ordered, values.contiguous(), right=True)  # values smaller or equal
    return (below + upto + 1).double() / 2


def spearman_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rho per row of ``(B, N)`` (or ``(B, ...)``) tensors; NaN for a constant or NaN row.

    Examples:
        >>> spearman_correlation(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[1.0, 5.0, 5.0, 9.0]]))
        tensor([0.9487], dtype=torch.float64)
    """
    a, b = a.flatten(1), b.flatten(1)
    undefined = torch.isnan(a).any(dim=1) | torch.isnan(b).any(dim=1)
    rho = _pearson(average_ranks(a), average_ranks(b))
    return torch.where(undefined, torch.nan, rho)


def pool_maps(maps: Tensor, size: int = 14) -> Tensor:
    """``(B, H, W)`` maps average-pooled to ``(B, size, size)`` (adaptive pooling, float64).

    Examples:
        >>> pool_maps(torch.arange(16.0).view(1, 4, 4), 2)
        tensor([[[ 2.5000,  4.5000],
                 [10.5000, 12.5000]]], dtype=torch.float64)
    """
    size = _check_positive_int(size, "size")
    if not isinstance(maps, Tensor) or maps.ndim != 3 or not maps.is_floating_point():
        got = f"{tuple(maps.shape)} {maps.dtype}" if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"Expected the maps to have shape (B, H, W) with a floating dtype, but got {got}.")
    return F.adaptive_avg_pool2d(maps.double().unsqueeze(1), size).squeeze(1)


def occlusion_correlation(saliency: Tensor, occlusion: Tensor, size: int = 14, reduction: str = "mean",
                          nan_policy: str = "omit") -> Tensor:
    """Spearman correlation of the pooled map and pooled signed occlusion map (Grad-CAM paper, Sec. 5.3).

    Args:
        saliency: ``(B, H, W)`` maps in ``[0, 1]``.
        occlusion: ``(B, H', W')`` signed occlusion maps of the same classes (any real values;
            already pooled ``(B, size, size)`` maps are left as they are by the pooling).
        size: the pooled side (14).
        reduction: ``"mean"`` or ``"none"`` (per sample, float64, in ``[-1, 1]``).
        nan_policy: constant or NaN pooled maps: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Examples:
        >>> saliency = torch.tensor([[[0.0, 0.2], [0.6, 1.0]]])
        >>> occlusion = torch.tensor([[[-3.0, 0.5], [0.5, 7.0]]])  # ranks 1, 2.5, 2.5, 4
        >>> occlusion_correlation(saliency, occlusion, size=2)
        tensor(0.9487, dtype=torch.float64)
    """
    check_saliency(saliency)
    if not isinstance(occlusion, Tensor):
        raise TypeError(f"Expected `occlusion` to be a torch.Tensor, but got {type(occlusion).__name__}.")
    if occlusion.ndim != 3 or len(occlusion) != len(saliency):
        raise ValueError(f"Expected `occlusion` to have shape ({len(saliency)}, H, W), but got "
                         f"{tuple(occlusion.shape)}.")
    rho = spearman_correlation(pool_maps(saliency, size), pool_maps(occlusion.to(saliency.device), size))
    return reduce_values(rho, reduction, nan_policy)
