"""Occlusion maps (Zeiler & Fergus, ECCV 2014), as the Grad-CAM paper (Sec. 5) and its reproduction study use them.

A ``patch_size`` square of ``fill`` (normalised input units: 0 = the mean colour) slides over the
image with ``stride``; the image is padded by half a patch on each side (the model still sees the
unpadded image), so with ``stride=1`` there is one patch centred on every pixel -- ``H * W``
forwards per image, 50,176 at 224 x 224 (the study: 45 x 45, stride 1). The value of a pixel is
captum's :class:`~captum.attr.Occlusion` attribution: the mean, over the patches covering the
pixel, of the score drop ``S_c(x) - S_c(x with the patch filled)``; ``score`` is the class logit
(default) or its softmax probability. Patches are batched: each forward carries about
``chunk_size`` occluded images. :meth:`Occlusion.signed_maps` gives the signed map (rank
correlation); the explainer's output is its ReLU min-max normalisation like every other map.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from captum.attr import Occlusion as _CaptumOcclusion
from torch import Tensor, nn

from benchmark._utils import check_choice, check_positive_int
from benchmark.explainers.attribution import AttributionExplainer
from benchmark.explainers.registry import register_explainer

SCORES = ("logit", "probability")


class _Cropped(nn.Module):
    """``model(x[..., pad:-pad, pad:-pad])`` as a logit or probability function."""

    def __init__(self, model: nn.Module, pad: int, score: str) -> None:
        super().__init__()
        self.model, self.pad, self.score = model, pad, score

    def forward(self, x: Tensor) -> Tensor:
        if self.pad:
            x = x[..., self.pad:-self.pad, self.pad:-self.pad]
        out = self.model(x)
        return out.float().softmax(dim=1) if self.score == "probability" else out


def occlusion_positions(height: int, width: int, patch_size: int, stride: int) -> int:
    """Occluded forwards per image: the patch positions on the half-patch-padded image, as captum's ``Occlusion``
    places them: ``ceil((side + 2 pad - patch) / stride) + 1`` per axis, the last window clipped to the edge.

    Examples:
        >>> occlusion_positions(224, 224, 45, 1), occlusion_positions(224, 224, 45, 8)
        (50176, 841)
    """
    pad = patch_size // 2
    return (math.ceil((height + 2 * pad - patch_size) / stride) + 1) * \
        (math.ceil((width + 2 * pad - patch_size) / stride) + 1)


def check_occlusion_args(patch_size: int, stride: int, fill: float, chunk_size: int, score: str) -> dict:
    """The occlusion settings as a dict, or a TypeError / ValueError naming the bad one (shared by the
    explainer and the rank-correlation metric, which builds the explainer later, per model)."""
    for value, what in ((patch_size, "patch_size"), (stride, "stride"), (chunk_size, "chunk_size")):
        check_positive_int(value, what)
    if stride > patch_size:
        raise ValueError(f"Expected `stride` <= `patch_size` ({patch_size}) so that every pixel is occluded, "
                         f"but got {stride}.")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise TypeError(f"Expected `fill` to be a float, but got {type(fill).__name__}.")
    return {"patch_size": patch_size, "stride": stride, "fill": float(fill), "chunk_size": chunk_size,
            "score": check_choice(score, "score", SCORES)}


@register_explainer
class Occlusion(AttributionExplainer):
    """Occlusion: score drop when a patch around each pixel is filled (captum, batched patches).

    Examples:
        >>> linear = nn.Sequential(nn.Flatten(), nn.Linear(3, 1, bias=False))
        >>> _ = linear[1].weight.data.fill_(1.0)
        >>> occ = Occlusion(linear, input_size=(1, 1, 3), patch_size=1)
        >>> occ.signed_maps(torch.tensor([[[[1.0, 2.0, 3.0]]]]), torch.tensor([0]))  # each pixel's own value
        tensor([[[1., 2., 3.]]])
    """

    name = "occlusion"
    default_reduction = "mean"

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), patch_size: int = 45, stride: int = 1,
                 fill: float = 0.0, chunk_size: int = 256, score: str = "logit",
                 reduction: Optional[str] = None) -> None:
        args = check_occlusion_args(patch_size, stride, fill, chunk_size, score)
        super().__init__(model, target_layer, input_size, reduction)
        self.patch_size, self.stride, self.fill = args["patch_size"], args["stride"], args["fill"]
        self.chunk_size, self.score = args["chunk_size"], args["score"]

    def positions(self, height: int, width: int) -> int:
        """Occluded forwards per image (:func:`occlusion_positions`)."""
        return occlusion_positions(height, width, self.patch_size, self.stride)

    def attribute(self, images: Tensor, targets: Tensor, indices: Optional[Tensor]) -> Tensor:
        pad = self.patch_size // 2
        padded = F.pad(images, (pad, pad, pad, pad), value=self.fill)
        occlusion = _CaptumOcclusion(_Cropped(self.model, pad, self.score))
        per_eval = max(1, self.chunk_size // len(images))
        with torch.no_grad():  # forward differences only
            attributions = occlusion.attribute(
                padded, sliding_window_shapes=(images.shape[1], self.patch_size, self.patch_size),
                strides=(images.shape[1], self.stride, self.stride), baselines=self.fill, target=targets,
                perturbations_per_eval=per_eval)
        return attributions[..., pad:pad + images.shape[-2], pad:pad + images.shape[-1]]

    def signed_maps(self, images: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        """``(B, H, W)`` signed occlusion maps (the score drop, before ReLU and normalisation), float32."""
        return self.unnormalized_maps(images, targets).float()
