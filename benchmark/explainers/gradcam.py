"""Grad-CAM (Selvaraju et al., ICCV 2017, Eq. 1-2).

``w_k = 1/Z sum_ij dS_c/dA_k(ij)``, ``cam = ReLU(sum_k w_k A_k)``, with ``S_c`` the class logit.
"""
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer


@register_explainer
class GradCAM(BaseExplainer):
    """Grad-CAM: channel weights = spatial mean of the class-score gradients.

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> explainer = GradCAM(resnet18(num_classes=10).eval(), target_layer="layer4")
        >>> explainer(torch.randn(2, 3, 64, 64), torch.tensor([1, 7])).shape
        torch.Size([2, 64, 64])
    """

    def weights(self, inputs: CAMInputs) -> Tensor:
        return inputs.gradients.mean(dim=(2, 3), keepdim=True)
