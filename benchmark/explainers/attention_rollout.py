"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020, Sec. 3).

Per block ``l`` the heads' attention probabilities are fused, ``A_l = mean_h A_l^h`` (``head_fusion``: the
mean, max or min over heads); the residual connection is modelled by adding the identity and re-normalising
the rows, ``Â_l = (A_l + I) / rowsum(A_l + I)``, which is the paper's ``0.5 A_l + 0.5 I`` for the mean; the
rollout multiplies the blocks, ``R = Â_L ... Â_1``. The map is the class token's row on the patch tokens,
``R[0, P:]`` (``P = model.num_prefix_tokens``: the class, distillation and register tokens), on the patch
grid (row-major). It does not depend on the class.

The attention probabilities of timm's ViT family (VisionTransformer, DeiT, BEiT, EVA: ``blocks[i].attn``)
are read by a forward hook on each attention's ``attn_drop``, with the fused kernel off (``fused_attn =
False``) during the call; flags and hooks are restored in ``finally``. Shared with :mod:`.chefer`.
"""
from __future__ import annotations

import contextlib
import math
from typing import ClassVar, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from benchmark._utils import check_choice
from benchmark.explainers.base import BaseExplainer
from benchmark.explainers.registry import register_explainer

__all__ = ["AttentionExplainer", "AttentionRollout", "attention_modules", "capture_attention"]

#: how the heads of a block are fused into one ``(B, N, N)`` map
HEAD_FUSIONS = {"mean": Tensor.mean, "max": Tensor.amax, "min": Tensor.amin}


def attention_modules(model: nn.Module, method: str) -> List[nn.Module]:
    """The attention module of each of ``model.blocks`` (the block itself for timm's parallel blocks); a
    ValueError for a model without such blocks (CNNs), with windowed attention (Swin) or without a class token."""
    name = type(model).__name__
    blocks = getattr(model, "blocks", None)
    attns = [getattr(b, "attn", b) for b in blocks] if isinstance(blocks, (nn.Sequential, nn.ModuleList)) else []
    if not attns or not all(hasattr(a, "fused_attn") and isinstance(getattr(a, "attn_drop", None), nn.Module)
                            for a in attns):
        if any(hasattr(module, "window_size") for module in model.modules()):
            raise ValueError(f"{method} needs a ViT-family model with a global class token; {name} is a windowed /"
                             " hierarchical transformer (Swin-like), whose window attention has no class token.")
        raise ValueError(f"{method} needs a ViT-family model with attention blocks (timm VisionTransformer/DeiT/"
                         f"BEiT/EVA: `blocks[i].attn`); {name} has none.")
    if getattr(model, "cls_token", None) is None:
        raise ValueError(f"Expected a model with a class token (token 0) for {method}, but got {name} without one "
                         "(`cls_token` is None).")
    return attns


@contextlib.contextmanager
def capture_attention(attns: List[nn.Module], keep_graph: bool = False) -> Iterator[List[Tensor]]:
    """While open, the ``(B, heads, N, N)`` attention probabilities of each forward are appended to the yielded
    list (in the graph if ``keep_graph``, else detached); the unfused path runs, ``fused_attn`` is restored."""
    store: List[Tensor] = []
    flags, handles = [attn.fused_attn for attn in attns], []
    try:
        for attn in attns:
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(
                lambda module, args, output: store.append(output if keep_graph else output.detach())))
        yield store
    finally:
        for handle in handles:
            handle.remove()
        for attn, flag in zip(attns, flags):
            attn.fused_attn = flag


class AttentionExplainer(BaseExplainer):
    """Base of the explainers that read a ViT's attention probabilities (no CAM target layer).

    Args:
        model: a timm ViT-family classifier (``blocks[i].attn``, a class token).
        target_layer: ignored (every block's attention is read); recorded as ``"blocks.*.attn"``.
        input_size: ``(C, H, W)``; ``C`` is checked against the images.
    """

    uses_layer = False
    in_default_run = False  # ViT-family models only; the default run explains CNNs
    requires_attention: ClassVar[bool] = True  #: needs a ViT-family model (tests build a tiny timm ViT for it)

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224)) -> None:
        super().__init__(model, target_layer, input_size)
        self.attentions = attention_modules(model, type(self).__name__)
        self.target_layer = "blocks.*.attn" if hasattr(model.blocks[0], "attn") else "blocks.*"

    def attention_forward(self, images: Tensor, keep_graph: bool) -> Tuple[Tensor, List[Tensor]]:
        """Logits and the per-block ``(B, heads, N, N)`` attention probabilities of one forward."""
        with capture_attention(self.attentions, keep_graph) as store:
            logits = self._check_logits(self.model(images), images)
        if len(store) != len(self.attentions):
            raise ValueError(f"Expected one attention map per block ({len(self.attentions)}), but got {len(store)}.")
        return logits, store

    def to_grid(self, rows: Tensor, images: Tensor) -> Tensor:
        """``(B, N)`` rows over all tokens -> ``(B, h, w)`` maps over the patch tokens (row-major): the patch
        embedding's grid for this image size, else the factorisation closest to the image's aspect ratio."""
        patches = rows[:, getattr(self.model, "num_prefix_tokens", 1):]
        tokens, (height, width) = patches.shape[1], images.shape[-2:]
        embed = getattr(self.model, "patch_embed", None)
        grid = embed.dynamic_feat_size((height, width)) if hasattr(embed, "dynamic_feat_size") else (0, 0)
        if grid[0] * grid[1] != tokens:
            pairs = [(h, tokens // h) for h in range(1, tokens + 1) if tokens % h == 0]
            grid = min(pairs, key=lambda hw: abs(math.log(hw[0] * width / (hw[1] * height))))
        return patches.reshape(len(rows), int(grid[0]), int(grid[1]))


@register_explainer
class AttentionRollout(AttentionExplainer):
    """Attention rollout: the class token's row of the product of the residual-corrected attention maps.

    Args:
        model, target_layer, input_size: as :class:`AttentionExplainer`.
        head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over heads.

    Examples:
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
        >>> explainer = AttentionRollout(vit, input_size=(3, 32, 32))
        >>> explainer
        AttentionRollout(target_layer='blocks.*.attn')
        >>> explainer.unnormalized_maps(torch.randn(2, 3, 32, 32)).shape, explainer(torch.randn(2, 3, 32, 32)).shape
        (torch.Size([2, 4, 4]), torch.Size([2, 32, 32]))
    """

    name = "attentionrollout"
    class_independent = True
    uses_gradients = False

    def __init__(self, model, target_layer=None, input_size=(3, 224, 224), head_fusion: str = "mean") -> None:
        self.head_fusion = check_choice(head_fusion, "head_fusion", tuple(HEAD_FUSIONS))
        super().__init__(model, target_layer, input_size)

    def raw_maps(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor]) -> Tensor:
        logits, attentions = self.attention_forward(images, keep_graph=False)
        self._check_classes(targets, logits)  # class-agnostic, but bad targets are refused as everywhere
        rollout = None
        for attn in attentions:
            fused = HEAD_FUSIONS[self.head_fusion](attn.float(), dim=1)
            fused = fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
            fused = fused / fused.sum(dim=-1, keepdim=True)
            rollout = fused if rollout is None else fused @ rollout
        return self.to_grid(rollout[:, 0], images)
