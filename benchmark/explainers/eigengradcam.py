"""EigenGrad-CAM (pytorch-grad-cam's method: Eigen-CAM on gradient x activation).

The first principal component of the element-wise product of the class gradients and the activations,
``M = (dS_c/dA) * A`` as an ``(h*w, C)`` matrix: ``cam = M v_1``
(:func:`~benchmark.explainers.eigencam.first_component`). Class-discriminative through the gradient, unlike
Eigen-CAM. Conventions, both named:

* default ``center=False``: Eigen-CAM's paper (no mean-centring), sign such that the projection sums to >= 0;
* ``center=True``: pytorch-grad-cam's ``get_2d_projection`` (columns centred over the positions), with the sign
  that makes the largest magnitude positive. pytorch-grad-cam keeps LAPACK's sign, which is arbitrary (a map
  and its negation are equally likely, and a ReLU then keeps one or the other half); ours equals its map or its
  negation, to float rounding (tested).
"""
from torch import Tensor

from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.eigencam import first_component
from benchmark.explainers.registry import register_explainer


@register_explainer
class EigenGradCAM(BaseExplainer):
    """EigenGrad-CAM: gradient x activation projected on its first principal component.

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> EigenGradCAM(resnet18(num_classes=10), center=True)(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    #: opt-in: the default run's 6-minute budget holds 14 methods, and this principal-component method's pointing
    #: does not separate from the centre baseline's on the committed run
    in_default_run = False

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), center: bool = False, *,
                 layout=None) -> None:
        super().__init__(model, target_layer, input_size, layout=layout)
        self.center = bool(center)

    def raw_maps(self, images, targets, indices) -> Tensor:
        inputs = self.forward_layer(images, targets, indices, True)
        return first_component(inputs.gradients * inputs.activations, self.center)
