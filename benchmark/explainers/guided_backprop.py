"""Guided Backpropagation (Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR-W 2015).

The gradient of the target logit w.r.t. the input, where every ReLU passes back only positive
gradients at positive inputs: ``R_l = 1[f_l > 0] * 1[R_{l+1} > 0] * R_{l+1}``. captum's
:class:`~captum.attr.GuidedBackprop` does it by hooking the model's ``nn.ReLU`` modules; ReLUs
applied functionally (``F.relu``, e.g. after DenseNet's ``features``) stay ordinary gradients.
Channels are reduced by ``reduction`` (default ``abs_sum``, see :mod:`benchmark.explainers.attribution`).
"""
from typing import Optional

from captum.attr import GuidedBackprop as _CaptumGuidedBackprop
from torch import Tensor

from benchmark.explainers.attribution import AttributionExplainer, quiet_captum
from benchmark.explainers.registry import register_explainer


@register_explainer
class GuidedBackprop(AttributionExplainer):
    """Guided Backpropagation: input gradients through ReLUs that pass positive signals only (captum).

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).requires_grad_(False)
        ...     _ = net[3].weight.copy_(torch.tensor([[2.0, -1.0]]))
        >>> x = torch.tensor([[[[1.0, 1.0]]]])  # both hidden units active; the negative weight is blocked
        >>> GuidedBackprop(net, input_size=(1, 1, 2)).attribute(x, torch.tensor([0]), None)
        tensor([[[[2., 0.]]]])
    """

    name = "guidedbackprop"

    def attribute(self, images: Tensor, targets: Tensor, indices: Optional[Tensor]) -> Tensor:
        with quiet_captum():
            return _CaptumGuidedBackprop(self.model).attribute(images.requires_grad_(), target=targets)
