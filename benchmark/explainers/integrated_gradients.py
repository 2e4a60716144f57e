"""Integrated Gradients (Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017).

``IG_i(x) = (x_i - x'_i) * integral_0^1 dS_c(x' + a (x - x')) / dx_i da`` with a constant baseline
``x'`` (``baseline``, in the model's normalised input space: 0 = the dataset's mean colour), the
integral in ``steps`` points by captum's :class:`~captum.attr.IntegratedGradients` (``method``: its
``"gausslegendre"`` default, or ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``),
evaluated ``chunk_size`` inputs at a time. captum's ``"riemann_trapezoid"`` is refused: its step
sizes sum to ``(steps - 1) / steps``, not 1 (endpoints at 0 and 1 with spacing ``1 / steps``), so its
attributions are short of completeness by that factor (captum 0.9.0). Channels are reduced by
``reduction`` (default ``abs_sum``; ``sum`` keeps completeness: the map sums to ``S_c(x) - S_c(x')``).
"""
from typing import Optional

from captum.attr import IntegratedGradients as _CaptumIG
from torch import Tensor

from benchmark._utils import check_choice, check_positive_int
from benchmark.explainers.attribution import AttributionExplainer
from benchmark.explainers.registry import register_explainer

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle")


@register_explainer
class IntegratedGradients(AttributionExplainer):
    """Integrated Gradients from a constant baseline (captum), path integral in ``steps`` points.

    Examples:
        >>> import torch
        >>> linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 1, bias=False))
        >>> _ = linear[1].weight.data.copy_(torch.tensor([[3.0, -1.0]]))
        >>> ig = IntegratedGradients(linear, input_size=(1, 1, 2), steps=4)
        >>> ig.attribute(torch.tensor([[[[2.0, 5.0]]]]), torch.tensor([0]), None)  # (x - 0) * w, exactly
        tensor([[[[ 6., -5.]]]])
    """

    name = "integratedgradients"

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), steps: int = 50, baseline: float = 0.0,
                 method: str = "gausslegendre", chunk_size: int = 64, reduction: Optional[str] = None) -> None:
        check_positive_int(steps, "steps"), check_positive_int(chunk_size, "chunk_size")
        super().__init__(model, target_layer, input_size, reduction)
        self.steps, self.baseline, self.chunk_size = steps, float(baseline), chunk_size
        self.method = check_choice(method, "method", METHODS)

    def attribute(self, images: Tensor, targets: Tensor, indices: Optional[Tensor]) -> Tensor:
        return _CaptumIG(self.model).attribute(images, baselines=self.baseline, target=targets, n_steps=self.steps,
                                               method=self.method, internal_batch_size=self.chunk_size)
