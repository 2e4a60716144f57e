"""Fidelity and contrastivity (Pope et al., "Explainability Methods for Graph Convolutional Neural
Networks", CVPR 2019), on binarised image maps as in a Grad-CAM reproduction study (Nagy, Nimara,
Qian, "Analysis and Evaluation of Grad-CAM Explanations").

Binarisation at the top ``p`` % of the POSITIVE values (:func:`top_percent_mask`): with
``n = |{S > 0}|`` and ``k = ceil(p n / 100)`` (at least 1 when ``n > 0``), ``q`` is the
``k``-th largest positive value and ``B = {S > 0} & {S >= q}``. Every pixel tied with ``q`` is
kept, so ``|B| >= k`` (more only through ties; no raster-order tie breaking). A map without a
positive pixel gives an empty ``B``.

* Fidelity: ``100 * (1[argmax f(x) = y] - 1[argmax f(x_B) = y])`` per image, with ``x_B`` the
  image whose pixels in ``B`` are set to ``fill`` in every channel (0: the dataset mean colour
  in normalised space); its dataset mean is the drop in accuracy, in percentage points. An
  empty ``B`` changes nothing (0).
* Contrastivity: ``100 * mean_k |B_t xor B_k| / |B_t or B_k|`` over the other classes ``k``
  (the Hamming distance of the binarised maps of the target ``t`` and of ``k``, over their
  union); a class whose union is empty is left out; undefined (NaN) when every class is.

Maps holding NaN (an undefined explanation) give NaN; for contrastivity, a NaN map of another
class leaves that class out.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from benchmark._utils import eval_mode
from benchmark.metrics.functional._common import check_saliency, reduce_values
from benchmark.metrics.functional.insertion_deletion import _check_inputs, _check_positive_int

__all__ = ["check_labels", "check_percents", "contrastivity", "contrastivity_terms", "fidelity", "percent_key",
           "top_percent_mask"]

Model = Union[nn.Module, Callable[[Tensor], Tensor]]


def check_percents(percents: Union[float, Sequence[float]]) -> Tuple[float, ...]:
    """A percent in ``(0, 100]`` or a non-empty sequence of them, as a tuple of floats.

    Examples:
        >>> check_percents((1, 10.0))
        (1.0, 10.0)
    """
    values = (percents,) if isinstance(percents, (int, float)) else percents
    if not isinstance(values, (list, tuple)) or not values:
        raise TypeError(f"Expected `percents` to be a number or a non-empty sequence of numbers, but got {percents!r}.")
    for p in values:
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"Expected `percents` to hold numbers, but got {type(p).__name__}.")
        if not 0 < p <= 100:
            raise ValueError(f"Expected each of `percents` in (0, 100], but got {p}.")
    return tuple(float(p) for p in values)


def check_labels(labels: Tensor, batch: int, name: str = "labels") -> Tensor:
    """``(B,)`` integer class indices >= 0."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got {type(labels).__name__}.")
    if labels.shape != (batch,) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"Expected `{name}` to have shape ({batch},) with an integer dtype, but got "
                         f"{tuple(labels.shape)} {labels.dtype}.")
    if (labels < 0).any():
        raise ValueError(f"Expected `{name}` to be class indices >= 0, but got {labels.tolist()}.")
    return labels


def percent_key(percent: float) -> str:
    """The result name of a percent: ``"top1"``, ``"top10"``, ``"top2.5"``.

    Examples:
        >>> percent_key(1.0), percent_key(2.5)
        ('top1', 'top2.5')
    """
    return f"top{percent:g}"


def top_percent_mask(saliency: Tensor, percent: float) -> Tensor:
    """``(B, H, W)`` bool: the top ``percent`` % of each map's positive pixels, ties at the cut kept.

    See the module docstring: ``k = ceil(p n / 100)``, ``B = {S > 0} & {S >= k-th largest}``.

    Examples:
        >>> maps = torch.tensor([[[0.0, 0.5, 0.5], [0.2, 1.0, 0.1]]])  # 5 positive values
        >>> top_percent_mask(maps, 20.0).int()  # k = 1: just the 1.0
        tensor([[[0, 0, 0],
                 [0, 1, 0]]], dtype=torch.int32)
        >>> top_percent_mask(maps, 40.0).int()  # k = 2: the cut is 0.5, both 0.5 are kept
        tensor([[[0, 1, 1],
                 [0, 1, 0]]], dtype=torch.int32)
    """
    percent = check_percents(percent)[0]
    flat = saliency.flatten(1)
    positive = flat > 0  # NaN > 0 is False
    n = positive.sum(dim=1)
    k = torch.ceil(n.double() * percent / 100 - 1e-9).long().clamp(min=1)  # p n / 100, exact for integer p
    ranked = torch.where(positive, flat, -torch.inf).sort(dim=1, descending=True).values
    cut = ranked.gather(1, (k - 1).clamp(max=flat.shape[1] - 1)[:, None])
    return (positive & (flat >= cut)).view_as(saliency)


def fidelity(model: Model, images: Tensor, saliency: Tensor, labels: Tensor,
             percents: Union[float, Sequence[float]] = (1.0, 10.0), fill: float = 0.0, chunk_size: int = 64,
             reduction: str = "mean", nan_policy: str = "omit", predictions: Optional[Tensor] = None) -> Tensor:
    """Fidelity (Pope et al. 2019): accuracy drop, in points, when the top ``p`` % of the map is removed.

    ``100 * (1[argmax f(x) = y] - 1[argmax f(x_B) = y])`` per image and percent (module docstring).

    Args:
        model: the classifier, ``(N, C, H, W) -> (N, K)`` logits (run in eval mode, no autograd).
        images: ``(B, C, H, W)`` model inputs.
        saliency: ``(B, H, W)`` maps in ``[0, 1]``.
        labels: ``(B,)`` ground-truth classes ``y``.
        percents: ``p`` in ``(0, 100]``, one or several (1 and 10).
        fill: the value the removed pixels get in every channel (0.0).
        chunk_size: masked images per forward.
        reduction: ``"mean"`` (``(P,)``) or ``"none"`` (``(B, P)``, float64, in {-100, 0, 100}).
        nan_policy: NaN maps: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.
        predictions: ``(B,)`` top-1 classes of the model on ``images`` when already known (saves the clean
            forward); ``None``: computed.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_1 = 2 x_0 - 1, logit_0 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[0.0] * 4, [2.0, 0, 0, 0]]))
        >>> _ = model[1].bias.data.copy_(torch.tensor([0.0, -1.0]))
        >>> images = torch.ones(2, 1, 2, 2)
        >>> maps = torch.tensor([[[1.0, 0.5], [0.2, 0.1]], [[0.1, 1.0], [0.5, 0.2]]])
        >>> fidelity(model, images, maps, torch.tensor([1, 1]), percents=(25.0, 100.0), reduction="none")
        tensor([[100., 100.],
                [  0., 100.]], dtype=torch.float64)
    """
    if isinstance(images, Tensor) and images.ndim == 4:
        check_labels(labels, len(images))
    _check_inputs(images, saliency, labels)
    percents = check_percents(percents)
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise TypeError(f"Expected `fill` to be a finite float, but got {type(fill).__name__}.")
    if not math.isfinite(fill):
        raise ValueError(f"Expected `fill` to be a finite float, but got {fill}.")
    masks = torch.stack([top_percent_mask(saliency, p) for p in percents], dim=1)  # (B, P, H, W)
    batch, n_percents = masks.shape[:2]
    labels = labels.to(images.device)
    with eval_mode(model), torch.inference_mode():
        if predictions is None:
            predictions = torch.cat([model(part).argmax(dim=1) for part in images.split(chunk_size)])
        correct_before = predictions.to(labels.device) == labels
        pairs = torch.arange(batch * n_percents, device=images.device)
        correct_after = torch.empty(batch * n_percents, dtype=torch.bool, device=images.device)
        for part in pairs.split(chunk_size):
            sample = part // n_percents
            removed = masks.flatten(0, 1)[part].unsqueeze(1).to(images.device)
            masked = torch.where(removed, torch.as_tensor(fill, dtype=images.dtype), images[sample])
            correct_after[part] = model(masked).argmax(dim=1) == labels[sample]
    values = 100 * (correct_before[:, None].double() - correct_after.view(batch, n_percents).double())
    undefined = torch.isnan(saliency).flatten(1).any(dim=1)
    values[undefined] = torch.nan
    return reduce_values(values, reduction, nan_policy)


def contrastivity_terms(target_masks: Tensor, other_saliency: Tensor,
                        percents: Sequence[float]) -> Tuple[Tensor, Tensor]:
    """Per sample and percent, ``|B_t xor B_k| / |B_t or B_k|`` for one other class ``k`` and whether it counts.

    Args:
        target_masks: ``(B, P, H, W)`` bool, the binarised target maps (one per percent).
        other_saliency: ``(B, H, W)`` maps of class ``k`` in ``[0, 1]``.
        percents: the ``P`` percents of ``target_masks``.

    Returns:
        ``(ratio, counted)``: ``(B, P)`` float64 ratios (0 where not counted) and bool flags
        (False for an empty union or a NaN map of ``k``).
    """
    check_saliency(other_saliency, "other_saliency")
    other = torch.stack([top_percent_mask(other_saliency, p) for p in percents], dim=1)
    union = (target_masks | other).flatten(2).sum(dim=2).double()
    differ = (target_masks ^ other).flatten(2).sum(dim=2).double()
    counted = (union > 0) & ~torch.isnan(other_saliency).flatten(1).any(dim=1, keepdim=True)
    return torch.where(counted, differ / union.clamp(min=1), 0.0), counted


def contrastivity(saliency: Tensor, other_saliency: Union[Tensor, Iterable[Tensor]],
                  percents: Union[float, Sequence[float]] = (1.0, 10.0), reduction: str = "mean",
                  nan_policy: str = "omit") -> Tensor:
    """Contrastivity (Pope et al. 2019): ``100 * mean_k |B_t xor B_k| / |B_t or B_k|`` over other classes ``k``.

    Args:
        saliency: ``(B, H, W)`` maps of the target classes, in ``[0, 1]``.
        other_saliency: ``(B, M, H, W)`` maps of ``M`` other classes per sample, or an iterable of
            ``M`` ``(B, H, W)`` maps (e.g. a generator computing them one class at a time).
        percents: ``p`` in ``(0, 100]`` (1 and 10); see :func:`top_percent_mask`.
        reduction: ``"mean"`` (``(P,)``) or ``"none"`` (``(B, P)``, float64).
        nan_policy: undefined samples (NaN target map, or no class with a non-empty union):
            ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Examples:
        >>> target = torch.tensor([[[1.0, 0.9], [0.0, 0.0]]])
        >>> others = torch.tensor([[[[1.0, 0.0], [0.9, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])  # the 2nd: B_k empty
        >>> contrastivity(target, others, percents=100.0, reduction="none")  # (2 / 3 + 2 / 2) / 2
        tensor([[83.3333]], dtype=torch.float64)
    """
    check_saliency(saliency)
    percents = check_percents(percents)
    if isinstance(other_saliency, Tensor):
        if other_saliency.ndim != 4 or (other_saliency.shape[0], *other_saliency.shape[2:]) != saliency.shape:
            raise ValueError(f"Expected `other_saliency` to have shape (B, M, H, W) with (B, H, W) = "
                             f"{tuple(saliency.shape)}, but got {tuple(other_saliency.shape)}.")
        other_saliency = other_saliency.unbind(dim=1)
    target = torch.stack([top_percent_mask(saliency, p) for p in percents], dim=1)
    total = torch.zeros(len(saliency), len(percents), dtype=torch.float64, device=saliency.device)
    count = torch.zeros_like(total)
    for other in other_saliency:
        if not isinstance(other, Tensor) or other.shape != saliency.shape:
            got = tuple(other.shape) if isinstance(other, Tensor) else type(other).__name__
            raise ValueError(f"Expected each map of `other_saliency` to have shape {tuple(saliency.shape)}, but "
                             f"got {got}.")
        ratio, counted = contrastivity_terms(target, other.to(saliency.device), percents)
        total += ratio
        count += counted
    values = torch.where(count > 0, 100 * total / count.clamp(min=1), torch.nan)
    values[torch.isnan(saliency).flatten(1).any(dim=1)] = torch.nan
    return reduce_values(values, reduction, nan_policy)
