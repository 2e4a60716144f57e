"""Max-sensitivity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of
Explanations", NeurIPS 2019, Eq. 5), relative to the map's norm as captum's ``sensitivity_max``.

How much the explanation changes when the input moves inside an L-infinity ball of radius ``r``::

    SENS_MAX(Phi, f, x, r) = max_{||y - x||_inf <= r} ||Phi(y) - Phi(x)|| / ||Phi(x)||        (lower is better)

estimated as captum does: the maximum over ``n_perturb_samples`` points ``y = x + delta``, ``delta`` uniform in
the ball (each element uniform in ``[-r_c, r_c)``, captum's ``default_perturb_func``), the explainer re-run on
every ``y`` for the same class; ``||.||`` is the Frobenius norm of the ``(H, W)`` map (captum's default
``norm_ord="fro"``; ``norm="inf"``: the largest absolute change), and a zero ``||Phi(x)||`` divides by 1 (captum).
The paper's Eq. 5 is the absolute change; captum and the authors' code (``get_exp_sens``, which divides the
running maximum by the norm at every draw) divide by ``||Phi(x)||``. Broadcasting the map over the channels
would scale both norms by ``sqrt(C)`` and leave the ratio unchanged, so the ``(H, W)`` map is used.

Conventions: ``r_c = radius / std_c`` with ``radius = 0.02`` in ``[0, 1]`` pixel units (captum's default
radius, applied to the unnormalised image; ``std``: the model's normalisation, ImageNet's by default, ``std=1``:
captum's radius in the inputs' own units). ``Phi(x)`` is the given map (the module's). Each sample's ``delta``
come from a CPU generator seeded by ``seed * 1_000_003 + index``, and each sample's perturbed inputs are
explained in their own calls (``chunk_size`` images at most, the sample's class and dataset index repeated, so
a stochastic explainer draws the noise it drew on ``x``): values are bitwise the same for any batching or
number of processes. A non-finite map, on ``x`` or on any ``y``, gives NaN.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from benchmark._utils import check_choice, check_positive_int
from benchmark.metrics.functional._common import check_images, reduce_values
from benchmark.metrics.functional.fgsm import IMAGENET_STD
from benchmark.metrics.functional.infidelity import _channel_scale, _check_seed, _check_targets, _sample_keys
from benchmark.metrics.functional.road import _generator

__all__ = ["NORMS", "max_sensitivity", "sensitivity_perturbations"]

NORMS = ("fro", "inf")


def _check_radius(radius: float) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius < 0:
        raise ValueError(f"Expected `radius` to be a finite number >= 0, but got {radius!r}.")
    return float(radius)


def _draw(image: Tensor, key: int, n: int, radius: float, std: Union[float, Sequence[float]], seed: int) -> Tensor:
    """``(n, C, H, W)`` points ``x + delta`` of one ``(C, H, W)`` image, ``delta`` uniform in the ball."""
    unit = torch.rand((n, *image.shape), generator=_generator(seed, key), dtype=image.dtype) * 2 - 1
    return image + (unit * _channel_scale(radius, std, image.shape[0]).to(image.dtype)).to(image.device)


def sensitivity_perturbations(images: Tensor, n_perturb_samples: int = 10, radius: float = 0.02,
                              std: Union[float, Sequence[float]] = IMAGENET_STD, indices: Optional[Tensor] = None,
                              seed: int = 0) -> Tensor:
    """The perturbed inputs of :func:`max_sensitivity` (Yeh et al., NeurIPS 2019): ``x + delta``, ``delta``
    uniform in the L-infinity ball of radius ``radius / std_c``, seeded per sample by ``(seed, index)``.

    Returns:
        ``(B, n, C, H, W)`` perturbed inputs in the images' dtype.

    Examples:
        >>> points = sensitivity_perturbations(torch.zeros(2, 3, 4, 4), 5, radius=0.1, std=1.0)
        >>> points.shape, bool(points.abs().max() <= 0.1)
        (torch.Size([2, 5, 3, 4, 4]), True)
        >>> alone = sensitivity_perturbations(torch.zeros(1, 3, 4, 4), 5, 0.1, 1.0, indices=torch.tensor([1]))
        >>> torch.equal(points[1], alone[0])  # sample 1 of the batch drew what index 1 draws alone
        True
    """
    check_images(images)
    check_positive_int(n_perturb_samples, "n_perturb_samples")
    _check_radius(radius)
    _check_seed(seed)
    return torch.stack([_draw(image, key, n_perturb_samples, radius, std, seed)
                        for image, key in zip(images, _sample_keys(indices, len(images)))])


def max_sensitivity(explain: Callable[..., Tensor], images: Tensor, saliency: Tensor, targets: Tensor,
                    n_perturb_samples: int = 10, radius: float = 0.02,
                    std: Union[float, Sequence[float]] = IMAGENET_STD, norm: str = "fro",
                    indices: Optional[Tensor] = None, seed: int = 0, chunk_size: int = 64, reduction: str = "mean",
                    nan_policy: str = "omit") -> Tensor:
    """Max-sensitivity (Yeh et al., NeurIPS 2019, Eq. 5; captum's relative form): lower is better.

    ``SENS_MAX = max_j ||Phi(x + delta_j) - Phi(x)|| / ||Phi(x)||`` over ``n_perturb_samples`` draws ``delta_j``
    uniform in the L-infinity ball (see the module docstring).

    Args:
        explain: ``explain(images, classes, indices=None) -> (N, H, W)`` maps (the module's ``explain``, or an
            explainer); called with each sample's class and dataset index repeated (no ``indices`` without them).
        images: ``(B, C, H, W)`` model inputs.
        saliency: ``(B, H, W)`` maps ``Phi(x)`` of ``targets``.
        targets: ``(B,)`` explained classes.
        n_perturb_samples: points per image (10, captum's default).
        radius: the ball's radius in ``[0, 1]`` pixel units (``radius / std_c`` in the inputs' units).
        std: the inputs' normalisation std (ImageNet's); ``1`` for captum's radius in input units.
        norm: ``"fro"`` (captum's default) or ``"inf"``.
        indices: ``(B,)`` dataset indices seeding each sample's draws and given to ``explain``.
        seed: the draws' seed.
        chunk_size: perturbed images per ``explain`` call.
        reduction: ``"mean"`` (batch mean) or ``"none"`` (``(B,)``).
        nan_policy: for NaN samples: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Returns:
        float64 max-sensitivity, ``(B,)`` with ``reduction="none"``.

    Examples:
        >>> images, targets = torch.full((1, 1, 4, 4), 0.5), torch.tensor([0])
        >>> constant = lambda images, classes, indices=None: torch.ones(len(images), 4, 4)  # ignores its input
        >>> max_sensitivity(constant, images, torch.ones(1, 4, 4), targets, std=1.0)
        tensor(0., dtype=torch.float64)
        >>> pixels = lambda images, classes, indices=None: images[:, 0]  # the image as its map: ||delta|| / 2
        >>> max_sensitivity(pixels, images, images[:, 0], targets, 50, radius=0.1, std=1.0)  # <= 0.1 * 4 / 2
        tensor(0.1458, dtype=torch.float64)
    """
    check_images(images)
    batch, _, height, width = images.shape
    if not isinstance(saliency, Tensor):
        raise TypeError(f"Expected `saliency` to be a torch.Tensor, but got {type(saliency).__name__}.")
    if saliency.shape != (batch, height, width) or not saliency.is_floating_point():
        raise ValueError(f"Expected `saliency` to have shape (B, H, W) = {(batch, height, width)} with a floating "
                         f"dtype, but got {tuple(saliency.shape)} {saliency.dtype}.")
    _check_targets(targets, batch)
    check_positive_int(n_perturb_samples, "n_perturb_samples")
    _check_radius(radius)
    check_choice(norm, "norm", NORMS)
    _check_seed(seed)
    check_positive_int(chunk_size, "chunk_size")
    keys = _sample_keys(indices, batch)
    order = 2 if norm == "fro" else math.inf
    values = torch.full((batch,), torch.nan, dtype=torch.float64, device=images.device)
    valid = torch.isfinite(saliency.flatten(1)).all(dim=1).nonzero().flatten().tolist()
    for b in valid:
        points = _draw(images[b], keys[b], n_perturb_samples, radius, std, seed)
        maps = []
        for chunk in points.split(chunk_size):
            classes = targets[b:b + 1].expand(len(chunk))
            out = explain(chunk, classes) if indices is None else \
                explain(chunk, classes, indices=torch.full((len(chunk),), keys[b], dtype=torch.long,
                                                           device=torch.as_tensor(indices).device))
            if not isinstance(out, Tensor) or out.shape != (len(chunk), height, width):
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"Expected `explain` to return maps of shape {(len(chunk), height, width)}, but "
                                 f"got {got}.")
            maps.append(out.detach().to(saliency.device))
        reference = saliency[b].double().flatten()
        change = torch.linalg.vector_norm(torch.cat(maps).double().flatten(1) - reference, ord=order, dim=1)
        scale = torch.linalg.vector_norm(reference, ord=order)
        ratio = change / torch.where(scale == 0, torch.ones_like(scale), scale)
        values[b] = ratio.max().to(values.device)  # NaN (a non-finite map on a perturbed input) propagates
    return reduce_values(values, reduction, nan_policy)
