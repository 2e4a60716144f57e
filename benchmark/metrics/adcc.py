"""Metric classes of the ADCC family (Poppi et al., CVPRW 2021); maths in :mod:`.functional.adcc`."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import reduce_values
from benchmark.metrics.functional.adcc import adcc, average_drop, average_increase, coherency, complexity

__all__ = ["ADCC", "AverageDrop", "AverageIncrease", "Coherency", "Complexity"]


class AverageDrop(PerSampleMetric):
    """Average Drop % over the dataset; samples with ``Y = 0`` are undefined (counted, omitted).

    Examples:
        >>> metric = AverageDrop()
        >>> metric.update(torch.tensor([0.8, 0.5]), torch.tensor([0.2, 0.6]), indices=torch.tensor([0, 1]))
        >>> metric.compute()
        tensor(37.5000, dtype=torch.float64)
    """

    higher_is_better = False
    needs = frozenset({"expl_probs"})

    def update(self, full_probs: Tensor, expl_probs: Tensor, indices: Optional[Tensor] = None) -> None:
        self.store(average_drop(full_probs, expl_probs, reduction="none"), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        self.update(inputs.full_probs, inputs.expl_probs, inputs.indices)


class AverageIncrease(PerSampleMetric):
    """Average Increase in confidence %: share of images with ``O > Y``.

    Examples:
        >>> metric = AverageIncrease()
        >>> metric.update(torch.tensor([0.8, 0.5]), torch.tensor([0.2, 0.6]))
        >>> metric.compute()
        tensor(50., dtype=torch.float64)
    """

    higher_is_better = True
    needs = frozenset({"expl_probs"})

    def update(self, full_probs: Tensor, expl_probs: Tensor, indices: Optional[Tensor] = None) -> None:
        self.store(average_increase(full_probs, expl_probs, reduction="none"), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        self.update(inputs.full_probs, inputs.expl_probs, inputs.indices)


class Coherency(PerSampleMetric):
    """Coherency %; a constant map scores 0 by default (``nan_policy="zero"``, the authors' code).

    Examples:
        >>> maps = torch.tensor([[[0.0, 1.0], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> metric = Coherency()
        >>> metric.update(maps, maps)
        >>> metric.compute(), int(metric.n_invalid)
        (tensor(50., dtype=torch.float64), 1)
    """

    higher_is_better = True
    needs = frozenset({"expl_saliency"})

    def __init__(self, nan_policy: str = "zero", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)

    def update(self, saliency: Tensor, expl_saliency: Tensor, indices: Optional[Tensor] = None) -> None:
        self.store(coherency(saliency, expl_saliency, reduction="none", nan_policy="propagate"), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        self.update(inputs.saliency, inputs.expl_saliency, inputs.indices)


class Complexity(PerSampleMetric):
    """Complexity %: mean of the ``[0, 1]`` maps.

    Examples:
        >>> metric = Complexity()
        >>> metric.update(torch.tensor([[[0.0, 1.0], [0.5, 1.0]]]))
        >>> metric.compute()
        tensor(62.5000, dtype=torch.float64)
    """

    higher_is_better = False

    def update(self, saliency: Tensor, indices: Optional[Tensor] = None) -> None:
        self.store(complexity(saliency, reduction="none"), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        self.update(inputs.saliency, inputs.indices)


class ADCC(PerSampleMetric):
    """ADCC % (Poppi Eq. 5): the harmonic mean of the dataset means of Coherency, 1 - Complexity, 1 - Drop.

    That dataset-level value is what Poppi et al. Table 2 reports; :meth:`extra_values` also gives
    the mean of per-image ADCC (lower, by Jensen's inequality) and the three parts. Per-sample
    policies: an undefined Average Drop (``Y = 0``) is omitted from the drop mean; an undefined
    Coherency follows ``coherency_nan_policy`` (default 0, the authors' code).

    Examples:
        >>> metric = ADCC()
        >>> maps = torch.tensor([[[0.0, 1.0], [0.5, 1.0]]])
        >>> metric.update(torch.tensor([0.8]), torch.tensor([0.6]), maps, maps)
        >>> metric.compute()  # 3 / (1/1 + 1/0.375 + 1/0.75): drop 25, coherency 100, complexity 62.5
        tensor(60.0000, dtype=torch.float64)
    """

    higher_is_better = True
    needs = frozenset({"expl_probs", "expl_saliency"})

    def __init__(self, coherency_nan_policy: str = "zero", **kwargs) -> None:
        super().__init__(nan_policy="omit", **kwargs)
        self.coherency_nan_policy = coherency_nan_policy
        coherency(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), nan_policy=coherency_nan_policy)  # validates

    def update(self, full_probs: Tensor, expl_probs: Tensor, saliency: Tensor, expl_saliency: Tensor,
               indices: Optional[Tensor] = None) -> None:
        parts = [average_drop(full_probs, expl_probs, reduction="none"),
                 coherency(saliency, expl_saliency, reduction="none", nan_policy="propagate"),
                 complexity(saliency, reduction="none")]
        self.store(torch.stack(parts, dim=1), indices)  # NaN = undefined, counted in n_invalid

    def update_from(self, inputs: MetricInputs) -> None:
        self.update(inputs.full_probs, inputs.expl_probs, inputs.saliency, inputs.expl_saliency, inputs.indices)

    def _parts(self, values: Optional[Tensor] = None) -> Tensor:
        """Per-image (drop, coherency, complexity) with the coherency policy applied, index order."""
        values = (self.sorted_values()[1] if values is None else values).clone()
        values[:, 1] = reduce_values(values[:, 1], "none", self.coherency_nan_policy)
        return values

    def _means(self, values: Tensor) -> Tensor:
        coh = reduce_values(values[:, 1], "mean", "propagate" if self.coherency_nan_policy == "propagate" else "omit")
        return torch.stack([values[:, 0].nanmean(), coh, values[:, 2].nanmean()])

    def reduce(self, values: Tensor) -> Tensor:
        """ADCC of the dataset means of the stored (drop, coherency, complexity) rows."""
        drop, coh, comp = self._means(self._parts(values))
        return adcc(drop, coh, comp)

    def extra_reduce(self, values: Tensor) -> Dict[str, Tensor]:
        """The mean of per-image ADCC and the dataset means of its three parts."""
        values = self._parts(values)
        drop, coh, comp = self._means(values)
        per_image = adcc(values[:, 0], values[:, 1], values[:, 2]).nanmean()
        return {"per_image": per_image, "average_drop": drop, "coherency": coh, "complexity": comp}
