"""Gradient SHAP (Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017).

Expected gradients: ``phi_i = E[(x_i - x'_i) * dS_c(x'' ) / dx_i]`` over ``n_samples`` draws of a
baseline ``x'`` from ``baselines`` (constant images, in normalised input units: 0 = the mean colour),
a point ``x'' = x' + a (x + e - x')`` with ``a ~ U(0, 1)`` and noise ``e ~ N(0, stdevs^2)``
(captum's :class:`~captum.attr.GradientShap`). The draws of each sample are seeded by
``(seed, dataset index)`` -- captum draws from torch's and numpy's global generators, which are
seeded per sample and restored afterwards -- so maps do not depend on batching or the number of
processes. Channels are reduced by ``reduction`` (default ``abs_sum``).
"""
from typing import Optional, Sequence

import numpy as np
import torch
from captum.attr import GradientShap as _CaptumGradientShap
from torch import Tensor

from benchmark._utils import check_positive_int
from benchmark.explainers.attribution import AttributionExplainer
from benchmark.explainers.registry import register_explainer


@register_explainer
class GradientSHAP(AttributionExplainer):
    """Gradient SHAP: expected gradients over random baselines and path points (captum, seeded per sample).

    Examples:
        >>> linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 1, bias=False))
        >>> _ = linear[1].weight.data.copy_(torch.tensor([[3.0, -1.0]]))
        >>> shap = GradientSHAP(linear, input_size=(1, 1, 2), n_samples=3)
        >>> shap.attribute(torch.tensor([[[[2.0, 5.0]]]]), torch.tensor([0]), None)  # linear: (x - x') * w
        tensor([[[[ 6., -5.]]]])
    """

    name = "gradientshap"

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), n_samples: int = 20,
                 baselines: Sequence[float] = (0.0,), stdevs: float = 0.0, seed: int = 0,
                 reduction: Optional[str] = None) -> None:
        check_positive_int(n_samples, "n_samples")
        if not stdevs >= 0:
            raise ValueError(f"Expected `stdevs` >= 0, but got {stdevs!r}.")
        baselines = [float(b) for b in baselines]
        if not baselines:
            raise ValueError("Expected at least one baseline value in `baselines`, but got none.")
        super().__init__(model, target_layer, input_size, reduction)
        self.n_samples, self.baselines, self.stdevs, self.seed = n_samples, baselines, float(stdevs), int(seed)

    def attribute(self, images: Tensor, targets: Tensor, indices: Optional[Tensor]) -> Tensor:
        shap = _CaptumGradientShap(self.model)
        keys = indices.tolist() if indices is not None else range(len(images))
        out = []
        numpy_state = np.random.get_state()
        try:
            for i, key in enumerate(keys):
                sample_seed = self.seed * 1_000_003 + int(key)
                np.random.seed(sample_seed % 2 ** 32)
                with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
                    torch.manual_seed(sample_seed)
                    base = torch.tensor(self.baselines, dtype=images.dtype, device=images.device)
                    base = base.view(-1, 1, 1, 1).expand(-1, *images.shape[1:])
                    out.append(shap.attribute(images[i:i + 1], baselines=base, target=targets[i:i + 1],
                                              n_samples=self.n_samples, stdevs=self.stdevs))
        finally:
            np.random.set_state(numpy_state)
        return torch.cat(out)
