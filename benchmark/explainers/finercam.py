"""Finer-CAM (Zhang et al., CVPR 2025, "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual
Explanation"): Grad-CAM of the target's score relative to its most similar classes.

The references ``d_1..d_T`` are the ``n_references`` classes whose logits are closest to the target's (target
excluded; ties to the lower class index). Grad-CAM's weights, the spatial mean of ``dS/dA``, are taken of
``S = y_c - alpha * 1/T sum_t y_dt`` (``weighting="mean"``, default, ``alpha`` 0.6). This is the paper's formula as
torch-cam writes it, and the "aggregate" setting (alpha 0.6, references 1-3) of the authors' first release. With
``weighting="softmax"`` (``alpha`` 1), ``S = sum_t p_dt (y_c - alpha y_dt) / (sum_t p_dt + 1e-9)`` with ``p``
the softmax probabilities, differentiated through ``p`` too. This is the authors' current code (Imageomics/Finer-CAM
``FinerWeightedTarget``) and pytorch-grad-cam's ``FinerCAM``. Each convention equals its peer (tested). One
forward and one backward, as Grad-CAM; token layers work through the layout adapter.
"""
from typing import Optional

import torch
from torch import Tensor

from benchmark._utils import check_choice
from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer

WEIGHTINGS = {"mean": 0.6, "softmax": 1.0}  # each convention's default alpha


def reference_classes(logits: Tensor, targets: Tensor, n_references: int) -> Tensor:
    """``(B, T)`` classes whose logits are closest to the target's, nearest first; the target excluded and ties
    broken towards the lower class index. ``T`` is at most the number of other classes.

    Examples:
        >>> reference_classes(torch.tensor([[0.0, 5.0, 4.0, 4.5, 6.0]]), torch.tensor([1]), 3).tolist()
        [[3, 2, 4]]
    """
    distance = (logits.detach() - logits.detach().gather(1, targets[:, None])).abs()
    distance = distance.scatter(1, targets[:, None], float("inf"))
    order = distance.sort(dim=1, stable=True).indices
    return order[:, :min(n_references, logits.shape[1] - 1)]


def finer_score(logits: Tensor, targets: Tensor, n_references: int = 3, alpha: float = 0.6,
                weighting: str = "mean") -> Tensor:
    """``(B,)`` Finer-CAM scores (differentiable in ``logits``).

    Examples:
        >>> finer_score(torch.tensor([[0.0, 5.0, 4.0]]), torch.tensor([1]), n_references=1, alpha=0.5)
        tensor([3.])
    """
    if logits.shape[1] < 2:
        raise ValueError(f"Finer-CAM compares the target with other classes, but the model has {logits.shape[1]}.")
    refs = reference_classes(logits, targets, n_references)
    target, others = logits.gather(1, targets[:, None]), logits.gather(1, refs)
    if check_choice(weighting, "weighting", tuple(WEIGHTINGS)) == "mean":
        return target.squeeze(1) - alpha * others.mean(dim=1)
    p = logits.softmax(dim=1).gather(1, refs)
    return (p * (target - alpha * others)).sum(dim=1) / (p.sum(dim=1) + 1e-9)


@register_explainer
class FinerCAM(BaseExplainer):
    """Finer-CAM: Grad-CAM weights of the target score minus its most similar classes' scores.

    Examples:
        >>> from torchvision.models import resnet18
        >>> FinerCAM(resnet18(num_classes=10))(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    name = "finercam"

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), n_references: int = 3,
                 alpha: Optional[float] = None, weighting: str = "mean", *, layout=None) -> None:
        if not isinstance(n_references, int) or n_references < 1:
            raise ValueError(f"Expected `n_references` to be a positive int, but got {n_references!r}.")
        super().__init__(model, target_layer, input_size, layout=layout)
        self.weighting = check_choice(weighting, "weighting", tuple(WEIGHTINGS))
        self.n_references = n_references
        self.alpha = WEIGHTINGS[self.weighting] if alpha is None else float(alpha)

    def score_gradients(self, logits: Tensor, targets: Tensor, activations: Tensor) -> Tensor:
        score = finer_score(logits, targets, self.n_references, self.alpha, self.weighting)
        return torch.autograd.grad(score.sum(), activations)[0]

    def weights(self, inputs: CAMInputs) -> Tensor:
        return inputs.gradients.mean(dim=(2, 3), keepdim=True)
