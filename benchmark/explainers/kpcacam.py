"""KPCA-CAM (Karmani et al., 2024): the first kernel principal component of the target layer's activations.

The ``h*w`` positions are the samples, the ``C`` channels their features. As the authors' code in pytorch-grad-cam
(``get_2d_projection_kernel`` with scikit-learn's ``KernelPCA``): the columns are centred over the positions, the
kernel matrix ``K_ij = k(x_i, x_j)`` is double-centred, and the map is the top eigenvector ``alpha`` of the centred
``K`` times ``sqrt(lambda)`` (the positions' coordinates on the first component), its sign chosen so that the entry
of largest magnitude is positive (scikit-learn's ``svd_flip``). Kernels, with scikit-learn's defaults:
``"sigmoid"`` (default) ``tanh(gamma <x, y> + coef0)``, ``"rbf"`` ``exp(-gamma |x - y|^2)``, ``"poly"``
``(gamma <x, y> + coef0)^degree``, ``"linear"`` (Eigen-CAM with centring), ``"cosine"``; ``gamma`` defaults to
``1 / C``, ``coef0`` to 1, ``degree`` to 3. Float64; class-agnostic, one forward pass.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark._utils import check_choice
from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.registry import register_explainer

KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def kernel_matrix(x: Tensor, kernel: str, gamma: float, coef0: float = 1.0, degree: int = 3) -> Tensor:
    """``(B, n, n)`` kernel between the rows of ``x`` ``(B, n, C)``, as ``sklearn.metrics.pairwise_kernels``."""
    gram = x @ x.transpose(1, 2)
    if kernel == "sigmoid":
        return torch.tanh(gamma * gram + coef0)
    if kernel == "poly":
        return (gamma * gram + coef0) ** degree
    if kernel == "rbf":
        sq = gram.diagonal(dim1=1, dim2=2)
        return torch.exp(-gamma * (sq[:, :, None] + sq[:, None, :] - 2 * gram).clamp(min=0))
    if kernel == "cosine":
        unit = F.normalize(x, dim=2)
        return unit @ unit.transpose(1, 2)
    return gram


@register_explainer
class KPCACAM(BaseExplainer):
    """KPCA-CAM: activations projected on their first kernel principal component (class-agnostic).

    Examples:
        >>> from torchvision.models import resnet18
        >>> KPCACAM(resnet18(num_classes=10), kernel="rbf")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    name = "kpcacam"
    in_default_run = False  # opt-in: the default run's budget (6 min) holds 14 methods; class-agnostic like Eigen-CAM
    uses_gradients = False
    class_independent = True

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), kernel: str = "sigmoid",
                 gamma: Optional[float] = None, coef0: float = 1.0, degree: int = 3, *, layout=None) -> None:
        super().__init__(model, target_layer, input_size, layout=layout)
        self.kernel = check_choice(kernel, "kernel", KERNELS)
        if gamma is not None and not gamma > 0:
            raise ValueError(f"Expected `gamma` to be None or > 0, but got {gamma!r}.")
        self.gamma, self.coef0, self.degree = gamma, float(coef0), int(degree)

    def raw_maps(self, images, targets, indices) -> Tensor:
        acts = self.forward_layer(images, targets, indices, False).activations
        batch, channels, height, width = acts.shape
        x = acts.flatten(2).transpose(1, 2).double()
        x = x - x.mean(dim=1, keepdim=True)
        k = kernel_matrix(x, self.kernel, self.gamma or 1.0 / channels, self.coef0, self.degree)
        k = k - k.mean(dim=1, keepdim=True) - k.mean(dim=2, keepdim=True) + k.mean(dim=(1, 2), keepdim=True)
        values, vectors = torch.linalg.eigh(k)  # ascending
        top = vectors[:, :, -1]
        sign = torch.sign(top.gather(1, top.abs().argmax(dim=1, keepdim=True)))
        projection = top * sign * values[:, -1:].clamp(min=0).sqrt()
        return projection.to(acts.dtype).view(batch, height, width)
