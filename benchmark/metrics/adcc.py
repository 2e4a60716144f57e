"""Metric classes of the ADCC family (Poppi et al., CVPRW 2021); maths in :mod:`.functional.adcc`."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import NAN_POLICIES, check_choice, reduce_values
from benchmark.metrics.functional.adcc import (
    _coherency_compute,
    _coherency_update,
    adcc,
    average_drop,
    average_increase,
    complexity,
)

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
    """Coherency %; a finite constant map scores 0 by default (``nan_policy="zero"``, the authors' code).

    A sample whose map (or map of ``x * CAM``) is not finite, or that ``ExplainerModule`` marks
    undefined, is left out under ``"zero"`` and ``"omit"`` and makes the result NaN under
    ``"propagate"``; a constant map is counted in ``n_invalid`` like it. Per stored row:
    ``(coherency, finite)``, ``finite`` 1 where both maps are finite and NaN otherwise, so that a
    constant map (``(NaN, 1)``) and an undefined sample (``(NaN, NaN)``) can be told apart.

    Examples:
        >>> maps = torch.tensor([[[0.0, 1.0], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> metric = Coherency()
        >>> metric.update(maps, maps)
        >>> metric.compute(), int(metric.n_invalid)
        (tensor(50., dtype=torch.float64), 1)
        >>> metric.invalidate_last(torch.tensor([False, True]))  # a map that was not finite: left out
        >>> metric.summary()
        {'': 100.0, 'n': 2, 'n_invalid': 1}
    """

    higher_is_better = True
    needs = frozenset({"expl_saliency"})

    def __init__(self, nan_policy: str = "zero", **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)

    def update(self, saliency: Tensor, expl_saliency: Tensor, indices: Optional[Tensor] = None) -> None:
        values, finite = _coherency_update(saliency, expl_saliency)
        self.store(torch.stack([values, torch.ones_like(values).where(finite, torch.nan)], dim=1), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        self.update(inputs.saliency, inputs.expl_saliency, inputs.indices)

    @staticmethod
    def upgrade_rows(rows: List[np.ndarray], map_status: Sequence[Optional[str]]) -> List[np.ndarray]:
        """Per-sample rows of files written before the ``(coherency, finite)`` rows (one value each) in the new
        form: the CAM's ``map_status`` tells a map that was not finite (undefined) from a constant one (scored 0
        under ``"zero"``), as the run that wrote them did. A row without a status stays as it is.

        Examples:
            >>> rows = [np.float64(80.0), np.float64("nan"), np.float64("nan"), np.array([70.0, 1.0])]
            >>> np.stack(Coherency.upgrade_rows(rows, ["ok", "constant", "not_finite", "ok"])).tolist()
            [[80.0, 1.0], [nan, 1.0], [nan, nan], [70.0, 1.0]]
        """
        return [np.array([row, 1.0 if status != "not_finite" else np.nan]) if np.ndim(row) == 0 and status else row
                for row, status in zip(rows, map_status)]

    def reduce(self, values: Tensor) -> Tensor:
        """The mean Coherency under ``nan_policy`` (see the class docstring)."""
        if values.ndim == 1:  # rows of per-sample files written before the (coherency, finite) rows
            if self.nan_policy == "zero" and torch.isnan(values).any():
                raise ValueError("Coherency got per-sample values of shape (N,) with NaN (written before "
                                 "2026-12-08): there a constant map (scored 0) cannot be told from an undefined "
                                 "sample (left out); re-run the method, or pass nan_policy='omit' or "
                                 "'propagate', which treat both alike.")
            return reduce_values(values, "mean", self.nan_policy)
        return _coherency_compute(values[:, 0], ~torch.isnan(values[:, 1]), "mean", self.nan_policy)


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
    the mean of per-image ADCC (lower, by Jensen's inequality) and the three parts. All of them are
    taken over the same samples: those whose three parts are defined. A finite constant map's
    Coherency follows ``coherency_nan_policy`` (``"zero"``, the default and the authors' code: 0;
    ``"omit"``: the sample is left out; ``"propagate"``: NaN). A sample with an undefined part --
    Average Drop with ``Y = 0``, a map or map of ``x * CAM`` that is not finite, a sample
    ``ExplainerModule`` marks undefined -- is left out of all of them (``nan_policy="omit"``) or
    makes them NaN (``"propagate"``). Per stored row: ``(drop, coherency, complexity)``, the whole
    row NaN when a map is not finite.

    Examples:
        >>> metric = ADCC()
        >>> maps = torch.tensor([[[0.0, 1.0], [0.5, 1.0]]] * 2)
        >>> metric.update(torch.tensor([0.8, 0.8]), torch.tensor([0.6, 0.6]), maps, maps)
        >>> metric.invalidate_last(torch.tensor([False, True]))  # the second map was not finite: left out
        >>> metric.compute()  # 3 / (1/1 + 1/0.375 + 1/0.75): drop 25, coherency 100, complexity 62.5
        tensor(60.0000, dtype=torch.float64)
    """

    higher_is_better = True
    needs = frozenset({"expl_probs", "expl_saliency"})

    def __init__(self, coherency_nan_policy: str = "zero", nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(nan_policy=check_choice(nan_policy, "nan_policy", ("omit", "propagate")), **kwargs)
        self.coherency_nan_policy = check_choice(coherency_nan_policy, "coherency_nan_policy", NAN_POLICIES)

    def update(self, full_probs: Tensor, expl_probs: Tensor, saliency: Tensor, expl_saliency: Tensor,
               indices: Optional[Tensor] = None) -> None:
        coh, finite = _coherency_update(saliency, expl_saliency)
        parts = torch.stack([average_drop(full_probs, expl_probs, reduction="none"), coh,
                             complexity(saliency, reduction="none")], dim=1)
        self.store(parts.masked_fill(~finite[:, None], torch.nan), indices)  # NaN = undefined, in n_invalid

    def update_from(self, inputs: MetricInputs) -> None:
        self.update(inputs.full_probs, inputs.expl_probs, inputs.saliency, inputs.expl_saliency, inputs.indices)

    def _kept(self, values: Tensor) -> Optional[Tensor]:
        """The rows with all three parts defined after the coherency policy, or None when the result is NaN."""
        values = values.clone()
        constant = torch.isnan(values[:, 1]) & ~torch.isnan(values[:, 2])  # a finite map: complexity defined
        if self.coherency_nan_policy == "zero":
            values[constant, 1] = 0.0
        elif self.coherency_nan_policy == "propagate" and constant.any():
            return None
        defined = ~torch.isnan(values).any(dim=1)
        if (self.nan_policy == "propagate" and not defined.all()) or not defined.any():
            return None
        return values[defined]

    def reduce(self, values: Tensor) -> Tensor:
        """ADCC of the dataset means of the stored (drop, coherency, complexity) rows."""
        kept = self._kept(values)
        return torch.tensor(torch.nan, dtype=torch.float64) if kept is None else adcc(*kept.mean(dim=0))

    def extra_reduce(self, values: Tensor) -> Dict[str, Tensor]:
        """The mean of per-image ADCC and the dataset means of its three parts, over the same rows."""
        kept = self._kept(values)
        if kept is None:
            nan = torch.tensor(torch.nan, dtype=torch.float64)
            return {"per_image": nan, "average_drop": nan.clone(), "coherency": nan.clone(), "complexity": nan.clone()}
        drop, coh, comp = kept.mean(dim=0)
        per_image = adcc(kept[:, 0], kept[:, 1], kept[:, 2]).mean()
        return {"per_image": per_image, "average_drop": drop, "coherency": coh, "complexity": comp}
