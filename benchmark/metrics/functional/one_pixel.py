"""One-pixel attack (Su, Vargas, Sakurai, "One Pixel Attack for Fooling Deep Neural Networks", IEEE TEVC
2019) and the map's sensitivity to it, as in a Grad-CAM reproduction study (Nagy, Nimara, Qian, "Analysis
and Evaluation of Grad-CAM Explanations", Table 6).

Attack (untargeted), per image: differential evolution over candidates ``(x, y, r, g, b)``
(``(x, y, v)`` for 1-channel images) minimising the softmax probability of the explained class;
the attack succeeds when the model's top-1 class differs from its top-1 on the clean image.

* ``x in [0, W]``, ``y in [0, H]``, the pixel is ``(min(floor(y), H - 1), min(floor(x), W - 1))``;
  colours in ``[0, 1]`` image units, written as ``(v - mean) / std`` in the normalised space.
* scipy's ``differential_evolution`` with Su et al.'s settings: ``popsize`` candidates in all
  (scipy's multiplier ``max(1, round(popsize / D))`` of the ``D`` dimensions: 400 -> 80 x 5),
  ``maxiter`` generations, ``mutation=0.5``, ``recombination=1`` (no crossover), no
  convergence stop (``tol=0, atol=-1``), ``polish=False``; initial population by Latin
  hypercube over the bounds (Su et al. drew colours from N(128, 127) instead).
* ``vectorized=True, updating="deferred"``: one batched evaluation per generation, run in
  forwards of ``chunk_size`` images; the callback stops after the first generation holding a
  successful candidate, and the attack keeps the successful candidate of that generation with
  the lowest probability (the first one on ties).
* seeded per image by ``numpy.random.default_rng([seed, dataset index])`` (scipy's ``rng``), so a
  sample's attack does not depend on batching or on the number of processes.

Cost: at most ``D * round(popsize / D) * (maxiter + 1)`` forwards per image (40,400 by default).

Sensitivity: the ``[0, 1]`` map value of the explained class at the attacked pixel on the clean
image (``before``) and on the attacked image (``after``); undefined for a failed attack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Union

import numpy as np
import torch
from scipy.optimize import differential_evolution
from torch import Tensor, nn

from benchmark._utils import eval_mode
from benchmark.metrics.functional._common import check_images, check_saliency
from benchmark.metrics.functional.fgsm import IMAGENET_MEAN, IMAGENET_STD, channel_values
from benchmark.metrics.functional.fidelity_contrastivity import check_labels
from benchmark.metrics.functional.insertion_deletion import _check_positive_int

__all__ = ["OnePixelAttack", "one_pixel_attack", "one_pixel_sensitivity", "one_pixel_summary"]

Model = Union[nn.Module, Callable[[Tensor], Tensor]]


@dataclass
class OnePixelAttack:
    """Result of :func:`one_pixel_attack` for a batch (failed attacks: clean image, row/col -1, NaN colour)."""

    images: Tensor  #: ``(B, C, H, W)`` attacked images
    success: Tensor  #: ``(B,)`` bool, top-1 changed
    rows: Tensor  #: ``(B,)`` long, attacked pixel row
    cols: Tensor  #: ``(B,)`` long, attacked pixel column
    colours: Tensor  #: ``(B, C)`` float64 colour in ``[0, 1]`` image units
    probabilities: Tensor  #: ``(B,)`` float64 probability of the class on the attacked image (NaN: failed)
    generations: Tensor  #: ``(B,)`` long, generations run after the initial population


def _attack_one(model: Model, image: Tensor, target: int, clean: int, rng: np.random.Generator, popsize: int,
                maxiter: int, mean: Tensor, std: Tensor, chunk_size: int) -> tuple:
    channels, height, width = image.shape
    dims = 2 + channels
    found: list = []  # (probability, row, col, colour) of the first successful generation

    def decode(candidates: np.ndarray):
        cand = torch.as_tensor(candidates.T, dtype=torch.float64, device=image.device)  # (S, D)
        cols = cand[:, 0].floor().long().clamp(0, width - 1)
        rows = cand[:, 1].floor().long().clamp(0, height - 1)
        return rows, cols, cand[:, 2:]

    def objective(candidates: np.ndarray) -> np.ndarray:
        rows, cols, colours = decode(candidates)
        values = ((colours - mean) / std).to(image.dtype)
        probs, hits = [], []
        for part in torch.arange(len(rows), device=image.device).split(chunk_size):
            batch = image.expand(len(part), -1, -1, -1).clone()
            batch[torch.arange(len(part), device=image.device), :, rows[part], cols[part]] = values[part]
            logits = model(batch).float()
            probs.append(logits.softmax(dim=1)[:, target].double())
            hits.append(logits.argmax(dim=1) != clean)
        prob, hit = torch.cat(probs), torch.cat(hits)
        if hit.any() and not found:
            best = torch.where(hit, prob, torch.inf).argmin()  # first minimum among the successful
            found.append((prob[best].item(), rows[best].item(), cols[best].item(), colours[best].clone()))
        return prob.cpu().numpy()

    def callback(intermediate_result) -> bool:
        return bool(found)

    bounds = [(0.0, float(width)), (0.0, float(height))] + [(0.0, 1.0)] * channels
    result = differential_evolution(objective, bounds, maxiter=maxiter, popsize=max(1, round(popsize / dims)),
                                    mutation=0.5, recombination=1.0, tol=0.0, atol=-1.0, rng=rng,
                                    callback=callback, polish=False, init="latinhypercube", updating="deferred",
                                    vectorized=True)
    return (found[0] if found else None), int(result.nit)


def one_pixel_attack(model: Model, images: Tensor, targets: Tensor, indices: Tensor, popsize: int = 400,
                     maxiter: int = 100, mean: Union[float, Sequence[float]] = IMAGENET_MEAN,
                     std: Union[float, Sequence[float]] = IMAGENET_STD, chunk_size: int = 128,
                     seed: int = 0) -> OnePixelAttack:
    """Untargeted one-pixel attack by differential evolution (Su et al. 2019; see the module docstring).

    Args:
        model: the classifier, ``(N, C, H, W) -> (N, K)`` logits (run in eval mode, no autograd).
        images: ``(B, C, H, W)`` normalised inputs.
        targets: ``(B,)`` classes whose probability is minimised.
        indices: ``(B,)`` dataset indices (>= 0), seeding each image's attack with ``seed``.
        popsize: candidates per generation (400); scipy's multiplier is ``round(popsize / D)``.
        maxiter: generations (100).
        mean, std: the per-channel normalisation (ImageNet's); one value each for 1-channel images.
        chunk_size: candidate images per forward.
        seed: the attack seed.

    Examples:
        >>> class Pixel(nn.Module):  # class 1 wins when pixel (2, 1) is above 0.5
        ...     def forward(self, x):
        ...         return torch.stack([torch.zeros(len(x)), x[:, 0, 2, 1] - 0.5], dim=1)
        >>> attack = one_pixel_attack(Pixel(), torch.zeros(1, 1, 4, 4), torch.tensor([0]), torch.tensor([7]),
        ...                           popsize=30, maxiter=20, mean=0.0, std=1.0)
        >>> attack.success.tolist(), attack.rows.tolist(), attack.cols.tolist(), attack.colours[0, 0].item() > 0.5
        ([True], [2], [1], True)
    """
    check_images(images)
    batch, channels, height, width = images.shape
    targets = check_labels(targets, batch, "targets")
    indices = check_labels(indices, batch, "indices")
    popsize = _check_positive_int(popsize, "popsize")
    maxiter = _check_positive_int(maxiter, "maxiter")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected `seed` to be an int >= 0, but got {seed!r}.")
    mean_t = torch.tensor(channel_values(mean, "mean", channels), dtype=torch.float64, device=images.device)
    std_t = torch.tensor(channel_values(std, "std", channels, positive=True), dtype=torch.float64,
                         device=images.device)
    out = OnePixelAttack(images.clone(), torch.zeros(batch, dtype=torch.bool), torch.full((batch,), -1),
                         torch.full((batch,), -1), torch.full((batch, channels), torch.nan, dtype=torch.float64),
                         torch.full((batch,), torch.nan, dtype=torch.float64), torch.zeros(batch, dtype=torch.long))
    with eval_mode(model), torch.inference_mode():
        clean = model(images).argmax(dim=1).tolist()
        for i in range(batch):
            rng = np.random.default_rng([seed, int(indices[i])])
            found, out.generations[i] = _attack_one(model, images[i], int(targets[i]), clean[i], rng, popsize,
                                                    maxiter, mean_t, std_t, chunk_size)
            if found is not None:
                prob, row, col, colour = found
                out.success[i], out.rows[i], out.cols[i], out.probabilities[i] = True, row, col, prob
                out.colours[i] = colour.cpu()
                out.images[i, :, row, col] = ((colour - mean_t) / std_t).to(images.dtype)
    return out


def one_pixel_sensitivity(saliency: Tensor, attacked_saliency: Tensor, attack: OnePixelAttack,
                          reduction: str = "mean") -> Union[Tensor, Dict[str, Tensor]]:
    """Map values at the attacked pixel before and after a one-pixel attack (Nagy et al., Table 6).

    Args:
        saliency: ``(B, H, W)`` maps of the class on the clean images, in ``[0, 1]``.
        attacked_saliency: ``(B, H, W)`` maps on ``attack.images`` (rows of failed attacks are ignored).
        attack: the :func:`one_pixel_attack` result.
        reduction: ``"none"``: ``(B, 2)`` float64 (before, after), NaN for failed attacks;
            ``"mean"``: :func:`one_pixel_summary` of them.

    Examples:
        >>> attack = OnePixelAttack(None, torch.tensor([True, False]), torch.tensor([0, -1]), torch.tensor([1, -1]),
        ...                         None, None, None)
        >>> maps = torch.tensor([[[0.0, 0.25], [1.0, 1.0]]] * 2)
        >>> one_pixel_sensitivity(maps, 1 - maps, attack, reduction="none")
        tensor([[0.2500, 0.7500],
                [   nan,    nan]], dtype=torch.float64)
    """
    check_saliency(saliency)
    check_saliency(attacked_saliency, "attacked_saliency")
    if saliency.shape != attacked_saliency.shape:
        raise ValueError(f"Expected `saliency` and `attacked_saliency` to have the same shape, but got "
                         f"{tuple(saliency.shape)} and {tuple(attacked_saliency.shape)}.")
    success = attack.success.to(saliency.device)
    batch = torch.arange(len(saliency), device=saliency.device)
    rows, cols = attack.rows.to(saliency.device).clamp(min=0), attack.cols.to(saliency.device).clamp(min=0)
    values = torch.stack([saliency[batch, rows, cols], attacked_saliency[batch, rows, cols]], dim=1).double()
    values[~success] = torch.nan
    if reduction == "none":
        return values
    return one_pixel_summary(values[:, 0], values[:, 1], success.double())


def one_pixel_summary(before: Tensor, after: Tensor, success: Tensor) -> Dict[str, Tensor]:
    """Statistics of the attacks: ``{before,after,change}_{mean,std,min,max}``, ``success_rate``, ``attacked``.

    ``before``/``after`` are NaN for failed attacks (left out); ``change = after - before``;
    ``std`` is the population standard deviation (``ddof=0``, NumPy's default); every statistic
    is NaN without a successful attack. ``success`` is 1/0 per attacked sample (NaN: not attacked);
    ``success_rate`` is in % of the attacked samples.

    Examples:
        >>> stats = one_pixel_summary(torch.tensor([0.2, 0.4, torch.nan]), torch.tensor([0.6, 0.6, torch.nan]),
        ...                           torch.tensor([1.0, 1.0, torch.nan]))  # the 3rd sample was not attacked
        >>> {k: round(v.item(), 4) for k, v in stats.items() if k.startswith(("change", "attacked"))}
        {'change_mean': 0.3, 'change_std': 0.1, 'change_min': 0.2, 'change_max': 0.4, 'attacked': 2.0}
        >>> stats["success_rate"]
        tensor(100., dtype=torch.float64)
    """
    out: Dict[str, Tensor] = {}
    nan = torch.tensor(torch.nan, dtype=torch.float64)
    for name, values in (("before", before), ("after", after), ("change", after - before)):
        values = values.double()[~torch.isnan(values.double())]
        empty = values.numel() == 0
        out[f"{name}_mean"] = nan if empty else values.mean()
        out[f"{name}_std"] = nan if empty else values.std(correction=0)
        out[f"{name}_min"] = nan if empty else values.min()
        out[f"{name}_max"] = nan if empty else values.max()
    attacked = success.double()[~torch.isnan(success.double())]
    out["success_rate"] = 100 * attacked.mean() if attacked.numel() else nan
    out["attacked"] = torch.tensor(float(attacked.numel()), dtype=torch.float64)
    return out
