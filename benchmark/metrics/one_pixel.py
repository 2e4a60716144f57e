"""Sensitivity of a map to a one-pixel attack (Su et al. 2019; Nagy et al., Table 6) as a Metric.

The attack and the statistics live in :mod:`benchmark.metrics.functional.one_pixel`. Each stored
row is ``(attacked, success, before, after, row, col)``: ``attacked`` 1/0 (dataset index <
``n_images``), ``success`` 1/0 (NaN when not attacked), the map values at the attacked pixel and
its position (NaN unless the attack succeeded, so such rows count in ``n_invalid``).
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Union

import torch
from torch import Tensor, nn

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional.fgsm import IMAGENET_MEAN, IMAGENET_STD, channel_values
from benchmark.metrics.functional.fidelity_contrastivity import check_labels
from benchmark.metrics.functional.insertion_deletion import _check_positive_int
from benchmark.metrics.functional.one_pixel import one_pixel_attack, one_pixel_sensitivity, one_pixel_summary

__all__ = ["OnePixelSensitivity"]


class OnePixelSensitivity(PerSampleMetric):
    """Map value at the pixel of a successful one-pixel attack, before and after it (Nagy et al., Table 6).

    On the samples whose dataset index is below ``n_images`` (index-based, so 1 and N processes
    attack the same images), an untargeted one-pixel attack on the explained class
    (:func:`~benchmark.metrics.functional.one_pixel.one_pixel_attack`, seeded by (``seed``, index));
    for each success, the explainer's map of the class at the attacked pixel on the clean image
    (``before``, the batch's map) and on the attacked image (``after``, one explainer call on the
    attacked images). ``compute()`` returns ``{before,after,change}_{mean,std,min,max}`` over the
    successful attacks (``change = after - before``, ``std`` with ``ddof=0``), ``success_rate``
    (% of the attacked samples whose top-1 changed) and ``attacked`` (their count). The attack
    is the same for every explainer (it depends only on the model, image and seed).

    Args:
        n_images: attack the samples with dataset index < ``n_images`` (100).
        popsize: candidates per generation (400, Su et al.).
        maxiter: generations (100, Su et al.).
        mean, std: the model's input normalisation (ImageNet's); one value each for 1-channel models.
        chunk_size: candidate images per forward.
        seed: the attack seed.

    Cost: up to ``popsize * (maxiter + 1)`` forwards per attacked image (40,400 by default;
    the attack stops after the first generation with a success) plus one explainer call per batch.

    Examples:
        >>> class Pixel(nn.Module):  # class 1 wins when pixel (2, 1) is above 0.5
        ...     def forward(self, x):
        ...         return torch.stack([torch.zeros(len(x)), x[:, 0, 2, 1] - 0.5], dim=1)
        >>> explain = lambda images, classes, indices=None: images[:, 0].clamp(0, 1)  # the image as its map
        >>> metric = OnePixelSensitivity(n_images=1, popsize=30, maxiter=20, mean=0.0, std=1.0)
        >>> metric.update(Pixel(), torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4), torch.tensor([0, 0]), explain,
        ...               indices=torch.tensor([0, 1]))
        >>> results = metric.compute()
        >>> results["before_mean"].item(), results["after_mean"].item() > 0.5, results["attacked"].item()
        (0.0, True, 1.0)
    """

    higher_is_better = True
    in_default_run = False  # a reproduction-study metric: runs when named
    needs = frozenset({"model", "explain"})

    def __init__(self, n_images: int = 100, popsize: int = 400, maxiter: int = 100,
                 mean: Union[float, Sequence[float]] = IMAGENET_MEAN,
                 std: Union[float, Sequence[float]] = IMAGENET_STD, chunk_size: int = 128, seed: int = 0,
                 **kwargs) -> None:
        super().__init__(nan_policy="omit", **kwargs)
        self.n_images = _check_positive_int(n_images, "n_images")
        self.popsize = _check_positive_int(popsize, "popsize")
        self.maxiter = _check_positive_int(maxiter, "maxiter")
        self.mean = channel_values(mean, "mean")
        self.std = channel_values(std, "std", positive=True)
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Expected `seed` to be an int >= 0, but got {seed!r}.")
        self.seed = seed

    def update(self, model: nn.Module, images: Tensor, saliency: Tensor, targets: Tensor,
               explain: Callable[..., Tensor], indices: Tensor) -> None:
        """Attack the batch's samples with index < ``n_images``; ``explain(images, classes, indices=...)``."""
        if not isinstance(indices, Tensor):
            raise TypeError(f"Expected `indices` (dataset indices) to be a torch.Tensor, but got "
                            f"{type(indices).__name__}.")
        indices = check_labels(indices, len(saliency), "indices")
        chosen = (indices < self.n_images).to(saliency.device)
        values = torch.full((len(saliency), 6), torch.nan, dtype=torch.float64, device=saliency.device)
        values[:, 0] = chosen.double()
        if chosen.any():
            where = chosen.nonzero().squeeze(1)
            attack = one_pixel_attack(model, images[where.to(images.device)], targets[where.to(targets.device)],
                                      indices[where.to(indices.device)], self.popsize, self.maxiter, self.mean,
                                      self.std, self.chunk_size, self.seed)
            attacked_maps = saliency[where].clone()
            won = attack.success.nonzero().squeeze(1)
            if len(won):
                sub = where[won]
                attacked_maps[won] = explain(attack.images[won.to(images.device)], targets[sub.to(targets.device)],
                                             indices=indices[sub.to(indices.device)]).to(saliency)
            values[where, 1] = attack.success.double().to(values.device)
            values[where, 2:4] = one_pixel_sensitivity(saliency[where], attacked_maps, attack, reduction="none")
            pixel = torch.stack([attack.rows, attack.cols], dim=1).double().to(values.device)
            values[where, 4:6] = torch.where(attack.success[:, None].to(values.device), pixel, torch.nan)
        self.store(values, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``model``, ``images``, ``saliency``, ``targets``, ``explain`` and ``indices``."""
        missing = [name for name in ("model", "explain") if getattr(inputs, name) is None]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {missing} in the MetricInputs, but they are None.")
        self.update(inputs.model, inputs.images, inputs.saliency, inputs.targets, inputs.explain, inputs.indices)

    def reduce(self, values: Tensor) -> Dict[str, Tensor]:
        """:func:`~benchmark.metrics.functional.one_pixel.one_pixel_summary` of the stored rows."""
        return one_pixel_summary(values[:, 2], values[:, 3], values[:, 1])
