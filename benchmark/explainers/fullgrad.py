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
of the map, as in both codes. Completeness is checked on every batch (as the authors' code asserts it): a model
where the full gradients do not sum to the logit (layer norm, attention, GELU / SiLU: a vision transformer) is
refused with an error, not given a map that is not FullGrad's. One forward and one backward to the input; each
term's channels are summed before the upsampling (which is linear), one map per layer instead of one per channel.
Hooks return a copy of each layer's output, so in-place operations after it (``ReLU(inplace=True)``) never change
the gradient taken.
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
    in_default_run = False  # refuses vision transformers (completeness fails), and the default run has one

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), convention: str = "authors", *,
                 layout=None) -> None:
        super().__init__(model, target_layer, input_size, layout=layout)
        self.convention = check_choice(convention, "convention", CONVENTIONS)

    def _check_completeness(self, input_term: Tensor, terms: List[Tensor], logits: Tensor, targets) -> None:
        """Refuse a model whose full gradients do not sum to the logit (the authors' code asserts it too): biases
        the decomposition cannot see (layer norm, attention, GELU / SiLU) make the map something else."""
        parts = [input_term.flatten(1).double(), *(t.flatten(1).double() for t in terms)]
        total = sum(p.sum(dim=1) for p in parts)
        scale = sum(p.abs().sum(dim=1) for p in parts)
        picked = logits.gather(1, self._check_classes(targets, logits)[:, None]).squeeze(1).double()
        gap = (total - picked).abs()
        if bool((gap > 1e-3 * scale + 1e-6).any()):
            worst = int(gap.argmax())
            raise ValueError(
                f"FullGrad's decomposition is incomplete on {type(self.model).__name__}: the full gradients sum to "
                f"{float(total[worst]):.6g}, the logit is {float(picked[worst]):.6g}. FullGrad is defined for "
                "piecewise-linear networks whose biases are in convolution, linear and batch-norm layers (ReLU "
                "CNNs); this model has others (layer norm, attention, GELU / SiLU). Use another method for it.")

    def full_gradients(self, images: Tensor, targets) -> Tuple[Tensor, List[Tensor], Tensor]:
        """``(df/dx * x, [df/dz_l * b_l for every layer with a bias, linear layers included], logits)``."""
        kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
        outputs: List[Tensor] = []
        biases: List[Tensor] = []

        def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            outputs.append(output)
            bias = effective_bias(module)  # along the channels (dim 1); a linear layer's along the last dim
            shape = [1] * output.ndim
            shape[-1 if isinstance(module, nn.Linear) else 1] = -1
            biases.append(bias.view(shape))
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
        terms = [g * b for g, b in zip(grads[1:], biases) if g is not None]
        return (grads[0] * x).detach(), [t.detach() for t in terms], logits.detach()

    def raw_maps(self, images, targets, indices) -> Tensor:
        input_term, terms, logits = self.full_gradients(images, targets)
        self._check_completeness(input_term, terms, logits, targets)
        authors = self.convention == "authors"
        dims = (1, 2, 3) if authors else (2, 3)
        cam = _rescale(input_term, dims).sum(dim=1)
        for term in (t for t in terms if t.ndim == 4):  # bilinear upsampling is linear: sum the channels first
            summed = _rescale(term, dims).sum(dim=1, keepdim=True)
            cam = cam + F.interpolate(summed, size=images.shape[-2:], mode="bilinear", align_corners=authors)[:, 0]
        return cam
