"""The base of the input-attribution explainers (captum behind the explainer API).

Guided Backpropagation, Integrated Gradients, Gradient SHAP and occlusion give one value per input
*element*, ``(B, C, H, W)``. :class:`AttributionExplainer` runs the method (a subclass overrides
:meth:`AttributionExplainer.attribute`, usually one captum call) and reduces the channels to one
``(B, H, W)`` map by a documented rule (:func:`reduce_channels`) before the shared normalisation
of :func:`~benchmark.explainers.base.normalize_maps` (ReLU, per-image min-max to ``[0, 1]``):

* ``"abs_sum"`` (default of the gradient methods): ``sum_c |a_c|``, the magnitude of the
  attribution whatever its sign (Simonyan et al. take the max over channels; Guided Grad-CAM and
  the reproduction study visualise magnitudes);
* ``"sum"``: ``sum_c a_c``, signed -- the ReLU of the normalisation then keeps the positive
  evidence only (Integrated Gradients' completeness holds for this sum);
* ``"abs_max"``: ``max_c |a_c|`` (Simonyan et al.'s saliency rule);
* ``"mean"``: ``mean_c a_c`` (occlusion, whose channels are occluded together and so are equal).

The model runs in eval mode with autograd on for the input only: parameter ``.grad`` fields are
never written and captum's hooks are removed when it returns or raises. Targets are checked against
the model's number of classes before the attribution runs (learnt by one forward on the first call,
which also gives the predicted classes when no targets are given).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import ClassVar, Iterator, Optional

import torch
from torch import Tensor

from benchmark._utils import check_choice
from benchmark.explainers.base import BaseExplainer

__all__ = ["AttributionExplainer", "REDUCTIONS", "quiet_captum", "reduce_channels"]

REDUCTIONS = ("abs_sum", "sum", "abs_max", "mean")


def reduce_channels(attributions: Tensor, rule: str) -> Tensor:
    """``(B, C, H, W)`` attributions -> ``(B, H, W)`` maps by ``rule`` (see the module docstring).

    Examples:
        >>> a = torch.tensor([[[[1.0]], [[-3.0]]]])
        >>> [reduce_channels(a, r).item() for r in REDUCTIONS]
        [4.0, -2.0, 3.0, -1.0]
    """
    rule = check_choice(rule, "reduction", REDUCTIONS)
    if attributions.ndim != 4:
        raise ValueError(f"Expected `attributions` to have shape (B, C, H, W), but got {tuple(attributions.shape)}.")
    if rule == "abs_sum":
        return attributions.abs().sum(dim=1)
    if rule == "sum":
        return attributions.sum(dim=1)
    if rule == "abs_max":
        return attributions.abs().amax(dim=1)
    return attributions.mean(dim=1)


@contextlib.contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence captum's notice that it sets (and later removes) backward hooks on ReLU modules."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU activations.*")
        warnings.filterwarnings("ignore", message=".*Setting forward, backward hooks and attributes on non-linear.*")
        yield


class AttributionExplainer(BaseExplainer):
    """Input attributions reduced to a map; subclasses override :meth:`attribute`.

    Args:
        model, target_layer, input_size: as :class:`~benchmark.explainers.base.BaseExplainer`.
        reduction: the channel rule, one of :data:`REDUCTIONS`.
    """

    uses_layer = False
    uses_gradients = False
    in_default_run = False  # pixel attributions cost many backward passes: opt in by name
    default_reduction: ClassVar[str] = "abs_sum"

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), reduction: Optional[str] = None, *,
                 layout: Optional[str] = None) -> None:
        super().__init__(model, target_layer, input_size, layout=layout)
        self.reduction = check_choice(reduction or self.default_reduction, "reduction", REDUCTIONS)
        self._num_classes: Optional[int] = None

    def attribute(self, images: Tensor, targets: Tensor, indices: Optional[Tensor]) -> Tensor:
        """``(B, C, H, W)`` attributions of ``targets`` (override)."""
        raise NotImplementedError(f"{type(self).__name__} must override `attribute`.")

    def raw_maps(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor]) -> Tensor:
        if targets is None or self._num_classes is None:  # one forward: the predictions, or the class count
            with torch.no_grad():
                logits = self._check_logits(self.model(images), images)
            self._num_classes = logits.shape[1]
        else:  # the class count of an earlier call: targets are checked without a forward
            logits = torch.empty(len(images), self._num_classes, device=images.device)
        targets = self._check_classes(targets, logits)
        with torch.enable_grad():
            attributions = self.attribute(images.detach(), targets, indices)
        return reduce_channels(attributions.detach(), self.reduction)
