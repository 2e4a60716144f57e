"""Fidelity and contrastivity (Pope et al., CVPR 2019, on images as in Nagy et al.'s Grad-CAM study) as Metrics.

The maths -- binarisation at the top ``p`` % of the positive values, the accuracy drop, the
Hamming distance over the union -- lives in :mod:`benchmark.metrics.functional.fidelity_contrastivity`.
Each stored row holds one value per percent; ``compute()`` returns ``{"top1": ..., "top10": ...}``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import check_saliency, reduce_values
from benchmark.metrics.functional.fidelity_contrastivity import (
    check_labels,
    check_percents,
    contrastivity,
    fidelity,
    percent_key,
)
from benchmark.metrics.functional.insertion_deletion import _check_positive_int

__all__ = ["Contrastivity", "Fidelity"]


class _PerPercent(PerSampleMetric):
    """Values per percent, reduced to ``{"top<p>": mean}`` under ``nan_policy``."""

    higher_is_better = True
    in_default_run = False  # a reproduction-study metric: runs when named

    def __init__(self, percents: Union[float, Sequence[float]] = (1.0, 10.0), nan_policy: str = "omit",
                 **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.percents = check_percents(percents)
        if len({percent_key(p) for p in self.percents}) != len(self.percents):
            raise ValueError(f"Expected distinct `percents`, but got {self.percents}.")

    def reduce(self, values: Tensor) -> Dict[str, Tensor]:
        values = values.reshape(len(values), -1)
        return {percent_key(p): reduce_values(values[:, j], "mean", self.nan_policy)
                for j, p in enumerate(self.percents)}


class Fidelity(_PerPercent):
    """Fidelity (Pope et al. 2019): drop in accuracy (points) when the top ``p`` % of each map is removed.

    Per image and percent ``100 * (correct(x) - correct(x_B))`` with ``correct`` = the model's
    argmax equals the ground-truth label (:func:`~benchmark.metrics.functional.fidelity_contrastivity.fidelity`);
    the dataset value is its mean, i.e. ``accuracy(x) - accuracy(x_B)``. The label is
    ``inputs.labels``; for unlabelled data (``labels`` None) the explained class ``inputs.targets``
    (with ``target="prediction"``: the clean prediction, so clean accuracy is 100 %).
    Cost: ``1 + P`` forwards per image (``P`` percents). NaN maps are undefined (``n_invalid``).

    Args:
        percents: ``p`` in ``(0, 100]`` ((1, 10): results ``"top1"``, ``"top10"``).
        fill: the removed pixels' value in every channel (0.0: the mean colour in normalised space).
        chunk_size: masked images per forward.
        nan_policy: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_1 = 2 x_0 - 1, logit_0 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[0.0] * 4, [2.0, 0, 0, 0]]))
        >>> _ = model[1].bias.data.copy_(torch.tensor([0.0, -1.0]))
        >>> maps = torch.tensor([[[1.0, 0.5], [0.2, 0.1]], [[0.1, 1.0], [0.5, 0.2]]])
        >>> metric = Fidelity(percents=(25, 100))
        >>> metric.update(model, torch.ones(2, 1, 2, 2), maps, torch.tensor([1, 1]), torch.tensor([0, 1]))
        >>> metric.compute()
        {'top25': tensor(50., dtype=torch.float64), 'top100': tensor(100., dtype=torch.float64)}
    """

    needs = frozenset({"model"})

    def __init__(self, percents: Union[float, Sequence[float]] = (1.0, 10.0), fill: float = 0.0,
                 chunk_size: int = 64, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(percents, nan_policy, **kwargs)
        if isinstance(fill, bool) or not isinstance(fill, (int, float)):
            raise TypeError(f"Expected `fill` to be a finite float, but got {type(fill).__name__}.")
        if not math.isfinite(fill):
            raise ValueError(f"Expected `fill` to be a finite float, but got {fill}.")
        self.fill = float(fill)
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")

    def update(self, model: nn.Module, images: Tensor, saliency: Tensor, labels: Tensor,
               indices: Optional[Tensor] = None, predictions: Optional[Tensor] = None) -> None:
        """Score a batch: ``(B, C, H, W)`` images, their ``(B, H, W)`` maps and ``(B,)`` ground-truth labels
        (``predictions``: the model's top-1 classes on ``images`` when known)."""
        self.store(fidelity(model, images, saliency, labels, self.percents, self.fill, self.chunk_size,
                            reduction="none", nan_policy="propagate", predictions=predictions), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``model``, ``images``, ``saliency`` and ``labels`` (``targets`` when the data have no labels)."""
        if inputs.model is None:
            raise ValueError(f"{type(self).__name__} needs `inputs.model` (its `needs` lists 'model').")
        labels = inputs.labels if inputs.labels is not None else inputs.targets
        # the module's clean forward gave the probabilities: their argmax is the clean prediction
        self.update(inputs.model, inputs.images, inputs.saliency, labels, inputs.indices, inputs.probs.argmax(dim=1))


class Contrastivity(_PerPercent):
    """Contrastivity (Pope et al. 2019) %: how much the binarised map of the target differs from other classes'.

    Per image and percent ``100 * mean_k |B_t xor B_k| / |B_t or B_k|`` over the other classes
    ``k`` (:func:`~benchmark.metrics.functional.fidelity_contrastivity.contrastivity`): a class
    whose union is empty (or whose map is NaN) is left out; an image where every class is left
    out (or whose target map is NaN) is undefined (``n_invalid``).

    Args:
        percents: ``p`` in ``(0, 100]`` ((1, 10): results ``"top1"``, ``"top10"``).
        classes: ``"all"``: every other class (``K - 1`` explainer maps per image: fine for
            MNIST/CIFAR, 999 on ImageNet); an int ``n``: the ``n`` most probable other classes
            (ties: the lower class index first), ``min(n, K - 1)`` maps per image.
        nan_policy: ``"omit"`` (default), ``"zero"`` or ``"propagate"``.

    Cost: ``M`` explainer calls per batch (``M`` other classes), each on the whole batch.

    Examples:
        >>> target = torch.tensor([[[1.0, 0.9], [0.0, 0.0]]])
        >>> other = {1: torch.tensor([[[1.0, 0.0], [0.9, 0.0]]]), 2: torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])}
        >>> explain = lambda images, classes: other[int(classes[0])]
        >>> metric = Contrastivity(percents=100.0, classes=1)  # the most probable other class: 1
        >>> metric.update(torch.zeros(1, 1, 2, 2), target, torch.tensor([0]), torch.tensor([[0.5, 0.3, 0.2]]), explain)
        >>> metric.compute()  # xor 2 / union 3
        {'top100': tensor(66.6667, dtype=torch.float64)}
    """

    needs = frozenset({"explain"})

    def __init__(self, percents: Union[float, Sequence[float]] = (1.0, 10.0), classes: Union[str, int] = "all",
                 nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(percents, nan_policy, **kwargs)
        if classes != "all" and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
            raise ValueError(f"Expected `classes` to be 'all' or a positive int, but got {classes!r}.")
        self.classes = classes

    def other_classes(self, probs: Tensor, targets: Tensor) -> Tensor:
        """``(B, M)`` other classes per image, by decreasing probability (ties: lower index first)."""
        order = torch.argsort(probs.float(), dim=1, descending=True, stable=True)
        keep = order != targets.to(order.device)[:, None]
        others = order[keep].view(len(order), -1)  # exactly one target per row is dropped
        return others if self.classes == "all" else others[:, :self.classes]

    def update(self, images: Tensor, saliency: Tensor, targets: Tensor, probs: Tensor,
               explain: Callable[..., Tensor], indices: Optional[Tensor] = None) -> None:
        """Score a batch; ``explain(images, classes)`` gives the ``(B, H, W)`` maps of other classes."""
        check_saliency(saliency)
        targets = check_labels(targets, len(saliency), "targets")
        if not isinstance(probs, Tensor) or probs.ndim != 2 or len(probs) != len(saliency) or probs.shape[1] < 2 \
                or (targets >= probs.shape[1]).any():
            got = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
            raise ValueError(f"Expected `probs` to have shape ({len(saliency)}, K) with K >= 2 classes covering "
                             f"`targets`, but got {got}.")
        if not callable(explain):
            raise TypeError(f"Expected `explain` to be callable, but got {type(explain).__name__}.")
        others = self.other_classes(probs, targets)
        maps = (explain(images, others[:, j]) for j in range(others.shape[1]))  # one class at a time (memory)
        values = contrastivity(saliency, maps, self.percents, reduction="none", nan_policy="propagate")
        self.store(values, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use ``images``, ``saliency``, ``targets``, ``probs`` and ``explain``."""
        if inputs.explain is None:
            raise ValueError(f"{type(self).__name__} needs `inputs.explain` (its `needs` lists 'explain').")
        self.update(inputs.images, inputs.saliency, inputs.targets, inputs.probs, inputs.explain, inputs.indices)
