"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020).

The projection of the target layer's activations on their first principal component: with
``M`` the ``(h*w, C)`` matrix of activations and ``M = U S V^T`` its SVD, ``cam = M v_1``.
As in the paper, ``M`` is not mean-centred. The SVD's sign is arbitrary; it is fixed so that
the projection sums to a non-negative value (for non-negative activations ``v_1`` is then the
non-negative Perron vector). Class-agnostic: ``targets`` do not change the map.
"""
import torch
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer


@register_explainer
class EigenCAM(BaseExplainer):
    """Eigen-CAM: activations projected on their first principal component (class-agnostic).

    Examples:
        >>> from torchvision.models import resnet18
        >>> EigenCAM(resnet18(num_classes=10))(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    uses_gradients = False

    def weights(self, inputs: CAMInputs) -> Tensor:
        matrix = inputs.activations.flatten(2).transpose(1, 2).double()  # (B, hw, C)
        v = torch.linalg.svd(matrix, full_matrices=False).Vh[:, 0, :]  # (B, C)
        sign = torch.where((matrix @ v.unsqueeze(2)).sum(dim=(1, 2)) < 0, -1.0, 1.0).to(v)
        v = v * sign[:, None]
        return v.to(inputs.activations.dtype).view(*v.shape, 1, 1)
