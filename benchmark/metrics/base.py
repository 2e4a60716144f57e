"""The base of every cam-bench Metric: per-sample states reduced in dataset-index order.

Each ``update`` stores, per sample, its dataset index and its value(s) (NaN = undefined for
that sample); under DDP the lists are concatenated across processes (``dist_reduce_fx="cat"``).
``compute`` sorts by dataset index and reduces in float64, so the result is bitwise the same
whatever the number of processes or the batching -- and a sample seen twice (a padding
``DistributedSampler``) is refused. ``n_invalid`` counts the undefined samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, FrozenSet, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from benchmark.metrics.functional._common import NAN_POLICIES, check_choice, reduce_values

__all__ = ["MetricInputs", "PerSampleMetric"]


@dataclass
class MetricInputs:
    """What ``ExplainerModule`` hands every metric for one (batch, explainer).

    The fields after ``indices`` are filled only when a configured metric lists them in its
    ``needs`` (computed once per batch and explainer, shared by all metrics).
    """

    images: Tensor  #: ``(B, C, H, W)`` model inputs
    targets: Tensor  #: ``(B,)`` explained classes
    indices: Tensor  #: ``(B,)`` dataset indices
    saliency: Tensor  #: ``(B, H, W)`` maps of ``targets``
    full_probs: Tensor  #: ``(B,)`` softmax probability of the target class on ``images``
    probs: Tensor  #: ``(B, K)`` softmax probabilities on ``images``
    labels: Optional[Tensor] = None  #: ``(B,)`` ground-truth class, when the data have one
    target_boxes: Optional[List[Tensor]] = None  #: per sample, the (N_i, 4) xyxy boxes of the target class
    boxes: Optional[List[Tensor]] = None  #: per sample, all (N_i, 4) boxes
    box_labels: Optional[List[Tensor]] = None  #: per sample, the (N_i,) box classes
    difficult: Optional[Tensor] = None  #: ``(B,)`` bool, the data's "difficult" flag
    model: Optional[nn.Module] = None  #: need "model": the classifier (perturbation metrics)
    #: need "explain": ``explain(images, classes, indices=None) -> (N, H, W)`` maps of this explainer (the
    #: batch's dataset indices are used when ``images`` has the batch's length and ``indices`` is None)
    explain: Optional[Callable[..., Tensor]] = None
    explainer: Optional[Any] = None  #: need "explain": the explainer object behind ``explain`` (MPRT re-builds it)
    expl_probs: Optional[Tensor] = None  #: need "expl_probs": ``(B,)`` probability of the target on x * CAM
    expl_saliency: Optional[Tensor] = None  #: need "expl_saliency": ``(B, H, W)`` CAM(x * CAM), same class
    topk_classes: Optional[Tensor] = None  #: need "topk": ``(B, k)`` top-k predicted classes
    topk_saliency: Optional[Tensor] = None  #: need "topk": ``(B, k, H, W)`` their maps
    extra: Optional[dict] = None  #: anything else a datamodule provides (e.g. ``masks``)


class PerSampleMetric(Metric):
    """Accumulate per-sample values keyed by dataset index (see the module docstring).

    Subclasses compute per-sample values with the functional API (``reduction="none"``) and
    call :meth:`store`; :meth:`compute` reduces with :meth:`reduce` (default: the mean under
    ``nan_policy``).
    """

    full_state_update = False
    is_differentiable = False
    #: what :class:`MetricInputs` fields beyond the basic ones this metric reads
    needs: ClassVar[FrozenSet[str]] = frozenset()
    #: part of the default metric set of ``cam-bench run`` (:func:`~benchmark.metrics.default_metrics`); the
    #: reproduction-study metrics (attacks, occlusion, per-class maps) run only when named
    in_default_run: ClassVar[bool] = True
    #: :mod:`benchmark.runtime.pass_model` models the passes this metric makes (a metric that needs ``model`` or
    #: ``explain`` without it has its measured passes taken as its minimum, and the run says so)
    passes_modelled: ClassVar[bool] = False

    def modelled_passes(self, image_hw: Tuple[int, int], n_methods: int) -> float:
        """Forward passes per image of the protocol's minimum for this metric beyond what the module shares
        (the batch's forward, the call on x * CAM, the top-k maps), for a metric whose :attr:`passes_modelled`;
        ``n_methods`` explainers share the batch's per-batch work."""
        raise NotImplementedError(f"{type(self).__name__} does not model its passes (passes_modelled is False).")

    def __init__(self, nan_policy: str = "omit", **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_policy = check_choice(nan_policy, "nan_policy", NAN_POLICIES)
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.add_state("n_invalid", default=torch.tensor(0), dist_reduce_fx="sum")

    def store(self, values: Tensor, indices: Optional[Tensor] = None) -> None:
        """Keep ``values`` ((B,) or (B, K); NaN marks an undefined sample) under ``indices``."""
        values = values.detach()
        batch = len(values)
        if indices is None:  # unknown: -1, kept in order of arrival (exact across processes only with indices)
            indices = torch.full((batch,), -1, dtype=torch.long, device=values.device)
        elif len(indices) != batch:
            raise ValueError(f"Expected `indices` to have shape ({batch},), but got {tuple(indices.shape)}.")
        invalid = torch.isnan(values.reshape(batch, -1)).any(dim=1)
        self.n_invalid += invalid.sum().to(self.n_invalid.device)
        self.indices.append(torch.as_tensor(indices, device=values.device).long().reshape(batch))
        self.values.append(values.double())

    def invalidate_last(self, mask: Tensor) -> None:
        """Mark the ``mask`` rows of the last :meth:`store` undefined (NaN, counted in ``n_invalid``): the
        module's policy for a sample whose map is not finite, whatever the metric's formula makes of it.

        Examples:
            >>> from benchmark.metrics import create_metric
            >>> metric = create_metric("complexity")
            >>> metric.store(torch.tensor([1.0, 2.0]), torch.tensor([0, 1]))
            >>> metric.invalidate_last(torch.tensor([False, True]))
            >>> metric.values[-1].tolist(), int(metric.n_invalid)
            ([1.0, nan], 1)
        """
        last = self.values[-1]
        mask = mask.to(last.device).reshape(len(last))
        already = torch.isnan(last.reshape(len(last), -1)).any(dim=1)
        self.n_invalid += (mask & ~already).sum().to(self.n_invalid.device)
        self.values[-1] = last.masked_fill(mask.view(-1, *([1] * (last.ndim - 1))), float("nan"))
        self._computed = None  # torchmetrics' cached compute() predates the change

    def sorted_values(self) -> Tuple[Tensor, Tensor]:
        """All (indices, values) so far, sorted by dataset index; duplicates raise ValueError."""
        indices = torch.cat(self.indices) if isinstance(self.indices, list) else self.indices
        values = torch.cat(self.values) if isinstance(self.values, list) else self.values
        if indices.numel() == 0:
            raise ValueError(f"{type(self).__name__}.compute() was called before any update().")
        order = torch.argsort(indices.cpu(), stable=True)
        indices, values = indices.cpu()[order], values.cpu().double()[order]
        repeated = indices[1:][(indices[1:] == indices[:-1]) & (indices[1:] >= 0)]
        if repeated.numel():
            raise ValueError(f"{type(self).__name__} got dataset indices more than once: {repeated[:5].tolist()} "
                             "(a DistributedSampler that pads the dataset?).")
        return indices, values

    def reduce(self, values: Tensor) -> Tensor:
        """Dataset value from the index-sorted per-sample values (float64)."""
        return reduce_values(values, "mean", self.nan_policy)

    def update_from(self, inputs: MetricInputs) -> None:
        """Update from the module's :class:`MetricInputs` (each metric maps them to ``update``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `update_from`.")

    def compute(self) -> Any:
        return self.reduce(self.sorted_values()[1])

    def extra_values(self) -> dict:
        """Further named results beside ``compute()`` (e.g. ADCC's per-image mean); none by default."""
        return self.extra_reduce(self.sorted_values()[1])

    def extra_reduce(self, values: Tensor) -> dict:
        """:meth:`extra_values` from given index-sorted per-sample values; none by default."""
        return {}

    def results_from(self, values: Tensor) -> Dict[str, Tensor]:
        """Every named result (``""`` = the main value) from index-sorted per-sample ``values``, as in
        :meth:`summary`; used to resample them (bootstrap confidence intervals).

        Examples:
            >>> from benchmark.metrics import create_metric
            >>> create_metric("complexity").results_from(torch.tensor([10.0, 20.0], dtype=torch.float64))
            {'': tensor(15., dtype=torch.float64)}
        """
        value = self.reduce(values)
        out = dict(value) if isinstance(value, dict) else {"": value}
        out.update(self.extra_reduce(values))
        return out

    def summary(self, sync: bool = True) -> Dict[str, float]:
        """Every result of this metric with its counts, synced across processes (a collective call unless
        ``sync=False``: then only this process's values).

        Returns:
            ``{"": value, "<key>": value, ..., "n": samples, "n_invalid": undefined samples}`` where
            the keys come from a dict-valued ``compute()`` and from :meth:`extra_values`.
        """
        distributed = sync and torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            self.sync(should_sync=True)
        try:
            value = type(self).compute(self)  # the unwrapped compute: no second sync, no cache
            values = dict(value) if isinstance(value, dict) else {"": value}
            values.update(self.extra_values())
            out = {key: float(v) for key, v in values.items()}
            out["n"] = int(self.sorted_values()[0].numel())
            out["n_invalid"] = int(self.n_invalid)
            return out
        finally:
            if distributed:
                self.unsync()


def passes_unmodelled(metric: Any) -> bool:
    """Whether ``metric`` (a class or an instance) runs the model or the explainer in ways the pass model
    (:mod:`benchmark.runtime.pass_model`) does not count: its measured passes then stand as its minimum.

    Examples:
        >>> class MapsOnly(PerSampleMetric): pass
        >>> class Probes(PerSampleMetric): needs = frozenset({"model"})
        >>> passes_unmodelled(MapsOnly), passes_unmodelled(Probes)
        (False, True)
    """
    return bool(getattr(metric, "needs", frozenset()) & {"model", "explain"}) and not getattr(
        metric, "passes_modelled", False)
