"""Fake-CAM (Poppi et al., CVPRW 2021, Sec. 4).

A sanity baseline that ignores the model: every pixel ``1/N`` (N = H*W) except the top-left
one, which is 0. After the shared min-max normalisation: all ones, top-left 0. It scores a
near-zero Average Drop and near-100 Coherency, exposing metrics that reward it (Poppi Table 2).
"""
from typing import Optional

from torch import Tensor

from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.registry import register_explainer


@register_explainer
class FakeCAM(BaseExplainer):
    """Fake-CAM: 1/N everywhere but 0 at the top-left pixel (sanity baseline).

    Examples:
        >>> import torch
        >>> FakeCAM(torch.nn.Identity())(torch.zeros(1, 3, 2, 3))
        tensor([[[0., 1., 1.],
                 [1., 1., 1.]]])
    """

    uses_layer = False
    uses_gradients = False
    class_independent = True

    def raw_maps(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor]) -> Tensor:
        batch, _, height, width = images.shape
        maps = images.new_full((batch, height, width), 1.0 / (height * width))
        maps[:, 0, 0] = 0.0
        return maps
