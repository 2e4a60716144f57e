"""Centre baseline (TorchRay's centre baseline for the pointing game, Zhang et al. 2018).

A Gaussian centred on the image, ``exp(-d^2 / (2 (sigma * min(H, W))^2))`` with ``d`` the
distance of a pixel centre to the image centre ``((H-1)/2, (W-1)/2)``. Its maximum is the
centre point, which is all the pointing game reads; the spread makes it usable by the metrics
that read the whole map. Independent of the model and of the class.
"""
from typing import Optional

import torch
from torch import Tensor

from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.registry import register_explainer


@register_explainer
class CenterCAM(BaseExplainer):
    """Centre: a centred Gaussian, sigma a fraction of the shorter side (sanity baseline).

    Examples:
        >>> maps = CenterCAM(torch.nn.Identity(), sigma=0.5)(torch.zeros(1, 3, 3, 3))
        >>> maps[0, 1, 1].item(), round(maps[0, 0, 1].item(), 4)
        (1.0, 0.4447)
    """

    name = "center"
    uses_layer = False
    uses_gradients = False
    class_independent = True

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), sigma: float = 0.25) -> None:
        if not sigma > 0:
            raise ValueError(f"Expected `sigma` > 0, but got {sigma!r}.")
        super().__init__(model, target_layer, input_size)
        self.sigma = float(sigma)

    def raw_maps(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor]) -> Tensor:
        batch, _, height, width = images.shape
        ys = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
        xs = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
        dist2 = ys[:, None] ** 2 + xs[None, :] ** 2
        spread = self.sigma * min(height, width)
        gauss = torch.exp(-dist2 / (2 * spread ** 2))
        return gauss.to(images).expand(batch, height, width)
