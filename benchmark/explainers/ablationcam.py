"""Ablation-CAM (Ramaswamy & others, WACV 2020, Eq. 3).

``w_k = (y_c - y_c^k) / y_c``: the relative drop of the class logit when channel ``k`` of the
target layer is set to zero (``y_c^k``). ``w = 0`` where ``y_c = 0``. A channel that is already
all zero cannot change the logit, so its weight is 0 without a forward; the others are ablated
in chunks of ``chunk_size`` (image, channel) pairs. The layers before the target are the same for
every ablation, so only the layers after it run per chunk (:mod:`benchmark.explainers.tail`, a
``torch.fx`` split); when the tail reads nothing but the layer's output (e.g. ResNet ``layer4``,
VGG ``features.29``) the hooked forward's activation feeds it directly, otherwise the prefix runs
once more for the values the tail also reads (a residual shortcut). Models that do not trace run
one full forward per chunk instead. The channel is zeroed in the layer's own layout (an NHWC
channel, or a feature of every patch token with the prefix tokens untouched; see
:mod:`benchmark.explainers.layouts`). A layer that runs more than once per forward (torchvision
``BasicBlock``'s shared ``relu``) is ablated in its last call only: the call whose output is the
activations ``A`` the CAM weighs (and every gradient method reads).
"""
from typing import List, Optional

import torch
from torch import Tensor

from benchmark.explainers.base import BaseExplainer, CAMInputs
from benchmark.explainers.registry import register_explainer
from benchmark.explainers.tail import LayerSplit, split_at_layer


@register_explainer
class AblationCAM(BaseExplainer):
    """Ablation-CAM: channel weights = relative drop of the class logit when the channel is zeroed.

    Examples:
        >>> from torchvision.models import resnet18
        >>> explainer = AblationCAM(resnet18(num_classes=10), chunk_size=128)
        >>> explainer(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 32, 32])
    """

    uses_gradients = False
    scores_every_class = True  # every class's weights come from the same ablated forwards

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), chunk_size: int = 32,
                 use_tail: bool = True, *, layout: Optional[str] = None) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"Expected `chunk_size` to be a positive int, but got {chunk_size!r}.")
        super().__init__(model, target_layer, input_size, layout=layout)
        self.chunk_size = chunk_size
        self.use_tail = bool(use_tail)  # False: a full hooked forward per chunk (the reference path)

    def forward_layer(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor],
                      with_gradients: bool) -> CAMInputs:
        """The base's hooked forward, counting the target layer's calls (its activations are the last call's)."""
        calls: List[int] = []
        handle = self.model.get_submodule(self.target_layer).register_forward_hook(lambda *_: calls.append(1))
        try:
            inputs = super().forward_layer(images, targets, indices, with_gradients)
        finally:
            handle.remove()
        self._calls = len(calls)
        return inputs

    def weights(self, inputs: CAMInputs) -> Tensor:
        split = self._split()
        prefix = None
        if split is not None:  # the hooked forward's activation is the prefix's output when the tail reads nothing else
            nchw = split.num_live_ins == 0 and self.layout.kind == "nchw"
            prefix = (inputs.activations, []) if nchw else split.run_prefix(inputs.images)
        return self._weights(inputs, split, prefix)

    def _weights(self, inputs: CAMInputs, split: Optional[LayerSplit], prefix) -> Tensor:
        """``(B, k, C, 1, 1)`` weights of the ``(B, k)`` targets, from the same ablated forwards."""
        acts, classes = inputs.activations, inputs.targets
        score = inputs.logits.gather(1, classes)  # (B, k)
        ablated = score[:, :, None].repeat(1, 1, acts.shape[1])
        for chunk in acts.flatten(2).ne(0).any(dim=2).nonzero().split(self.chunk_size):
            b, k = chunk.unbind(dim=1)
            rows = torch.arange(len(k), device=acts.device)
            if prefix is not None:  # only the layers after the target, fed in the layer's own layout
                own = prefix[0][b]  # advanced indexing: already a copy
                activation = self.layout.to_nchw(own, inputs.images.shape[-2:])  # a view of `own`
                activation[rows, k] = 0
                if self.layout.kind == "reshape":  # a user reshape may copy: scatter back
                    own = self.layout.from_nchw(activation, own)
                logits = split.run_tail(own, [v[b] if isinstance(v, Tensor) else v for v in prefix[1]])
            else:
                seen: List[int] = []

                def ablate(output: Tensor, k: Tensor = k) -> Tensor:
                    seen.append(1)
                    if len(seen) != self._calls:  # not the call the activations come from
                        return output
                    output = output.clone()
                    output[rows, k] = 0
                    return output

                with self.hook_layer(ablate, inputs.images.shape[-2:]):
                    logits = self.model(inputs.images[b])
                if len(seen) != self._calls:
                    raise ValueError(
                        f"Expected target layer {self.target_layer!r} to run {self._calls} time(s) per forward, as in "
                        f"the forward that recorded its activations, but it ran {len(seen)} times: Ablation-CAM cannot "
                        "tell which call to ablate; choose a target_layer that runs a fixed number of times.")
            ablated[b, :, k] = logits.gather(1, classes[b]).to(ablated.dtype)
        nonzero = (score != 0)[:, :, None]
        drop = (score[:, :, None] - ablated) / score[:, :, None].where(nonzero, 1.0) * nonzero
        return drop.view(*drop.shape, 1, 1)

    def _split(self) -> Optional[LayerSplit]:
        if not hasattr(self, "_layer_split"):
            self._layer_split = split_at_layer(self.model, self.target_layer) if self.use_tail else None
        return self._layer_split
