"""Deletion and Insertion, the causal metrics of RISE (Petsiuk et al., BMVC 2018).

For an image ``x``, its saliency map and the explained class ``c``, pixels are visited in
order of decreasing saliency, ``n`` per step (RISE: 224 per step on 224 x 224, i.e. 224 steps):

* deletion: step ``k`` replaces the first ``min(k n, HW)`` pixels of the order (all channels)
  by the substrate 0, the dataset mean colour in the model's normalised input space;
* insertion: step ``k`` starts from a blurred copy of ``x`` and restores those pixels of ``x``.

The curve holds ``p_k = softmax(model(x_k))_c`` for ``k = 0 .. n_steps`` with
``n_steps = ceil(HW / n)`` (the last point: every pixel replaced), and the score is its area
by the trapezoid rule on ``[0, 1]``, as RISE's ``auc``::

    AUC = (sum_k p_k - p_0 / 2 - p_last / 2) / n_steps

Deletion: lower is better; insertion: higher is better. Conventions, following the authors'
``evaluation.py`` (github.com/eclique/RISE) unless said otherwise:

* order: ``argsort(saliency, descending=True, stable=True)`` over the raster-flattened map, so
  tied pixels go in raster order (RISE's ``np.flip(np.argsort(...))`` leaves ties in an
  unspecified order);
* insertion substrate: RISE's ``blur``, a per-channel ``conv2d`` with zero padding of
  ``kernel_size // 2`` and the kernel ``gkern(11, 5)`` = ``scipy.ndimage.gaussian_filter`` of an
  11 x 11 delta with sigma 5 (scipy's defaults: ``mode="reflect"``, truncated at 4 sigma), which
  is the outer product of the 1-D Gaussian folded back into 11 taps and sums to 1;
* the class probability is the softmax of the model's logits (RISE appends ``nn.Softmax``);
  the explained class is ``targets`` (RISE uses the predicted class: pass ``argmax`` for that);
* a map holding NaN (an undefined explanation) gives a NaN curve and AUC, with no forward run.

All perturbed images of a batch -- ``B (n_steps + 1)`` (sample, step) pairs -- are built from a
per-sample rank map (``x_k = where(rank < k n, finish, start)``) and run ``chunk_size`` per
forward under ``torch.inference_mode``, with the model in eval mode.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark._utils import check_positive_int, eval_mode
from benchmark.metrics.functional._common import check_images, check_saliency, reduce_values

__all__ = ["auc", "deletion", "deletion_curve", "gaussian_kernel", "insertion", "insertion_curve",
           "rise_blur"]

Model = Union[nn.Module, Callable[[Tensor], Tensor]]


_check_positive_int = check_positive_int  # the name the metric modules import


def _pixels_per_step(height: int, width: int, pixels_per_step: Optional[int], steps: Optional[int]) -> int:
    if pixels_per_step is not None and steps is not None:
        raise ValueError(f"Expected at most one of `pixels_per_step` and `steps`, but got {pixels_per_step} and "
                         f"{steps}.")
    if steps is not None:
        return math.ceil(height * width / _check_positive_int(steps, "steps"))
    if pixels_per_step is None:
        return width  # RISE: one row's worth of pixels per step (224 on 224 x 224)
    return _check_positive_int(pixels_per_step, "pixels_per_step")


def curve_steps(height: int, width: int, pixels_per_step: Optional[int] = None, steps: Optional[int] = None) -> int:
    """``n_steps`` of a deletion / insertion curve on ``height x width`` images (its points are ``n_steps + 1``).

    Examples:
        >>> curve_steps(224, 224), curve_steps(224, 224, steps=100), curve_steps(32, 32, pixels_per_step=100)
        (224, 100, 11)
    """
    return math.ceil(height * width / _pixels_per_step(height, width, pixels_per_step, steps))


def _check_inputs(images: Tensor, saliency: Tensor, targets: Tensor) -> None:
    check_images(images)
    check_saliency(saliency)
    if saliency.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"Expected `saliency` to have shape (B, H, W) = {(images.shape[0], *images.shape[2:])} "
                         f"matching `images`, but got {tuple(saliency.shape)}.")
    if not isinstance(targets, Tensor):
        raise TypeError(f"Expected `targets` to be a torch.Tensor, but got {type(targets).__name__}.")
    if targets.shape != (images.shape[0],) or targets.dtype.is_floating_point or targets.dtype == torch.bool \
            or targets.is_complex():
        raise ValueError(f"Expected `targets` to have shape ({images.shape[0]},) with an integer dtype, but got "
                         f"{tuple(targets.shape)} {targets.dtype}.")
    if (targets < 0).any():
        raise ValueError(f"Expected `targets` to be class indices >= 0, but got {targets.tolist()}.")


def gaussian_kernel(kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's ``gkern``: ``scipy.ndimage.gaussian_filter`` (reflect mode, 4 sigma) of a centred delta.

    The 1-D Gaussian ``exp(-t^2 / (2 sigma^2))``, ``|t| <= round(4 sigma)``, normalised, is applied to
    a delta at ``kernel_size // 2`` whose array is extended by symmetric reflection; the 2-D kernel
    is the outer product of that 1-D filter with itself (it sums to 1).

    Examples:
        >>> k = gaussian_kernel(11, 5.0)
        >>> k.shape, round(k.sum().item(), 6), round(k[5, 5].item(), 6)
        (torch.Size([11, 11]), 1.0, 0.008833)
    """
    _check_positive_int(kernel_size, "kernel_size")
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    # position i of the output reads the extended delta at i + t; fold i + t back into [0, n)
    positions = torch.arange(kernel_size, dtype=torch.int64)[:, None] + taps.long()[None, :]
    folded = positions % (2 * kernel_size)
    folded = torch.where(folded >= kernel_size, 2 * kernel_size - 1 - folded, folded)
    kernel_1d = (weights[None, :] * (folded == kernel_size // 2)).sum(dim=1)
    return torch.outer(kernel_1d, kernel_1d)


def rise_blur(images: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's insertion substrate: each channel convolved with :func:`gaussian_kernel`, zero padding.

    Examples:
        >>> blurred = rise_blur(torch.ones(1, 3, 16, 16))
        >>> round(blurred[0, 0, 8, 8].item(), 4), round(blurred[0, 0, 0, 0].item(), 4)  # border: zero padding
        (1.0, 0.2992)
    """
    channels = images.shape[1]
    kernel = gaussian_kernel(kernel_size, sigma).to(images.device, images.dtype)
    weight = kernel.expand(channels, 1, kernel_size, kernel_size)
    return F.conv2d(images, weight, padding=kernel_size // 2, groups=channels)


def _curves(model: Model, start: Tensor, finish: Tensor, saliency: Tensor, targets: Tensor, pixels: int,
            chunk_size: int, endpoints: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    """Probabilities of ``targets`` on ``where(rank < k pixels, finish, start)``, k = 0 .. n_steps; ``endpoints``:
    the ``(B,)`` probabilities at k = 0 and k = n_steps, known (no forward for those points)."""
    batch, channels, height, width = start.shape
    area = height * width
    n_points = math.ceil(area / pixels) + 1
    inner = 1 if endpoints is not None else 0  # the first inner step; the points forwarded are inner .. last - inner
    curves = torch.full((batch, n_points), torch.nan, dtype=torch.float64, device=start.device)
    valid = (~torch.isnan(saliency.flatten(1)).any(dim=1)).nonzero().flatten().to(start.device)
    if valid.numel() == 0:
        return curves
    flat = saliency.flatten(1).to(start.device)[valid]
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    positions = torch.arange(area, dtype=torch.int32, device=start.device).expand(len(valid), area)
    rank = torch.empty_like(positions).scatter_(1, order, positions).view(-1, 1, height, width)
    n_classes_checked = False
    all_targets, targets = targets, targets.to(start.device)[valid]
    start = start[valid]
    finish = finish[valid] if finish.ndim else finish  # deletion: a 0-d substrate, broadcast
    run_points = n_points - 2 * inner
    n_pairs = len(valid) * run_points
    values = torch.empty(n_pairs, dtype=torch.float64, device=start.device)
    for first in range(0, n_pairs, chunk_size):
        pairs = torch.arange(first, min(first + chunk_size, n_pairs), device=start.device)
        sample, step = pairs // run_points, pairs % run_points + inner
        threshold = (step * pixels).clamp_max(area).view(-1, 1, 1, 1)
        perturbed = torch.where(rank[sample] < threshold, finish[sample] if finish.ndim else finish, start[sample])
        logits = model(perturbed)
        if logits.ndim != 2 or len(logits) != len(pairs):
            raise ValueError(f"Expected the model to return logits of shape ({len(pairs)}, K), but got "
                             f"{tuple(logits.shape)}.")
        if not n_classes_checked and (all_targets >= logits.shape[1]).any():
            raise ValueError(f"Expected `targets` in [0, {logits.shape[1]}) for a model with {logits.shape[1]} "
                             f"classes, but got {all_targets.tolist()}.")
        n_classes_checked = True
        probs = logits.double().softmax(dim=1)
        values[first:first + len(pairs)] = probs.gather(1, targets[sample].long()[:, None]).squeeze(1)
    if endpoints is None:
        curves[valid] = values.view(len(valid), n_points)
    else:
        inner_values = values.view(len(valid), run_points)
        ends = [e.to(device=start.device, dtype=torch.float64)[valid][:, None] for e in endpoints]
        curves[valid] = torch.cat([ends[0], inner_values, ends[1]], dim=1)
    return curves


def _run(model: Model, images: Tensor, saliency: Tensor, targets: Tensor, pixels_per_step: Optional[int],
         steps: Optional[int], chunk_size: int, insert: bool, kernel_size: int = 11, sigma: float = 5.0,
         endpoints: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    _check_inputs(images, saliency, targets)
    _check_positive_int(chunk_size, "chunk_size")
    pixels = _pixels_per_step(images.shape[2], images.shape[3], pixels_per_step, steps)
    with eval_mode(model), torch.inference_mode():
        if insert:
            start, finish = rise_blur(images, kernel_size, sigma), images
        else:
            start, finish = images, torch.zeros((), dtype=images.dtype, device=images.device)
        return _curves(model, start, finish, saliency, targets, pixels, chunk_size, endpoints)


def deletion_curve(model: Model, images: Tensor, saliency: Tensor, targets: Tensor,
                   pixels_per_step: Optional[int] = None, steps: Optional[int] = None,
                   chunk_size: int = 64, endpoints: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    """Deletion curve (RISE, Petsiuk et al. 2018): class probability as the most salient pixels go to 0.

    ``p_k = softmax(model(x_k))_c`` with ``x_k = x`` where ``rank >= k n`` and 0 elsewhere,
    ``k = 0 .. ceil(HW / n)`` (see the module docstring for the order and the conventions).

    Args:
        model: classifier returning logits (an ``nn.Module``, run in eval mode and restored, or any
            callable such as :class:`~benchmark.explainers.fastpath.InferenceCopy`).
        images: ``(B, C, H, W)`` model inputs (normalised: 0 is the mean colour).
        saliency: ``(B, H, W)`` maps in ``[0, 1]``; a map with NaN gives a NaN curve.
        targets: ``(B,)`` explained classes.
        pixels_per_step: ``n``, pixels replaced per step; default ``W`` (RISE: 224 on 224 x 224).
        steps: alternatively, ``n = ceil(HW / steps)`` (then ``ceil(HW / n)`` steps, which can be
            fewer than ``steps`` when ``steps`` does not divide ``HW``).
        chunk_size: perturbed images per forward.
        endpoints: optionally the ``(B,)`` probabilities of ``targets`` on the image and on the fully deleted one,
            already known (the module computes them once per batch for every method); no forward for them.

    Returns:
        ``(B, n_steps + 1)`` float64 probabilities (on the images' device), from the image to the fully
        deleted one.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> images = torch.ones(1, 1, 2, 2)
        >>> saliency = torch.tensor([[[0.2, 1.0], [0.6, 0.4]]])
        >>> deletion_curve(model, images, saliency, torch.tensor([0]), pixels_per_step=1)  # sigmoid(4 .. 0)
        tensor([[0.9820, 0.9526, 0.8808, 0.7311, 0.5000]], dtype=torch.float64)
    """
    return _run(model, images, saliency, targets, pixels_per_step, steps, chunk_size, insert=False,
                endpoints=endpoints)


def insertion_curve(model: Model, images: Tensor, saliency: Tensor, targets: Tensor,
                    pixels_per_step: Optional[int] = None, steps: Optional[int] = None, chunk_size: int = 64,
                    kernel_size: int = 11, sigma: float = 5.0, endpoints: Optional[Tuple[Tensor, Tensor]] = None
                    ) -> Tensor:
    """Insertion curve (RISE, Petsiuk et al. 2018): class probability as pixels are restored onto a blur.

    ``p_k = softmax(model(x_k))_c`` with ``x_k = x`` where ``rank < k n`` and ``rise_blur(x)``
    elsewhere, ``k = 0 .. ceil(HW / n)``. Arguments as :func:`deletion_curve` (``endpoints``: the probabilities on
    the blurred image and on the image), plus the blur's ``kernel_size`` and ``sigma`` (RISE: 11 and 5; see
    :func:`gaussian_kernel`).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> images = torch.ones(1, 1, 2, 2)
        >>> saliency = torch.tensor([[[0.2, 1.0], [0.6, 0.4]]])
        >>> insertion_curve(model, images, saliency, torch.tensor([0]), pixels_per_step=1)
        tensor([[0.5351, 0.7513, 0.8880, 0.9541, 0.9820]], dtype=torch.float64)
    """
    return _run(model, images, saliency, targets, pixels_per_step, steps, chunk_size, insert=True,
                kernel_size=kernel_size, sigma=sigma, endpoints=endpoints)


def auc(curves: Tensor) -> Tensor:
    """Area under ``(B, N)`` curves sampled evenly on ``[0, 1]``, by the trapezoid rule (RISE's ``auc``).

    ``(sum(p) - p_0 / 2 - p_last / 2) / (N - 1)``.

    Examples:
        >>> auc(torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]]))
        tensor([0.5000, 1.0000])
    """
    if curves.ndim != 2 or curves.shape[1] < 2:
        raise ValueError(f"Expected `curves` to have shape (B, N) with N >= 2, but got {tuple(curves.shape)}.")
    return (curves.sum(dim=1) - curves[:, 0] / 2 - curves[:, -1] / 2) / (curves.shape[1] - 1)


def deletion(model: Model, images: Tensor, saliency: Tensor, targets: Tensor, pixels_per_step: Optional[int] = None,
             steps: Optional[int] = None, chunk_size: int = 64, reduction: str = "mean",
             nan_policy: str = "omit") -> Tensor:
    """Deletion score (RISE, Petsiuk et al. 2018): AUC of :func:`deletion_curve`, in ``[0, 1]``; lower is better.

    Args:
        reduction: ``"mean"`` (batch mean) or ``"none"`` (``(B,)``).
        nan_policy: for NaN maps: ``"omit"`` (default), ``"zero"``, ``"propagate"``.
        others: as :func:`deletion_curve`.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> deletion(model, torch.ones(1, 1, 2, 2), torch.tensor([[[0.2, 1.0], [0.6, 0.4]]]), torch.tensor([0]),
        ...          pixels_per_step=1)
        tensor(0.8264, dtype=torch.float64)
    """
    curves = deletion_curve(model, images, saliency, targets, pixels_per_step, steps, chunk_size)
    return reduce_values(auc(curves), reduction, nan_policy)


def insertion(model: Model, images: Tensor, saliency: Tensor, targets: Tensor, pixels_per_step: Optional[int] = None,
              steps: Optional[int] = None, chunk_size: int = 64, reduction: str = "mean",
              nan_policy: str = "omit") -> Tensor:
    """Insertion score (RISE, Petsiuk et al. 2018): AUC of :func:`insertion_curve`, in ``[0, 1]``; higher is better.

    Arguments as :func:`deletion`.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> insertion(model, torch.ones(1, 1, 2, 2), torch.tensor([[[0.2, 1.0], [0.6, 0.4]]]), torch.tensor([0]),
        ...           pixels_per_step=1)
        tensor(0.8380, dtype=torch.float64)
    """
    curves = insertion_curve(model, images, saliency, targets, pixels_per_step, steps, chunk_size)
    return reduce_values(auc(curves), reduction, nan_policy)
