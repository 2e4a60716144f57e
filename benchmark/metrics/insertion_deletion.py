"""Deletion and Insertion (RISE, Petsiuk et al., BMVC 2018) as per-sample TorchMetrics classes.

The maths lives in :mod:`benchmark.metrics.functional.insertion_deletion`; these classes run it
per batch and keep, per dataset index, the AUC -- and with ``keep_curves=True`` (default) the
whole curve: each stored row is ``[AUC, p_0, ..., p_n_steps]`` (float64), so ``compute()``
reduces column 0 and :meth:`mean_curve` the rest, both in dataset-index order (exact under
DDP). All updates must then share one curve length (same image size and step settings).

The perturbation forwards run on a cached :class:`~benchmark.explainers.fastpath.InferenceCopy`
of the model (batch-norm folded, channels-last; the same probabilities up to ~1e-6 relative)
unless ``fast=False``; ``compile=True`` also compiles that copy (``torch.compile``, one compiled
graph for every chunk; see the class).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from benchmark._utils import eval_mode
from benchmark.explainers.fastpath import InferenceCopy
from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import reduce_values
from benchmark.metrics.functional.insertion_deletion import (
    _check_positive_int,
    auc,
    curve_steps,
    deletion_curve,
    insertion_curve,
    rise_blur,
)

__all__ = ["Deletion", "Insertion"]

#: the curves' endpoint images, by name: shared by deletion and insertion within a batch
#: (a ``(1, C, H, W)`` image when it is the same for every image)
ENDPOINT_IMAGES: Dict[str, Callable[[Tensor], Tensor]] = {
    "image": lambda images: images, "zero": lambda images: torch.zeros_like(images[:1]), "blur": rise_blur}


class InferenceCopyRunner:
    """Mixin of the perturbation metrics: their forwards run on a cached BN-folded :class:`InferenceCopy` of the
    model (``fast``, optionally ``compile``d), rebuilt when the model changes and never pickled with the metric."""

    def _use_inference_copy(self, fast: bool, compile: bool) -> None:
        self.fast, self.compile = bool(fast), bool(compile)
        self._inference_copy: Optional[InferenceCopy] = None

    def _runner(self, model: nn.Module):
        if not self.fast:
            return model
        if self._inference_copy is None or self._inference_copy.model is not model:
            # rebuilt by itself when the weights change
            self._inference_copy = InferenceCopy(model, compile=self.compile)
        return self._inference_copy

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_inference_copy"] = None  # a cache holding the model: not copied nor pickled with the metric
        return state


class _CausalMetric(InferenceCopyRunner, PerSampleMetric):
    needs = frozenset({"model"})
    passes_modelled = True  # n_steps - 1 forwards per curve, the endpoints shared per batch
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, pixels_per_step: Optional[int] = None, steps: Optional[int] = None, chunk_size: int = 64,
                 keep_curves: bool = True, fast: bool = True, compile: bool = False, nan_policy: str = "omit",
                 **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        if pixels_per_step is not None and steps is not None:
            raise ValueError(f"Expected at most one of `pixels_per_step` and `steps`, but got {pixels_per_step} "
                             f"and {steps}.")
        if pixels_per_step is not None:
            _check_positive_int(pixels_per_step, "pixels_per_step")
        self.pixels_per_step = pixels_per_step
        self.steps = None if steps is None else _check_positive_int(steps, "steps")
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")
        self.keep_curves = bool(keep_curves)
        self._use_inference_copy(fast, compile)

    def _curve(self, model, images: Tensor, saliency: Tensor, targets: Tensor, endpoints=None) -> Tensor:
        raise NotImplementedError

    def modelled_passes(self, image_hw: Tuple[int, int], n_methods: int) -> float:
        """The curve's inner points (its endpoints are computed once per batch), plus this method's share of a
        start image that depends on the batch, not on the map (insertion's blur); a constant one (deletion's
        zero image) is one value per backbone.

        Examples:
            >>> Deletion(steps=16).modelled_passes((32, 32), 4), Insertion(steps=16).modelled_passes((32, 32), 4)
            (15.0, 15.25)
        """
        inner = curve_steps(*image_hw, self.pixels_per_step, self.steps) - 1
        return float(inner) + (1.0 / n_methods if "blur" in self.endpoints else 0.0)

    #: the curve's first and last images, named in :data:`ENDPOINT_IMAGES`
    endpoints: Tuple[str, str] = ("image", "image")

    @property
    def endpoint_key(self) -> tuple:
        """What the endpoint probabilities depend on beyond the batch: metrics with equal keys can share them."""
        return type(self).__name__, self.fast, self.compile

    def endpoint_probs(self, model: nn.Module, images: Tensor, memo: Optional[dict] = None) -> Tuple[Tensor, Tensor]:
        """``(B or 1, K)`` float64 class probabilities on the curve's first and last images, run as the curve runs
        them (the module computes them once per batch for every method: :meth:`update`'s ``endpoints``); ``memo``
        shares them between metrics by name (the image itself starts the deletion curve and ends the insertion
        curve)."""
        runner, memo = self._runner(model), {} if memo is None else memo
        with eval_mode(model), torch.inference_mode():
            for name in self.endpoints:
                if (name, self.fast, self.compile) not in memo:
                    part = ENDPOINT_IMAGES[name](images)
                    memo[name, self.fast, self.compile] = torch.cat(
                        [runner(c).double().softmax(dim=1) for c in part.split(self.chunk_size)])
        first, last = (memo[name, self.fast, self.compile] for name in self.endpoints)
        return first, last

    def update(self, model: nn.Module, images: Tensor, saliency: Tensor, targets: Tensor,
               indices: Optional[Tensor] = None, endpoints: Optional[Tuple[Tensor, Tensor]] = None) -> None:
        """Run the perturbation curves of a batch and store the per-sample AUCs (and curves); ``endpoints``: the
        probabilities of :meth:`endpoint_probs` for this batch, already known (no forward for those points)."""
        if endpoints is not None:  # (B or 1, K) probabilities -> (B,) of the targets
            endpoints = tuple(e.expand(len(images), -1).gather(1, targets.to(e.device)[:, None].long()).squeeze(1)
                              for e in endpoints)
        curves = self._curve(self._runner(model), images, saliency, targets, endpoints)
        scores = auc(curves)
        if self.keep_curves:
            values = torch.cat([scores[:, None], curves], dim=1)
            if isinstance(self.values, list) and self.values and self.values[-1].shape[1] != values.shape[1]:
                raise ValueError(f"Expected curves of {self.values[-1].shape[1] - 1} points as in the earlier "
                                 f"updates (keep_curves=True), but got {curves.shape[1]}: same image size and "
                                 "steps for every batch, or keep_curves=False.")
        else:
            values = scores
        self.store(values, indices)

    def update_from(self, inputs: MetricInputs) -> None:
        if inputs.model is None:
            raise ValueError(f"{type(self).__name__} needs `inputs.model` (its `needs` lists 'model').")
        known = (inputs.extra or {}).get("curve_endpoints", {}).get(self.endpoint_key)
        self.update(inputs.model, inputs.images, inputs.saliency, inputs.targets, inputs.indices, known)

    def reduce(self, values: Tensor) -> Tensor:
        return reduce_values(values[:, 0] if values.ndim == 2 else values, "mean", self.nan_policy)

    def mean_curve(self) -> Tensor:
        """``(n_steps + 1,)`` mean probability at each step, in dataset-index order (float64).

        Samples with an undefined (NaN) curve follow ``nan_policy``. Needs ``keep_curves=True``.
        """
        if not self.keep_curves:
            raise ValueError(f"{type(self).__name__}.mean_curve() needs keep_curves=True.")
        return reduce_values(self.sorted_values()[1][:, 1:], "mean", self.nan_policy)


class Deletion(_CausalMetric):
    """Deletion AUC (RISE, Petsiuk et al. 2018): most salient pixels replaced by 0 first; lower is better.

    ``AUC = (sum_k p_k - p_0 / 2 - p_last / 2) / n_steps`` with ``p_k`` the softmax probability of
    the target after ``min(k n, HW)`` pixels are deleted (see
    :func:`~benchmark.metrics.functional.insertion_deletion.deletion_curve`).

    Args:
        pixels_per_step: ``n``; default the image width (RISE: 224 on 224 x 224).
        steps: alternatively ``n = ceil(HW / steps)``.
        chunk_size: perturbed images per forward.
        keep_curves: also store each curve, for :meth:`mean_curve`.
        fast: run the perturbation forwards on a cached ``InferenceCopy`` of the model.
        compile: also :func:`torch.compile` that copy (pays on long runs of large models).
        nan_policy: NaN maps give NaN values: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> metric = Deletion(pixels_per_step=1, fast=False)
        >>> metric.update(model, torch.ones(1, 1, 2, 2), torch.tensor([[[0.2, 1.0], [0.6, 0.4]]]), torch.tensor([0]))
        >>> metric.compute(), metric.mean_curve()
        (tensor(0.8264, dtype=torch.float64), tensor([0.9820, 0.9526, 0.8808, 0.7311, 0.5000], dtype=torch.float64))
    """

    higher_is_better = False

    def _curve(self, model, images: Tensor, saliency: Tensor, targets: Tensor, endpoints=None) -> Tensor:
        return deletion_curve(model, images, saliency, targets, self.pixels_per_step, self.steps, self.chunk_size,
                              endpoints)

    endpoints = ("image", "zero")  # every pixel deleted: the substrate 0


class Insertion(_CausalMetric):
    """Insertion AUC (RISE, Petsiuk et al. 2018): pixels restored onto a blurred copy; higher is better.

    As :class:`Deletion`, with ``p_k`` the probability after the first ``min(k n, HW)`` pixels of
    the image are put back onto RISE's blur (11 x 11 Gaussian, sigma 5, zero padding; see
    :func:`~benchmark.metrics.functional.insertion_deletion.insertion_curve`).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> metric = Insertion(pixels_per_step=1, fast=False)
        >>> metric.update(model, torch.ones(1, 1, 2, 2), torch.tensor([[[0.2, 1.0], [0.6, 0.4]]]), torch.tensor([0]))
        >>> metric.compute()
        tensor(0.8380, dtype=torch.float64)
    """

    higher_is_better = True

    def _curve(self, model, images: Tensor, saliency: Tensor, targets: Tensor, endpoints=None) -> Tensor:
        return insertion_curve(model, images, saliency, targets, self.pixels_per_step, self.steps, self.chunk_size,
                               endpoints=endpoints)

    endpoints = ("blur", "image")  # RISE's blur (11 x 11, sigma 5); every pixel restored: the image
