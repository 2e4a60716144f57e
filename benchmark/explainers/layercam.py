"""Layer-CAM (Jiang et al., IEEE TIP 2021, Eq. 5-6).

Element-wise weights: ``cam = ReLU(sum_k ReLU(dS_c/dA_k) * A_k)``.
"""
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer


@register_explainer
class LayerCAM(BaseExplainer):
    """Layer-CAM: each activation weighted by its own positive gradient.

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> LayerCAM(resnet18(num_classes=10), target_layer="layer2")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def weights(self, inputs: CAMInputs) -> Tensor:
        return inputs.gradients.relu()
