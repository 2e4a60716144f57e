"""Score-CAM (Wang et al., CVPRW 2020), batched.

Each channel's upsampled, min-max normalised activation ``M_k`` masks the input; the channel
weight is the model's score on ``x * M_k``:

* default (the authors' released code): the softmax probability of the target class;
  constant channels are skipped (weight 0), as in that code;
* ``channel_softmax=True`` (pytorch-grad-cam / torch-cam): the target logits of the masked
  inputs, soft-maxed across channels. A constant channel's mask is 0, so its score is that of
  the all-zero input, computed once per batch.

Channels whose activation is identically zero cannot change the map (``w_k * 0``), and the
min-max normalisation removes any common factor of the weights, so only the non-constant
channels need a masked forward. They are run in chunks of ``chunk_size`` images taken across
the whole batch, on an inference copy of the model (batch-norm folded, channels-last; see
:mod:`benchmark.explainers.fastpath`). ``autocast="bfloat16"`` (or ``"float16"``) runs those
masked forwards under :func:`torch.autocast`: about 2x faster on CPUs with bf16 units and on
GPUs, but the weights are no longer exact (see ``leaderboards/speed_options_resnet50.md`` for the measured map
difference); the default is float32. ``compile=True`` compiles that inference copy with
:func:`torch.compile` (see :class:`~benchmark.explainers.fastpath.InferenceCopy`): float32, same
weights up to float rounding, faster on large models after a one-off compile.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.fastpath import InferenceCopy
from benchmark.explainers.registry import register_explainer


def normalized_masks(acts: Tensor, size) -> Tensor:
    """``(n, 1, H, W)`` masks: the ``(n, h, w)`` activations upsampled (bilinear) to ``size`` and min-max
    normalised each; a constant one gives 0.

    Examples:
        >>> normalized_masks(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]), (1, 2)).flatten(1)
        tensor([[0., 1.],
                [0., 0.]])
    """
    masks = F.interpolate(acts.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
    low, high = masks.flatten(1).aminmax(dim=1)
    span = (high - low).view(-1, 1, 1, 1)
    return torch.where(span > 0, (masks - low.view(-1, 1, 1, 1)) / span, torch.zeros_like(masks))


@register_explainer
class ScoreCAM(BaseExplainer):
    """Score-CAM: channel weights = class score of the input masked by the channel.

    Examples:
        >>> from torchvision.models import resnet18
        >>> explainer = ScoreCAM(resnet18(num_classes=10), chunk_size=64)
        >>> explainer(torch.randn(1, 3, 32, 32), torch.tensor([2])).shape
        torch.Size([1, 32, 32])
    """

    uses_gradients = False
    scores_every_class = True  # every class's weights come from the same masked forwards

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), channel_softmax: bool = False,
                 chunk_size: int = 32, autocast: Optional[str] = None, compile: bool = False, *,
                 layout: Optional[str] = None) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"Expected `chunk_size` to be a positive int, but got {chunk_size!r}.")
        if autocast not in (None, "bfloat16", "float16"):
            raise ValueError(f"Expected `autocast` to be None, 'bfloat16' or 'float16', but got {autocast!r}.")
        super().__init__(model, target_layer, input_size, layout=layout)
        self.channel_softmax = bool(channel_softmax)
        self.chunk_size = chunk_size
        self.fast_model = InferenceCopy(model, compile=compile)
        self.autocast = autocast

    def _masked_forward(self, images: Tensor) -> Tensor:
        if self.autocast is None:
            return self.fast_model(images)
        with torch.autocast(images.device.type, dtype=getattr(torch, self.autocast)):
            return self.fast_model(images).float()

    def weights(self, inputs: CAMInputs) -> Tensor:
        """``(B, k, C, 1, 1)`` weights of the ``(B, k)`` targets, from the same masked forwards."""
        acts, images, classes = inputs.activations, inputs.images, inputs.targets
        flat = acts.flatten(2)
        live = flat.amax(dim=2) > flat.amin(dim=2)  # (B, C) non-constant channels
        scores = acts.new_zeros(len(acts), classes.shape[1], acts.shape[1])
        for chunk in live.nonzero().split(self.chunk_size):
            b, k = chunk.unbind(dim=1)
            out = self._masked_forward(images[b] * normalized_masks(acts[b, k], images.shape[-2:]))
            out = out if self.channel_softmax else out.softmax(dim=1)
            scores[b, :, k] = out.gather(1, classes[b]).to(scores.dtype)
        if self.channel_softmax:
            if not live.all():
                zero_logits = self._masked_forward(torch.zeros_like(images[:1]))[0]
                scores = torch.where(live[:, None], scores, zero_logits[classes].unsqueeze(2).to(scores.dtype))
            scores = scores.softmax(dim=2)
        return scores.view(*scores.shape, 1, 1)
