"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, "Full-Gradient Representation for Neural Network Visualization").

The full-gradient decomposition of the class logit, ``f(x) = <df/dx, x> + sum_l <df/dz_l, b_l>`` (exact for
piecewise-linear networks with biases, batch norm in eval mode included: completeness), gives the map
``S = psi(df/dx * x) + sum_{l, c} psi(df/dz_l * b_l)_c``: ``z_l`` the output of every convolution with a bias and
every batch norm (its effective bias ``beta - mu gamma / sqrt(var + eps)``), ``psi`` the absolute value,
rescaled to ``[0, 1]`` and bilinearly upsampled to the image. Conventions, both named:

* ``convention="authors"`` (default; idiap/fullgrad-saliency): one rescaling over all channels of a term, then
  ``align_corners=True`` upsampling, then the sum over channels; the authors' ``+ 1e-6`` in the rescaling's
  denominator is dropped (as the other methods here: an all-zero term stays zero);
* ``convention="pytorch-grad-cam"``: each channel rescaled on its own, half-pixel (OpenCV) upsampling.

Fully-connected layers' bias-gradients complete the decomposition but have no spatial extent and are left out
of the map, as in both codes. One forward and one backward to the input. Hooks return a copy of each layer's
output, so in-place operations after it (``ReLU(inplace=True)``) never change the gradient taken.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark._utils import check_choice
from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.registry import register_explainer

CONVENTIONS = ("authors", "pytorch-grad-cam")


def effective_bias(module: nn.Module) -> Tensor:
    """The bias of a convolution or linear layer; a batch norm's ``beta - mu gamma / sqrt(var + eps)``."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        weight = module.weight if module.weight is not None else torch.ones_like(module.running_var)
        bias = module.bias if module.bias is not None else torch.zeros_like(module.running_var)
        return (bias - module.running_mean * weight / torch.sqrt(module.running_var + module.eps)).detach()
    return module.bias.detach()


def _rescale(x: Tensor, dims: Tuple[int, ...]) -> Tensor:
    """``|x|`` min-max rescaled to ``[0, 1]`` over ``dims``; an all-constant slice becomes 0."""
    x = x.abs()
    x = x - x.amin(dim=dims, keepdim=True)
    top = x.amax(dim=dims, keepdim=True)
    return torch.where(top > 0, x / top.where(top > 0, 1.0), torch.zeros_like(x))


@register_explainer
class FullGrad(BaseExplainer):
    """FullGrad: input-gradient x input plus every layer's bias-gradients, rescaled and summed.

    Examples:
        >>> from torchvision.models import resnet18
        >>> FullGrad(resnet18(num_classes=10), input_size=(3, 32, 32))(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    name = "fullgrad"
    uses_layer = False
    uses_gradients = False
    in_default_run = False  # issue 19's methods run when named until the default run's budget is re-measured

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), convention: str = "authors", *,
                 layout=None) -> None:
        super().__init__(model, target_layer, input_size, layout=layout)
        self.convention = check_choice(convention, "convention", CONVENTIONS)

    def full_gradients(self, images: Tensor, targets) -> Tuple[Tensor, List[Tensor], Tensor]:
        """``(df/dx * x, [df/dz_l * b_l for every layer with a bias, linear layers included], logits)``."""
        kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
        outputs: List[Tensor] = []
        biases: List[Tensor] = []

        def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            outputs.append(output)
            biases.append(effective_bias(module))
            return output.clone()

        handles = [m.register_forward_hook(hook) for m in self.model.modules()
                   if isinstance(m, kinds) and (getattr(m, "bias", None) is not None or isinstance(m, kinds[2]))]
        try:
            with torch.enable_grad():
                x = images.detach().requires_grad_(True)
                logits = self._check_logits(self.model(x), images)
                targets = self._check_classes(targets, logits)
                grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), [x, *outputs],
                                            allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        terms = [g * b.view(1, -1, *([1] * (g.ndim - 2))) for g, b in zip(grads[1:], biases) if g is not None]
        return (grads[0] * x).detach(), [t.detach() for t in terms], logits.detach()

    def raw_maps(self, images, targets, indices) -> Tensor:
        input_term, terms, _ = self.full_gradients(images, targets)
        authors = self.convention == "authors"
        dims = (1, 2, 3) if authors else (2, 3)
        cam = _rescale(input_term, dims).sum(dim=1)
        for term in (t for t in terms if t.ndim == 4):
            scaled = F.interpolate(_rescale(term, dims), size=images.shape[-2:], mode="bilinear",
                                   align_corners=authors)
            cam = cam + scaled.sum(dim=1)
        return cam
