"""HiResCAM (Draelos & Carin, 2020, Eq. 4).

Element-wise weights: ``cam = ReLU(sum_k dS_c/dA_k * A_k)`` -- Grad-CAM without the spatial
averaging of the gradients, so the map provably reflects the locations the score used.
"""
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer


@register_explainer
class HiResCAM(BaseExplainer):
    """HiResCAM: each activation weighted by its own gradient (no spatial averaging).

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> HiResCAM(resnet18(num_classes=10))(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def weights(self, inputs: CAMInputs) -> Tensor:
        return inputs.gradients
