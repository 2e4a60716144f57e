"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020).

The projection of the target layer's activations on their first principal component: with
``M`` the ``(h*w, C)`` matrix of activations and ``M = U S V^T`` its SVD, ``cam = M v_1``.
As in the paper, ``M`` is not mean-centred. The SVD's sign is arbitrary; it is fixed so that
the projection sums to a non-negative value (for non-negative activations ``v_1`` is then the
non-negative Perron vector). Class-agnostic: ``targets`` do not change the map.
"""
from typing import Tuple

import torch
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer

__all__ = ["EigenCAM", "first_component"]


def first_component(maps: Tensor, center: bool = False) -> Tensor:
    """Projection of each image's ``(h*w, C)`` matrix on its first principal direction, ``(B, h, w)``.

    ``center=False`` (Eigen-CAM's paper): the raw matrix; the sign makes the projection sum to >= 0.
    ``center=True`` (pytorch-grad-cam's ``get_2d_projection``): columns centred over the positions first; the
    projection then sums to 0, so the sign makes its largest magnitude positive (``|max| >= |min|``, Seg-Eigen-CAM
    Eq. 13). The SVD runs in float64.

    Examples:
        >>> first_component(torch.tensor([[[[1.0, 2.0]], [[2.0, 4.0]]]]))  # rank 1: |v| = (1, 2) / sqrt(5)
        tensor([[[2.2361, 4.4721]]])
        >>> first_component(torch.tensor([[[[1.0, 2.0, 6.0]]]]), center=True)
        tensor([[[-2., -1.,  3.]]])
    """
    batch, _, height, width = maps.shape
    projection, _ = _signed_first_direction(maps, center)
    return projection.to(maps.dtype).view(batch, height, width)


def _signed_first_direction(maps: Tensor, center: bool) -> Tuple[Tensor, Tensor]:
    """``(projection (B, hw), v (B, C))`` in float64, both with :func:`first_component`'s sign."""
    matrix = maps.flatten(2).transpose(1, 2).double()  # (B, hw, C)
    if center:
        matrix = matrix - matrix.mean(dim=1, keepdim=True)
    v = torch.linalg.svd(matrix, full_matrices=False).Vh[:, 0, :]  # (B, C)
    projection = (matrix @ v.unsqueeze(2)).squeeze(2)  # (B, hw)
    flip = ((projection.amax(dim=1) < -projection.amin(dim=1)) if center else projection.sum(dim=1) < 0)[:, None]
    return torch.where(flip, -projection, projection), torch.where(flip, -v, v)


@register_explainer
class EigenCAM(BaseExplainer):
    """Eigen-CAM: activations projected on their first principal component (class-agnostic).

    Examples:
        >>> from torchvision.models import resnet18
        >>> EigenCAM(resnet18(num_classes=10))(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    uses_gradients = False
    class_independent = True

    def weights(self, inputs: CAMInputs) -> Tensor:
        _, v = _signed_first_direction(inputs.activations, center=False)
        return v.to(inputs.activations.dtype).view(*v.shape, 1, 1)
