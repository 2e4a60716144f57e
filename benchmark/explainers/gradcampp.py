"""Grad-CAM++ (Chattopadhyay et al., WACV 2018), the closed form of Eq. 19.

For ``Y_c = exp(S_c)`` the higher derivatives reduce to powers of ``g = dS_c/dA``:

``alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3)`` (0 where the denominator is 0),
``w_k = sum_ij alpha_kij ReLU(g_kij)``.

No epsilon is added to the denominator (the ``grad-cam`` package adds 1e-6, which dominates
when gradients are small, e.g. g^2 ~ 1e-7 on random-init networks).
"""
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer


def gradcampp_weights(activations: Tensor, grad: Tensor, grad2: Tensor, grad3: Tensor) -> Tensor:
    """Eq. 19 channel weights from the gradient and its (possibly averaged) powers.

    Examples:
        >>> import torch
        >>> a, g = torch.ones(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]])
        >>> gradcampp_weights(a, g, g ** 2, g ** 3)  # alpha = 1 / (2 + 2) at the first pixel
        tensor([[[[0.2500]]]])
    """
    denominator = 2 * grad2 + activations.sum(dim=(2, 3), keepdim=True) * grad3
    nonzero = denominator != 0
    alpha = grad2 / denominator.where(nonzero, 1.0) * nonzero
    return (alpha * grad.relu()).sum(dim=(2, 3), keepdim=True)


@register_explainer
class GradCAMpp(BaseExplainer):
    """Grad-CAM++: pixel-weighted positive gradients, paper Eq. 19 exactly.

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> explainer = GradCAMpp(resnet18(num_classes=10), target_layer="layer3")
        >>> explainer(torch.randn(1, 3, 64, 64), torch.tensor([3])).shape
        torch.Size([1, 64, 64])
    """

    name = "gradcampp"

    def weights(self, inputs: CAMInputs) -> Tensor:
        g = inputs.gradients
        return gradcampp_weights(inputs.activations, g, g ** 2, g ** 3)
