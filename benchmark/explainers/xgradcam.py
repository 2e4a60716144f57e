"""XGrad-CAM (Fu et al., BMVC 2020, Eq. 9).

``w_k = sum_ij (A_k(ij) / sum_ab A_k(ab)) dS_c/dA_k(ij)``; 0 for a channel whose activations
sum to 0 (no epsilon added).
"""
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer


@register_explainer
class XGradCAM(BaseExplainer):
    """XGrad-CAM: gradients weighted by the normalised activations (axiom-based Grad-CAM).

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> XGradCAM(resnet18(num_classes=10))(torch.randn(1, 3, 64, 64)).amax().item()
        1.0
    """

    def weights(self, inputs: CAMInputs) -> Tensor:
        total = inputs.activations.sum(dim=(2, 3), keepdim=True)
        numerator = (inputs.gradients * inputs.activations).sum(dim=(2, 3), keepdim=True)
        nonzero = total != 0
        return numerator / total.where(nonzero, 1.0) * nonzero
