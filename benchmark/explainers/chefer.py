"""Chefer, Gur & Wolf's relevance for self-attention (ICCV 2021, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", Eq. 5-6 for self-attention).

The relevance starts as the identity, ``R = I`` (``N x N`` over the tokens); for each block ``l`` in forward
order, ``Ā_l = E_h[(∇A_l ⊙ A_l)^+]`` (the mean over heads of the positive part of the attention
probabilities ``A_l`` times the gradient of the target logit ``S_c`` with respect to them) and
``R ← R + Ā_l R``. The map is the class token's row on the patch tokens, ``R[0, P:]`` (``P =
model.num_prefix_tokens``), on the patch grid. The gradients are taken by :func:`torch.autograd.grad` to the
captured attention probabilities only (parameter ``.grad`` is never written); the probabilities are read as in
:mod:`benchmark.explainers.attention_rollout`.
"""
from typing import Optional

import torch
from torch import Tensor

from benchmark.explainers.attention_rollout import AttentionExplainer
from benchmark.explainers.registry import register_explainer


@register_explainer
class CheferAttention(AttentionExplainer):
    """Chefer et al. 2021: relevance propagated through the gradient-weighted attention of every block.

    Args:
        model: a timm ViT-family classifier (``blocks[i].attn``, a class token).
        target_layer: ignored (every block's attention is read); recorded as ``"blocks.*.attn"``.
        input_size: ``(C, H, W)``; ``C`` is checked against the images.

    Examples:
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
        >>> explainer = CheferAttention(vit, input_size=(3, 32, 32))
        >>> explainer
        CheferAttention(target_layer='blocks.*.attn')
        >>> explainer.unnormalized_maps(torch.randn(2, 3, 32, 32), torch.tensor([0, 4])).shape
        torch.Size([2, 4, 4])
    """

    name = "chefer2021"
    uses_gradients = True

    def raw_maps(self, images: Tensor, targets: Optional[Tensor], indices: Optional[Tensor]) -> Tensor:
        with torch.enable_grad():  # a graph from the input on, whatever the parameters' requires_grad
            logits, attentions = self.attention_forward(images.detach().requires_grad_(), keep_graph=True)
            targets = self._check_classes(targets, logits)
            score = logits.gather(1, targets[:, None]).sum()
            grads = torch.autograd.grad(score, attentions, materialize_grads=True)
        relevance = None
        for attn, grad in zip(attentions, grads):
            weighted = (grad.float() * attn.detach().float()).clamp(min=0).mean(dim=1)
            if relevance is None:
                relevance = torch.eye(weighted.shape[-1], dtype=weighted.dtype, device=weighted.device)
                relevance = relevance.expand_as(weighted)
            relevance = relevance + weighted @ relevance
        return self.to_grid(relevance[:, 0], images)
