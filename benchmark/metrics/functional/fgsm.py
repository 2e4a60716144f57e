"""Robustness of a map to the fast gradient sign method (FGSM; Goodfellow, Shlens, Szegedy, "Explaining and
Harnessing Adversarial Examples", ICLR 2015), a check of a Grad-CAM reproduction study (Nagy, Nimara, Qian,
"Analysis and Evaluation of Grad-CAM Explanations").

The adversarial input, in the model's normalised input space, for the explained class ``c``::

    x' = x + (epsilon / std_ch) * sign(grad_x CE(f(x), c))

``epsilon`` is in ``[0, 1]`` image units (8/255 by default), divided per channel by the
normalisation ``std`` (one step of ``epsilon`` in pixel values); ``sign(0) = 0`` leaves a pixel
with a zero gradient unchanged; nothing is clipped unless ``clamp=True`` (then ``x'`` stays in the
normalised image of ``[0, 1]``, ``[(0 - mean) / std, (1 - mean) / std]``). The score is the Pearson
correlation ``r`` (raw, in ``[-1, 1]``) between the map of ``c`` on ``x`` and on ``x'``; undefined
(NaN) when either map is constant or holds NaN.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark._utils import eval_mode
from benchmark.metrics.functional._common import check_images, check_saliency, reduce_values
from benchmark.metrics.functional.adcc import _pearson
from benchmark.metrics.functional.fidelity_contrastivity import check_labels

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "channel_values", "fgsm_attack", "fgsm_robustness"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  #: torchvision's ImageNet normalisation mean
IMAGENET_STD = (0.229, 0.224, 0.225)  #: and standard deviation

Model = Union[nn.Module, Callable[[Tensor], Tensor]]


def channel_values(values: Union[float, Sequence[float]], name: str, channels: Optional[int] = None,
                   positive: bool = False) -> Tuple[float, ...]:
    """Per-channel constants (``mean``, ``std``) as a tuple; checks their count against ``channels``.

    Examples:
        >>> channel_values(IMAGENET_STD, "std", 3, positive=True)
        (0.229, 0.224, 0.225)
    """
    out = (values,) if isinstance(values, (int, float)) else values
    if not isinstance(out, (list, tuple)) or not out or \
            any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in out):
        raise TypeError(f"Expected `{name}` to be a number or a sequence of numbers, but got {values!r}.")
    if any(not math.isfinite(v) or (positive and v <= 0) for v in out):
        kind = "finite positive" if positive else "finite"
        raise ValueError(f"Expected `{name}` to hold {kind} numbers, but got {values}.")
    if channels is not None and len(out) != channels:
        raise ValueError(f"Expected `{name}` to have {channels} value(s) (the images' channels), but got "
                         f"{len(out)}: {tuple(out)}.")
    return tuple(float(v) for v in out)


def fgsm_attack(model: Model, images: Tensor, targets: Tensor, epsilon: float = 8 / 255,
                std: Union[float, Sequence[float]] = IMAGENET_STD, clamp: bool = False,
                mean: Union[float, Sequence[float]] = IMAGENET_MEAN) -> Tuple[Tensor, Tensor]:
    """One FGSM step ``x + epsilon / std * sign(grad_x CE(f(x), targets))`` (Goodfellow et al. 2015).

    The gradient is taken with :func:`torch.autograd.grad` on a copy of the input (no parameter
    ``.grad`` is written), in eval mode, also when called under ``torch.no_grad`` or
    ``torch.inference_mode``. The loss is summed over the batch, so each image's step does not
    depend on the others.

    Args:
        model: the classifier, ``(B, C, H, W) -> (B, K)`` logits.
        images: ``(B, C, H, W)`` normalised inputs.
        targets: ``(B,)`` classes whose cross-entropy is increased.
        epsilon: the step in ``[0, 1]`` image units, in ``[0, 1]`` (8/255).
        std: the per-channel normalisation std (ImageNet's); one value for 1-channel images.
        clamp: clip ``x'`` to ``[(0 - mean) / std, (1 - mean) / std]`` (default False).
        mean: the per-channel normalisation mean, used only with ``clamp``.

    Returns:
        ``(x', logits of x)``, both detached.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # logit_0 = x_0 - x_1, logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]])), model[1].bias.data.zero_()
        >>> adversarial, _ = fgsm_attack(model, torch.zeros(1, 1, 1, 2), torch.tensor([0]), epsilon=0.5, std=0.25)
        >>> adversarial  # CE of class 0 grows as x_0 falls and x_1 rises: a 0.5 / 0.25 = 2 step
        tensor([[[[-2.,  2.]]]])
    """
    check_images(images)
    channels = images.shape[1]
    targets = check_labels(targets, len(images), "targets")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"Expected `epsilon` to be a float in [0, 1], but got {type(epsilon).__name__}.")
    if not 0 <= epsilon <= 1:
        raise ValueError(f"Expected `epsilon` in [0, 1], but got {epsilon}.")
    scale = torch.tensor(channel_values(std, "std", channels, positive=True), dtype=images.dtype,
                         device=images.device).view(1, -1, 1, 1)
    if clamp:
        centre = torch.tensor(channel_values(mean, "mean", channels), dtype=images.dtype,
                              device=images.device).view(1, -1, 1, 1)
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        inputs = images.detach().clone().requires_grad_(True)
        logits = model(inputs)
        loss = F.cross_entropy(logits.float(), targets.clone().to(logits.device).long(), reduction="sum")
        (gradient,) = torch.autograd.grad(loss, inputs)
        adversarial = inputs.detach() + epsilon / scale * gradient.sign()
        if clamp:
            adversarial = torch.maximum(torch.minimum(adversarial, (1 - centre) / scale), -centre / scale)
    return adversarial.detach(), logits.detach()


def fgsm_robustness(saliency: Tensor, adversarial_saliency: Tensor, reduction: str = "mean",
                    nan_policy: str = "omit") -> Tensor:
    """Pearson correlation ``r`` between the maps on ``x`` and on the FGSM input ``x'`` (module docstring).

    Args:
        saliency: ``(B, H, W)`` maps of the class on the images, in ``[0, 1]``.
        adversarial_saliency: ``(B, H, W)`` maps of the same class on ``x'``.
        reduction: ``"mean"`` or ``"none"`` (per sample, float64).
        nan_policy: a constant (or NaN) map leaves ``r`` undefined: ``"omit"`` (default),
            ``"zero"`` or ``"propagate"``.

    Examples:
        >>> maps = torch.tensor([[[0.0, 1.0], [0.5, 1.0]], [[0.2, 0.2], [0.2, 0.2]]])
        >>> fgsm_robustness(maps, torch.tensor([[[1.0, 0.0], [0.5, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]), reduction="none")
        tensor([-1., nan], dtype=torch.float64)
    """
    check_saliency(saliency)
    check_saliency(adversarial_saliency, "adversarial_saliency")
    if saliency.shape != adversarial_saliency.shape:
        raise ValueError(f"Expected `saliency` and `adversarial_saliency` to have the same shape, but got "
                         f"{tuple(saliency.shape)} and {tuple(adversarial_saliency.shape)}.")
    return reduce_values(_pearson(saliency, adversarial_saliency), reduction, nan_policy)
