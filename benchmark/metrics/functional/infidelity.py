"""Infidelity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of
Explanations", NeurIPS 2019).

An explanation ``Phi(x)`` is faithful when its inner product with a perturbation ``I`` predicts the change of
the model's score that the perturbation causes (the paper's Eq. 3)::

    INFD(Phi, f, x) = E_I[(I^T Phi(x) - (f(x) - f(x - I)))^2]                              (lower is better)

estimated with ``n_perturb_samples`` draws of ``I`` per image. With ``normalize=True`` (the default here, as
in the authors' code ``infid_sen_utils.get_exp_infid``; captum's ``infidelity`` defaults to ``False``) the
explanation is first rescaled by the optimal ``beta = sum_i a_i d_i / sum_i a_i^2`` (``a_i = I_i^T Phi``,
``d_i = f(x) - f(x - I_i)``; ``beta = 0`` when every ``a_i`` is 0, as captum's ``safe_div``), i.e.
``INFD = mean_i (beta a_i - d_i)^2``: CAM maps are min-max normalised to ``[0, 1]`` and carry no scale
relation to ``f``, so without it the value mostly ranks the maps' norms.

Conventions:

* **the explanation**: a ``(B, H, W)`` map (the module's saliency, upsampled to the input) is broadcast over
  the channels, ``Phi[c, h, w] = map[h, w]`` for every channel ``c`` (captum's ``LayerAttribution``
  expansion); a ``(B, C, H, W)`` attribution is used as it is.
* **f**: ``score="probability"`` (default) is the softmax probability of the explained class (float64),
  as Average Drop, deletion and ROAD; ``score="logit"`` its logit. ``f(x)`` is recomputed in the same
  forward as the perturbed inputs (``1 + n_perturb_samples`` images per sample).
* ``perturbation="square"`` (the paper's *Square* removal, for relevance maps such as gradient x input
  and CAMs): a ``square_size`` x ``square_size`` square (clipped to the image), uniformly placed, is set
  to ``baseline`` (0 = the mean colour in the normalised space) in every channel. As in the authors' code
  (``binary_I``) and captum's ``infidelity_perturb_func_decorator(multiply_by_inputs=True)``, ``I`` is the
  square's 0/1 indicator (in the explanation's space) and the model sees ``x - I * (x - baseline)``.
* ``perturbation="gaussian"``: ``I ~ N(0, sigma_c^2)`` i.i.d. per element and the model sees ``x - I``;
  ``sigma_c = sigma / std_c`` with ``sigma = 0.2`` in ``[0, 1]`` pixel units (the noise scale of the
  authors' code; ``std``: the model's normalisation, ImageNet's by default, ``std=1`` for unnormalised
  inputs). The authors' "Gaussian" (``set_zero_infid``) is a noisy *baseline* ``x - I = clip(-0.2 eps)``
  on MNIST; this is the additive form of captum's documentation.
* **seeding**: each sample's draws come from a CPU generator seeded by ``seed * 1_000_003 + index`` (its
  dataset index, as ROAD and the stochastic explainers), ``n_perturb_samples`` draws in order, and each
  sample is run in its own forwards (``chunk_size`` images at most), so the values are bitwise the same
  for any batching or number of processes.
* a map with a non-finite value gives NaN, with no forward run.

On a linear model ``f(x) = w^T x`` (the logit), gradient x input ``Phi = w * (x - baseline)`` has
infidelity 0 under square removal (``f(x) - f(x - 1_S * (x - b)) = sum_S w (x - b) = 1_S^T Phi``) and the
gradient ``Phi = w`` has infidelity 0 under Gaussian noise (``f(x) - f(x - I) = w^T I``): the paper's
optimal explanations for these perturbations (tested).
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from benchmark._utils import check_choice, check_positive_int, eval_mode
from benchmark.metrics.functional._common import check_images, reduce_values
from benchmark.metrics.functional.fgsm import IMAGENET_STD, channel_values
from benchmark.metrics.functional.road import _generator

__all__ = ["PERTURBATIONS", "SCORES", "infidelity", "infidelity_perturbations"]

Model = Union[nn.Module, Callable[[Tensor], Tensor]]
PERTURBATIONS = ("square", "gaussian")
SCORES = ("probability", "logit")


def _check_number(value: float, name: str, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            (positive and value <= 0):
        kind = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"Expected `{name}` to be {kind}, but got {value!r}.")
    return float(value)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected `seed` to be an int >= 0, but got {seed!r}.")
    return seed


def _channel_scale(value: float, std: Union[float, Sequence[float]], channels: int) -> Tensor:
    """``(C, 1, 1)`` float64 ``value / std_c``."""
    stds = channel_values(std, "std", positive=True)
    stds = stds * channels if len(stds) == 1 else channel_values(stds, "std", channels, positive=True)
    return value / torch.tensor(stds, dtype=torch.float64)[:, None, None]


def _sample_keys(indices: Optional[Tensor], batch: int) -> List[int]:
    """The per-sample generator keys: the dataset indices, or the batch positions without them."""
    keys = list(range(batch)) if indices is None else torch.as_tensor(indices).reshape(-1).tolist()
    if len(keys) != batch:
        raise ValueError(f"Expected `indices` to have shape ({batch},), but got {len(keys)} values.")
    return [int(k) for k in keys]


def _draw(image: Tensor, key: int, n: int, perturbation: str, sigma: float, square_size: int, baseline: float,
          std: Union[float, Sequence[float]], seed: int) -> Tuple[Tensor, Tensor]:
    """``(n, C, H, W)`` perturbations ``I`` and perturbed inputs of one ``(C, H, W)`` image."""
    generator = _generator(seed, key)
    channels, height, width = image.shape
    if perturbation == "gaussian":
        noise = torch.randn((n, channels, height, width), generator=generator, dtype=image.dtype)
        noise = (noise * _channel_scale(sigma, std, channels).to(image.dtype)).to(image.device)
        return noise, image - noise
    side_h, side_w = min(square_size, height), min(square_size, width)
    rows = torch.randint(0, height - side_h + 1, (n,), generator=generator)
    cols = torch.randint(0, width - side_w + 1, (n,), generator=generator)
    ys, xs = torch.arange(height), torch.arange(width)
    inside_y = (ys[None] >= rows[:, None]) & (ys[None] < rows[:, None] + side_h)
    inside_x = (xs[None] >= cols[:, None]) & (xs[None] < cols[:, None] + side_w)
    square = (inside_y[:, :, None] & inside_x[:, None, :])[:, None].to(image.device)  # (n, 1, H, W)
    indicator = square.expand(n, channels, height, width).to(image.dtype)
    return indicator, torch.where(square, image.new_tensor(baseline), image)


def _check_options(perturbation: str, n_perturb_samples: int, sigma: float, square_size: int, baseline: float,
                   seed: int) -> None:
    check_choice(perturbation, "perturbation", PERTURBATIONS)
    check_positive_int(n_perturb_samples, "n_perturb_samples")
    _check_number(sigma, "sigma")
    check_positive_int(square_size, "square_size")
    _check_number(baseline, "baseline", positive=False)
    _check_seed(seed)


def infidelity_perturbations(images: Tensor, n_perturb_samples: int = 10, perturbation: str = "square",
                             sigma: float = 0.2, square_size: int = 32, baseline: float = 0.0,
                             std: Union[float, Sequence[float]] = IMAGENET_STD, indices: Optional[Tensor] = None,
                             seed: int = 0) -> Tuple[Tensor, Tensor]:
    """The perturbations of :func:`infidelity` (Yeh et al., NeurIPS 2019): ``I`` and what the model sees.

    ``square``: ``I`` = the 0/1 indicator of a random ``square_size`` square, input ``x - I * (x - baseline)``;
    ``gaussian``: ``I ~ N(0, (sigma / std_c)^2)``, input ``x - I``. Each sample's generator is seeded by
    ``(seed, index)`` (see the module docstring).

    Returns:
        ``(B, n, C, H, W)`` perturbations and ``(B, n, C, H, W)`` perturbed inputs, in the images' dtype.

    Examples:
        >>> pert, inputs = infidelity_perturbations(torch.ones(1, 1, 3, 3), 2, square_size=2, seed=1)
        >>> pert[0, :, 0].int().tolist()
        [[[1, 1, 0], [1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 1], [0, 1, 1]]]
        >>> inputs[0, 0, 0].tolist()
        [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    """
    check_images(images)
    _check_options(perturbation, n_perturb_samples, sigma, square_size, baseline, seed)
    draws = [_draw(image, key, n_perturb_samples, perturbation, sigma, square_size, baseline, std, seed)
             for image, key in zip(images, _sample_keys(indices, len(images)))]
    return torch.stack([d[0] for d in draws]), torch.stack([d[1] for d in draws])


def _as_attributions(attributions: Tensor, images: Tensor) -> Tensor:
    """``(B, C, H, W)``: a ``(B, H, W)`` map broadcast over the channels, or the attribution itself."""
    if not isinstance(attributions, Tensor):
        raise TypeError(f"Expected `attributions` to be a torch.Tensor, but got {type(attributions).__name__}.")
    batch, channels, height, width = images.shape
    if attributions.ndim == 3 and attributions.shape == (batch, height, width):
        attributions = attributions[:, None].expand(batch, channels, height, width)
    if attributions.shape != images.shape or not attributions.is_floating_point():
        raise ValueError(f"Expected `attributions` to have shape (B, H, W) = {(batch, height, width)} or (B, C, H, W) "
                         f"= {tuple(images.shape)} with a floating dtype, but got {tuple(attributions.shape)} "
                         f"{attributions.dtype}.")
    return attributions


def _check_targets(targets: Tensor, batch: int) -> Tensor:
    if not isinstance(targets, Tensor):
        raise TypeError(f"Expected `targets` to be a torch.Tensor, but got {type(targets).__name__}.")
    if targets.shape != (batch,) or targets.dtype.is_floating_point or targets.dtype == torch.bool or \
            targets.is_complex() or (targets < 0).any():
        raise ValueError(f"Expected `targets` to have shape ({batch},) with class indices >= 0, but got "
                         f"{tuple(targets.shape)} {targets.dtype}.")
    return targets


def _class_scores(model: Model, inputs: Tensor, target: int, score: str, chunk_size: int) -> Tensor:
    """``(N,)`` float64 probability (or logit) of class ``target`` on ``inputs``, ``chunk_size`` per forward."""
    out = []
    for chunk in inputs.split(chunk_size):
        logits = model(chunk)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or len(logits) != len(chunk):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"Expected the model to return logits of shape ({len(chunk)}, K), but got {got}.")
        if target >= logits.shape[1]:
            raise ValueError(f"Expected `targets` in [0, {logits.shape[1]}) for a model with {logits.shape[1]} "
                             f"classes, but got {target}.")
        logits = logits.double()
        out.append((logits if score == "logit" else logits.softmax(dim=1))[:, target])
    return torch.cat(out)


def _infidelity(dot: Tensor, diff: Tensor, normalize: bool) -> Tensor:
    """``mean_i (beta a_i - d_i)^2`` with ``beta`` optimal (``normalize``) or 1."""
    if normalize:
        denominator = dot.square().sum()
        beta = (dot * diff).sum() / denominator if denominator > 0 else dot.new_zeros(())
        dot = beta * dot
    return (dot - diff).square().mean()


def infidelity(model: Model, images: Tensor, attributions: Tensor, targets: Tensor, perturbation: str = "square",
               n_perturb_samples: int = 10, normalize: bool = True, score: str = "probability", sigma: float = 0.2,
               square_size: int = 32, baseline: float = 0.0, std: Union[float, Sequence[float]] = IMAGENET_STD,
               indices: Optional[Tensor] = None, seed: int = 0, chunk_size: int = 64, reduction: str = "mean",
               nan_policy: str = "omit") -> Tensor:
    """Infidelity (Yeh et al., NeurIPS 2019, Eq. 3): ``E_I[(I^T Phi - (f(x) - f(x - I)))^2]``; lower is better.

    Monte-Carlo estimate over ``n_perturb_samples`` perturbations per image (see the module docstring for the
    perturbations, the optimal scaling, the seeding and how a map becomes ``Phi``).

    Args:
        model: classifier returning logits (run in eval mode and restored, under inference mode).
        images: ``(B, C, H, W)`` model inputs.
        attributions: ``(B, H, W)`` maps (broadcast over the channels) or ``(B, C, H, W)`` attributions; any
            real values; a sample with a non-finite value is NaN.
        targets: ``(B,)`` explained classes.
        perturbation: ``"square"`` (removal of a random square) or ``"gaussian"`` (additive noise).
        n_perturb_samples: perturbations per image (10, captum's default).
        normalize: rescale ``Phi`` by the optimal ``beta`` first (default True, the authors' code; captum: False).
        score: ``"probability"`` (softmax of the class) or ``"logit"``.
        sigma: the Gaussian noise std in ``[0, 1]`` pixel units (``sigma / std_c`` in the inputs' units).
        square_size: the square's side in pixels (clipped to the image).
        baseline: the value the square is set to (0: the mean colour of normalised inputs).
        std: the inputs' normalisation std (ImageNet's), which scales ``sigma``.
        indices: ``(B,)`` dataset indices seeding each sample's draws; default the batch positions.
        seed: the draws' seed.
        chunk_size: images per forward (each sample's ``1 + n_perturb_samples`` images run apart).
        reduction: ``"mean"`` (batch mean) or ``"none"`` (``(B,)``).
        nan_policy: for NaN samples: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Returns:
        float64 infidelity, ``(B,)`` with ``reduction="none"``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> images, targets = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]]), torch.tensor([0])
        >>> saliency = torch.tensor([[[1.0, 0.0], [0.5, 0.2]]])  # the 2 x 2 square is the image: I^T Phi = 1.7
        >>> infidelity(model, images, saliency, targets, square_size=2, score="logit", normalize=False)
        tensor(5.2900, dtype=torch.float64)
        >>> infidelity(model, images, saliency, targets, square_size=2, score="logit")  # beta = 4 / 1.7
        tensor(0., dtype=torch.float64)
        >>> gradient = torch.ones(1, 2, 2)  # Phi = w: exact under Gaussian noise on this linear model
        >>> value = infidelity(model, images, gradient, targets, "gaussian", score="logit", normalize=False, std=1.0)
        >>> round(value.item(), 8)
        0.0
    """
    check_images(images)
    attributions = _as_attributions(attributions, images)
    _check_targets(targets, len(images))
    _check_options(perturbation, n_perturb_samples, sigma, square_size, baseline, seed)
    check_choice(score, "score", SCORES)
    check_positive_int(chunk_size, "chunk_size")
    keys = _sample_keys(indices, len(images))
    values = torch.full((len(images),), torch.nan, dtype=torch.float64, device=images.device)
    valid = torch.isfinite(attributions.flatten(1)).all(dim=1).nonzero().flatten().tolist()
    with eval_mode(model), torch.inference_mode():
        for b in valid:
            pert, perturbed = _draw(images[b], keys[b], n_perturb_samples, perturbation, sigma, square_size,
                                    baseline, std, seed)
            scores = _class_scores(model, torch.cat([images[b:b + 1], perturbed]), int(targets[b]), score,
                                   chunk_size)
            dot = (attributions[b].double() * pert.double()).flatten(1).sum(dim=1)
            values[b] = _infidelity(dot, (scores[0] - scores[1:]).to(dot.device), bool(normalize)).to(values.device)
    return reduce_values(values, reduction, nan_policy)
