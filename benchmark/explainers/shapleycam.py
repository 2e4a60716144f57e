"""Shapley-CAM (Cai et al., 2025, "CAMs as Shapley Value-based Explainers"; the authors' code in pytorch-grad-cam).

A second-order estimate of each activation's Shapley value: the channel weights are the spatial mean of
``g - H A / 2``, with ``g = dS/dA`` and ``H A`` the Hessian-vector product of the score with the activations
(one double backward, ``create_graph`` through the layers after the target), ``cam = sum_k w_k A_k``. The score
``S`` is the paper's ReST, the residual softmax target ``y_c - CE(y, c) = y_c + log softmax(y)_c``
(``score="rest"``, default; pytorch-grad-cam's ``ClassifierOutputReST``), or the logit (``score="logit"``): after
a piecewise-linear head the logit's Hessian is zero and Shapley-CAM is Grad-CAM. One forward, one backward and
one Hessian-vector product; attention after the target layer runs on PyTorch's math kernel (the fused ones have no
double backward), so vision transformers work through the layout adapter.
"""
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmark._utils import check_choice
from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer

SCORES = ("rest", "logit")


def class_score(logits: Tensor, targets: Tensor, score: str = "rest") -> Tensor:
    """``(B,)`` scores of ``targets``: ReST ``y_c + log softmax(y)_c`` or the logit ``y_c``.

    Examples:
        >>> class_score(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))  # 0 + log(1/2)
        tensor([-0.6931])
    """
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    if check_choice(score, "score", SCORES) == "logit":
        return picked
    return picked + F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1).to(picked.dtype)


@register_explainer
class ShapleyCAM(BaseExplainer):
    """Shapley-CAM: channel weights = spatial mean of the gradient minus half the Hessian-activation product.

    Examples:
        >>> from torchvision.models import resnet18
        >>> ShapleyCAM(resnet18(num_classes=10))(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    name = "shapleycam"

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), score: str = "rest", *,
                 layout=None) -> None:
        super().__init__(model, target_layer, input_size, layout=layout)
        self.score = check_choice(score, "score", SCORES)

    def tail_context(self):
        # the fused scaled-dot-product attention kernels have no double backward; the math kernel has. The layers
        # before the target run without graph, on the fused kernels (the activations every other method sees)
        return sdpa_kernel(SDPBackend.MATH)

    def score_gradients(self, logits: Tensor, targets: Tensor, activations: Tensor) -> Tensor:
        """``g - H A / 2`` of the score (the base's ``gradients`` for :meth:`weights`)."""
        grads = torch.autograd.grad(class_score(logits, targets, self.score).sum(), activations, create_graph=True)[0]
        hvp = None
        if grads.requires_grad:  # else the gradient does not depend on the activations: H = 0
            hvp = torch.autograd.grad(grads, activations, grad_outputs=activations.detach(), allow_unused=True)[0]
        return grads.detach() if hvp is None else grads.detach() - 0.5 * hvp

    def weights(self, inputs: CAMInputs) -> Tensor:
        return inputs.gradients.mean(dim=(2, 3), keepdim=True)
