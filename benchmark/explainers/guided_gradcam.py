"""Guided Grad-CAM and Guided Grad-CAM++ (Selvaraju et al., ICCV 2017, Sec. 3; Chattopadhyay et al., WACV 2018).

The element-wise product of Guided Backpropagation (captum) with the class's CAM, ReLU'd and
bilinearly upsampled to the input size: ``G_c = GBP_c * up(ReLU(cam_c))``, per input channel, then
reduced over channels by ``reduction`` (default ``abs_sum``: since the CAM is >= 0, the map is
``up(ReLU(cam_c)) * sum_ch |GBP_c|``). The CAM is our Grad-CAM (Eq. 1-2) or Grad-CAM++ (Eq. 19)
of the target layer before the min-max normalisation, so the product does not depend on an
arbitrary offset; the final map is normalised like every other.
"""
from typing import Optional

import torch.nn.functional as F
from captum.attr import GuidedBackprop as _CaptumGuidedBackprop
from torch import Tensor

from benchmark.explainers.attribution import AttributionExplainer, quiet_captum
from benchmark.explainers.gradcam import GradCAM
from benchmark.explainers.gradcampp import GradCAMpp
from benchmark.explainers.registry import register_explainer


@register_explainer
class GuidedGradCAM(AttributionExplainer):
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM.

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> explainer = GuidedGradCAM(resnet18(num_classes=4), target_layer="layer4", input_size=(3, 64, 64))
        >>> explainer(torch.randn(1, 3, 64, 64), torch.tensor([2])).shape
        torch.Size([1, 64, 64])
    """

    name = "guidedgradcam"
    uses_layer = True
    cam_class = GradCAM

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), reduction: Optional[str] = None, *,
                 layout: Optional[str] = None) -> None:
        super().__init__(model, target_layer, input_size, reduction, layout=layout)
        self.cam = self.cam_class(model, self.target_layer, input_size, layout=self.layout)

    def attribute(self, images: Tensor, targets: Tensor, indices: Optional[Tensor]) -> Tensor:
        cam = self.cam.raw_maps(images, targets, indices).detach().relu().unsqueeze(1)
        cam = F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
        with quiet_captum():
            guided = _CaptumGuidedBackprop(self.model).attribute(images.requires_grad_(), target=targets)
        return guided * cam


@register_explainer
class GuidedGradCAMpp(GuidedGradCAM):
    """Guided Grad-CAM++: guided backpropagation times the upsampled Grad-CAM++ (Eq. 19).

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> GuidedGradCAMpp(resnet18(num_classes=4), input_size=(3, 64, 64)).cam
        GradCAMpp(target_layer='layer4')
    """

    name = "guidedgradcampp"
    cam_class = GradCAMpp
