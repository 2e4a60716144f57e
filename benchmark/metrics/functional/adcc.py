"""The ADCC family (Poppi et al., CVPRW 2021) and its parts, Average Drop / Increase (Grad-CAM++).

With ``Y`` and ``O`` the softmax probabilities of class c on the image ``x`` and on the
explanation map ``E = x * CAM`` (normalised input space), per image:

* Average Drop: ``max(0, Y - O) / Y * 100``; undefined for ``Y = 0``;
* Average Increase: ``1[O > Y] * 100``;
* Coherency: ``(1 + Pearson(CAM(x), CAM(E))) / 2 * 100``; undefined when a map is constant
  (default ``nan_policy="zero"``: a finite constant map scores 0, as the authors' code does; a
  map that is not finite stays undefined and is left out of the mean);
* Complexity: ``mean(CAM) * 100`` (the L1 norm per pixel of the [0, 1] map);
* ADCC (Eq. 5): ``3 / (1/Coherency + 1/(1 - Complexity) + 1/(1 - AverageDrop))`` on fractions,
  reported in %; 0 when a term is 0. The released ``adcc.py`` forgot the ``1 -``; this follows
  the paper.

Each function returns the batch mean (``reduction="mean"``) or per-sample values ("none").
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from benchmark.metrics.functional._common import check_probs, check_saliency, check_same_batch, reduce_values

__all__ = ["adcc", "average_drop", "average_increase", "coherency", "complexity"]


def _drop_update(full_probs: Tensor, expl_probs: Tensor) -> Tensor:
    check_probs(full_probs, "full_probs")
    check_probs(expl_probs, "expl_probs", len(full_probs))
    y, o = full_probs.double(), expl_probs.double()
    return torch.where(y > 0, (y - o).clamp_min(0) / y.where(y > 0, 1.0) * 100, torch.nan)


def average_drop(full_probs: Tensor, expl_probs: Tensor, reduction: str = "mean", nan_policy: str = "omit") -> Tensor:
    """Average Drop %: ``max(0, Y - O) / Y * 100`` (Chattopadhyay et al. 2018, Poppi et al. 2021).

    Args:
        full_probs: ``(B,)`` probability ``Y`` of the explained class on the image.
        expl_probs: ``(B,)`` probability ``O`` of that class on ``x * CAM``.
        reduction: ``"mean"`` or ``"none"``.
        nan_policy: samples with ``Y = 0`` are undefined: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> average_drop(torch.tensor([0.8, 0.5]), torch.tensor([0.2, 0.6]), reduction="none")
        tensor([75.,  0.], dtype=torch.float64)
    """
    return reduce_values(_drop_update(full_probs, expl_probs), reduction, nan_policy)


def average_increase(full_probs: Tensor, expl_probs: Tensor, reduction: str = "mean",
                     nan_policy: str = "omit") -> Tensor:
    """Average Increase in confidence %: ``1[O > Y] * 100`` (Chattopadhyay et al. 2018).

    Examples:
        >>> average_increase(torch.tensor([0.8, 0.5]), torch.tensor([0.2, 0.6]))
        tensor(50., dtype=torch.float64)
    """
    check_probs(full_probs, "full_probs")
    check_probs(expl_probs, "expl_probs", len(full_probs))
    y, o = full_probs.double(), expl_probs.double()
    values = torch.where(torch.isnan(y) | torch.isnan(o), torch.nan, (o > y).double() * 100)
    return reduce_values(values, reduction, nan_policy)


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    return torch.where(denominator > 0, (a * b).sum(dim=1) / denominator.where(denominator > 0, 1.0), torch.nan)


def _coherency_update(saliency: Tensor, expl_saliency: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-sample Coherency % (NaN where Pearson is undefined) and whether both maps are finite."""
    check_saliency(saliency)
    check_saliency(expl_saliency, "expl_saliency")
    check_same_batch(saliency=saliency, expl_saliency=expl_saliency)
    if saliency.shape != expl_saliency.shape:
        raise ValueError(f"Expected `saliency` and `expl_saliency` to have the same shape, but got "
                         f"{tuple(saliency.shape)} and {tuple(expl_saliency.shape)}.")
    finite = torch.isfinite(saliency).flatten(1).all(dim=1) & torch.isfinite(expl_saliency).flatten(1).all(dim=1)
    values = (1 + _pearson(saliency, expl_saliency)) / 2 * 100
    return values.where(finite, torch.nan), finite


def _coherency_compute(values: Tensor, finite: Tensor, reduction: str, nan_policy: str) -> Tensor:
    """Apply ``nan_policy`` to per-sample Coherency: ``"zero"`` scores a finite constant map 0 and leaves a
    sample whose maps are not finite out (NaN with ``reduction="none"``); ``"omit"`` / ``"propagate"`` treat
    both alike."""
    if nan_policy == "zero":
        values = values.where(~(torch.isnan(values) & finite), 0.0)
        nan_policy = "omit"
    return reduce_values(values, reduction, nan_policy)


def coherency(saliency: Tensor, expl_saliency: Tensor, reduction: str = "mean", nan_policy: str = "zero") -> Tensor:
    """Coherency %: ``(1 + Pearson(CAM(x), CAM(E))) / 2 * 100`` (Poppi et al. 2021, Eq. 2).

    Args:
        saliency: ``(B, H, W)`` maps of the images.
        expl_saliency: ``(B, H, W)`` maps of the same class on ``E = x * CAM``.
        reduction: ``"mean"`` or ``"none"``.
        nan_policy: a constant map leaves Pearson undefined: ``"zero"`` (default, the authors' code)
            scores it 0, ``"omit"`` leaves it out, ``"propagate"`` keeps NaN. A sample with a map that
            is not finite (NaN / inf) is undefined whatever the formula gives: left out under
            ``"zero"`` and ``"omit"``, NaN under ``"propagate"``.

    Examples:
        >>> maps = torch.tensor([[[0.0, 1.0], [0.5, 1.0]]])
        >>> coherency(maps, maps), coherency(maps, 1 - maps)
        (tensor(100., dtype=torch.float64), tensor(0., dtype=torch.float64))
        >>> constant, broken = torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), float("nan"))
        >>> coherency(torch.cat([maps, constant, broken]), torch.cat([maps] * 3), reduction="none")
        tensor([100.,   0.,  nan], dtype=torch.float64)
    """
    return _coherency_compute(*_coherency_update(saliency, expl_saliency), reduction, nan_policy)


def complexity(saliency: Tensor, reduction: str = "mean", nan_policy: str = "omit") -> Tensor:
    """Complexity %: the mean of the ``[0, 1]`` map times 100 (Poppi et al. 2021, Eq. 3).

    Examples:
        >>> complexity(torch.tensor([[[0.0, 1.0], [0.5, 1.0]]]))
        tensor(62.5000, dtype=torch.float64)
    """
    check_saliency(saliency)
    return reduce_values(saliency.flatten(1).double().mean(dim=1) * 100, reduction, nan_policy)


def adcc(avg_drop: Tensor, coherency: Tensor, complexity: Tensor) -> Tensor:
    """ADCC % (Poppi et al. 2021, Eq. 5): harmonic mean of Coherency, 1 - Complexity, 1 - AverageDrop.

    Inputs and output in %. Element-wise: pass dataset means for the leaderboard value (what
    Table 2 reports) or per-image values for per-image ADCC. 0 when a term is 0; NaN if an input is.

    Examples:
        >>> adcc(26.13, 93.83, 20.27)  # Score-CAM, VGG16, Poppi Table 2: 81.66
        tensor(81.6611, dtype=torch.float64)
    """
    terms = torch.stack(torch.broadcast_tensors(torch.as_tensor(coherency, dtype=torch.float64) / 100,
                                                1 - torch.as_tensor(complexity, dtype=torch.float64) / 100,
                                                1 - torch.as_tensor(avg_drop, dtype=torch.float64) / 100))
    if ((terms < 0) | (terms > 1)).any():
        raise ValueError("Expected Average Drop, Coherency and Complexity in [0, 100] %, but got the terms "
                         f"(coherency, 1 - complexity, 1 - drop) {terms.tolist()}.")
    positive = (terms > 0).all(dim=0)
    value = 3 / (1 / terms.where(terms > 0, 1.0)).sum(dim=0) * 100
    return torch.where(positive, value, torch.zeros_like(value)).where(~torch.isnan(terms).any(dim=0), torch.nan)
