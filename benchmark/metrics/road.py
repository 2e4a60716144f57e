"""ROAD MoRF and LeRF (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
ICML 2022) as per-sample TorchMetrics classes.

The maths -- noisy linear imputation, the removal orders, the conventions and how they differ from the
authors' code and pytorch-grad-cam -- lives in :mod:`benchmark.metrics.functional.road`. Each stored row is
``[ROAD, p_q1, ..., p_qP]`` (float64): the mean over the percentages, then the class probability at each
one, so ``compute()`` reduces column 0 and :meth:`mean_curve` the rest, in dataset-index order. The noise
is seeded per sample by its dataset index: 1 and N processes, any batching, give the same rows.

Opt-in (``in_default_run = False``): each metric costs ``P`` (9) extra forwards per image plus ``P`` sparse
LU factorisations on the CPU (~1.2 s per 224 x 224 image and metric, one thread); name them, e.g.
``--metrics+=[road_morf, road_lerf]``.
"""
from __future__ import annotations

from typing import ClassVar, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from benchmark.metrics.base import MetricInputs, PerSampleMetric
from benchmark.metrics.functional._common import check_choice, reduce_values
from benchmark.metrics.functional.fgsm import IMAGENET_STD, channel_values
from benchmark.metrics.functional.insertion_deletion import _check_positive_int
from benchmark.metrics.functional.road import PERCENTILES, REMOVALS, _check_percentiles, _noise_scale, road_curve
from benchmark.metrics.insertion_deletion import InferenceCopyRunner

__all__ = ["ROADLeRF", "ROADMoRF"]


class _ROAD(InferenceCopyRunner, PerSampleMetric):
    needs = frozenset({"model"})
    in_default_run = False  # P forwards + P sparse solves per image: opt in by name
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0
    order: ClassVar[str] = "morf"

    def __init__(self, percentiles: Sequence[float] = PERCENTILES, noise: float = 0.01,
                 std: Union[float, Sequence[float]] = IMAGENET_STD, seed: int = 0, removal: str = "rank",
                 chunk_size: int = 64, fast: bool = True, compile: bool = False, nan_policy: str = "omit",
                 **kwargs) -> None:
        super().__init__(nan_policy=nan_policy, **kwargs)
        self.percentiles = [float(q) for q in _check_percentiles(percentiles)]
        _noise_scale(noise, 1.0, 1)  # checks noise
        self.noise = float(noise)
        self.std = channel_values(std, "std", positive=True)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Expected `seed` to be an int >= 0, but got {seed!r}.")
        self.seed = seed
        self.removal = check_choice(removal, "removal", REMOVALS)
        self.chunk_size = _check_positive_int(chunk_size, "chunk_size")
        self._use_inference_copy(fast, compile)

    def update(self, model: nn.Module, images: Tensor, saliency: Tensor, targets: Tensor,
               indices: Optional[Tensor] = None) -> None:
        """Impute and score a batch; store per sample ``[mean, p_q1, ..., p_qP]`` (NaN for a NaN map)."""
        curves = road_curve(self._runner(model), images, saliency, targets, self.order, self.percentiles,
                            self.noise, self.std, indices, self.seed, self.removal, self.chunk_size)
        self.store(torch.cat([curves.mean(dim=1, keepdim=True), curves], dim=1), indices)

    def update_from(self, inputs: MetricInputs) -> None:
        """Use the module's model, images, maps, targets and dataset indices."""
        if inputs.model is None:
            raise ValueError(f"{type(self).__name__} needs `inputs.model` (its `needs` lists 'model').")
        self.update(inputs.model, inputs.images, inputs.saliency, inputs.targets, inputs.indices)

    def reduce(self, values: Tensor) -> Tensor:
        """The mean over samples (``nan_policy``) of the per-sample means over percentages."""
        return reduce_values(values[:, 0], "mean", self.nan_policy)

    def mean_curve(self) -> Tensor:
        """``(P,)`` mean probability at each percentage, in dataset-index order (float64)."""
        return reduce_values(self.sorted_values()[1][:, 1:], "mean", self.nan_policy)


class ROADMoRF(_ROAD):
    """ROAD MoRF (Rong et al., ICML 2022): mean probability, most relevant pixels imputed first; lower is better.

    ``MoRF = (1 / P) sum_q softmax(f(x_q))_c``, ``x_q`` = ``x`` with its ``q`` % most relevant pixels filled by
    noisy linear imputation, ``q = 10, 20, ..., 90`` (see :mod:`benchmark.metrics.functional.road`).

    Args:
        percentiles: the percentages ``q`` of pixels removed, in ``(0, 100)``.
        noise: the imputation noise std in pixel units (paper: 0.01); 0 for none.
        std: the model's input normalisation std, which scales the noise into the inputs' space (ImageNet's).
        seed: the noise seed (each sample's generator: ``(seed, dataset index)``).
        removal: ``"rank"`` (the paper's ``floor(q HW / 100)`` pixels) or ``"threshold"`` (pytorch-grad-cam's
            percentile threshold).
        chunk_size: imputed images per forward.
        fast: run the forwards on a cached ``InferenceCopy`` of the model.
        compile: also :func:`torch.compile` that copy.
        nan_policy: NaN maps give NaN rows: ``"omit"`` (default), ``"zero"``, ``"propagate"``.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> metric = ROADMoRF(percentiles=[25, 50, 75], noise=0.0, fast=False)
        >>> images, targets = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]]), torch.tensor([0])
        >>> metric.update(model, images, torch.tensor([[[0.0, 1.0], [0.5, 0.2]]]), targets)  # misses the 4: bad
        >>> metric.compute(), metric.mean_curve()
        (tensor(0.9987, dtype=torch.float64), tensor([0.9963, 0.9997, 1.0000], dtype=torch.float64))
    """

    higher_is_better = False
    order = "morf"


class ROADLeRF(_ROAD):
    """ROAD LeRF (Rong et al., ICML 2022): mean probability, least relevant pixels imputed first; higher is better.

    ``LeRF = (1 / P) sum_q softmax(f(x_q))_c``, ``x_q`` = ``x`` with its ``q`` % least relevant pixels filled by
    noisy linear imputation; arguments as :class:`ROADMoRF`.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4])), model[1].bias.data.zero_()
        >>> metric = ROADLeRF(percentiles=[25, 50, 75], noise=0.0, fast=False)
        >>> metric.update(model, torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]]), torch.tensor([[[1.0, 0.0], [0.5, 0.2]]]),
        ...               torch.tensor([0]))
        >>> metric.compute()
        tensor(0.9987, dtype=torch.float64)
    """

    higher_is_better = True
    order = "lerf"
