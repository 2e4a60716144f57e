"""Robustness of a map to FGSM (Goodfellow et al. 2015) as a Metric; maths in :mod:`.functional.fgsm`."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import reduce_values
from benchmark.metrics.functional.fgsm import IMAGENET_MEAN, IMAGENET_STD, channel_values, fgsm_attack, fgsm_robustness

__all__ = ["FGSMRobustness"]


class FGSMRobustness(PerSampleMetric):
    """Pearson ``r`` between the map of the explained class on ``x`` and on its FGSM input ``x'``.

    ``x' = x + epsilon / std * sign(grad_x CE(f(x), c))`` (:func:`~benchmark.metrics.functional.fgsm.fgsm_attack`),
    ``c`` the explained class; per sample ``r = Pearson(map(x), map(x'))`` in ``[-1, 1]`` (raw, not
    in %); NaN when either map is constant (``n_invalid``, ``nan_policy``). ``extra_values()``
    adds ``"flip_rate"``: % of the samples whose top-1 class on ``x'`` differs from that on ``x``.
    Per stored row: ``(r, 100 * flipped)``.

    Args:
        epsilon: the step in ``[0, 1]`` image units (8/255).
        std: the model's per-channel normalisation std (ImageNet's); one value for 1-channel models.
        clamp: clip ``x'`` to the normalised image of ``[0, 1]`` (needs the right ``mean``; default False).
        mean: the per-channel normalisation mean, used only with ``clamp``.
        nan_policy: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Cost: one forward + backward to the input, one forward on ``x'`` and one explainer call per batch.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> explain = lambda images, classes, indices=None: images[:, 0].clamp(0, 1)  # the image as its map
        >>> images = torch.tensor([[[[0.5, 0.6], [0.7, 0.8]]]])
        >>> metric = FGSMRobustness(epsilon=0.25, std=1.0)  # x' = x - 0.25: the same ranking, sum(x') = 1.6 > 0
        >>> metric.update(model, images, images[:, 0], torch.tensor([0]), explain)
        >>> round(metric.compute().item(), 6), metric.extra_values()
        (1.0, {'flip_rate': tensor(0., dtype=torch.float64)})
    """

    higher_is_better = True
    in_default_run = False  # a reproduction-study metric: runs when named
    needs = frozenset({"model", "explain"})

    def __init__(self, epsilon: float = 8 / 255, std: Union[float, Sequence[float]] = IMAGENET_STD,
                 clamp: bool = False, mean: Union[float, Sequence[float]] = IMAGENET_MEAN, nan_policy: str = "omit",
                 **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
            raise TypeError(f"Expected `epsilon` to be a float in [0, 1], but got {type(epsilon).__name__}.")
        if not 0 <= epsilon <= 1:
            raise ValueError(f"Expected `epsilon` in [0, 1], but got {epsilon}.")
        self.epsilon = float(epsilon)
        self.std = channel_values(std, "std", positive=True)
        self.mean = channel_values(mean, "mean")
        self.clamp = bool(clamp)

    def update(self, model: nn.Module, images: Tensor, saliency: Tensor, targets: Tensor,
               explain: Callable[..., Tensor], indices: Optional[Tensor] = None) -> None:
        """Score a batch; ``explain(images, classes, indices=None)`` gives the maps on ``x'``."""
        adversarial, logits = fgsm_attack(model, images, targets, self.epsilon, self.std, self.clamp, self.mean)
        with torch.inference_mode():
            flipped = model(adversarial).argmax(dim=1) != logits.argmax(dim=1)
        adversarial_maps = explain(adversarial, targets) if indices is None else \
            explain(adversarial, targets, indices=indices)
        r = fgsm_robustness(saliency, adversarial_maps.to(saliency.device), reduction="none", nan_policy="propagate")
        self.store(torch.stack([r, 100 * flipped.to(r.device).double()], dim=1), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``model``, ``images``, ``saliency``, ``targets`` and ``explain``."""
        missing = [name for name in ("model", "explain") if getattr(inputs, name) is None]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {missing} in the MetricInputs, but they are None.")
        self.update(inputs.model, inputs.images, inputs.saliency, inputs.targets, inputs.explain, inputs.indices)

    def reduce(self, values: Tensor) -> Tensor:
        """The mean correlation under ``nan_policy``."""
        return reduce_values(values[:, 0], "mean", self.nan_policy)

    def extra_reduce(self, values: Tensor) -> Dict[str, Tensor]:
        """``{"flip_rate": % of samples whose prediction FGSM changed}``: a sample marked undefined (NaN row, a
        map that was not finite) is left out or, under ``nan_policy="propagate"``, makes it NaN; a constant map
        (NaN ``r`` only) still counts, as its flip is measured."""
        return {"flip_rate": reduce_values(values[:, 1], "mean", "propagate" if self.nan_policy == "propagate"
                                           else "omit")}
