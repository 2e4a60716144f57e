"""Smooth Grad-CAM++ (Omeiza et al., 2019).

Grad-CAM++ (Eq. 19) with the gradient and its powers averaged over ``n_samples`` noisy copies
``x + N(0, sigma^2)`` of the input (SmoothGrad, Smilkov et al. 2017), applied to the clean
input's activations: ``alpha = E[g^2] / (2 E[g^2] + sum_ab A_ab E[g^3])``,
``w_k = sum_ij alpha ReLU(E[g])``. ``sigma`` is in the model's (normalised) input units.
Each sample's noise is drawn from a generator seeded by ``(seed, dataset index)`` when indices
are given (else the position in the batch), so maps do not depend on batching.
With ``sigma=0`` the method is Grad-CAM++ exactly.
"""
from typing import Optional

import torch
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.gradcampp import gradcampp_weights
from benchmark.explainers.registry import register_explainer


@register_explainer
class SmoothGradCAMpp(BaseExplainer):
    """Smooth Grad-CAM++: Grad-CAM++ with gradients averaged over noisy inputs (seeded).

    Examples:
        >>> from torchvision.models import resnet18
        >>> explainer = SmoothGradCAMpp(resnet18(num_classes=10), n_samples=2, sigma=0.2)
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.equal(explainer(x, indices=torch.tensor([5])), explainer(x, indices=torch.tensor([5])))
        True
    """

    name = "smoothgradcampp"
    uses_gradients = False  # the clean input's gradients are not used, only its activations

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), n_samples: int = 4,
                 sigma: float = 0.3, seed: int = 0, *, layout: Optional[str] = None) -> None:
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"Expected `n_samples` to be a positive int, but got {n_samples!r}.")
        if not sigma >= 0:
            raise ValueError(f"Expected `sigma` >= 0, but got {sigma!r}.")
        super().__init__(model, target_layer, input_size, layout=layout)
        self.n_samples, self.sigma, self.seed = n_samples, float(sigma), int(seed)

    def weights(self, inputs: CAMInputs) -> Tensor:
        images = inputs.images
        generators = self.sample_generators(inputs.indices, len(images), self.seed)
        g1 = g2 = g3 = 0
        for _ in range(self.n_samples):
            noise = torch.stack([torch.randn(images.shape[1:], generator=g) for g in generators])
            _, grad = self.layer_gradients(images + self.sigma * noise.to(images), inputs.targets)
            g1, g2, g3 = g1 + grad, g2 + grad ** 2, g3 + grad ** 3
        n = self.n_samples
        return gradcampp_weights(inputs.activations, g1 / n, g2 / n, g3 / n)
