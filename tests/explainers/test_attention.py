"""Attention rollout and Chefer et al.'s relevance on tiny timm ViTs.

References: an explicit float64 forward of the ViT written here from its weights (checked against timm's
logits), and the two papers' formulas computed in NumPy with loops from the attention probabilities and their
gradients of that forward (Abnar & Zuidema 2020: ``R = Â_L ... Â_1``, ``Â = 0.5 A + 0.5 I``; Chefer et al.
2021: ``R = I``, ``R ← R + E_h[(∇A ⊙ A)^+] R``); the map is ``R[0, prefix:]`` on the patch grid.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torchvision.models import resnet18

from benchmark.explainers import create_explainer

SIZE, PATCH, DIM, HEADS, CLASSES = 32, 8, 16, 2, 5
GRID = SIZE // PATCH
NAMES = ("attentionrollout", "chefer2021")


def tiny_vit(kind: str = "vit", seed: int = 0) -> torch.nn.Module:
    """A 2-block timm ViT (``"vit"``; ``"deit"``: distilled, 2 prefix tokens; ``"reg"``: 2 register tokens)
    whose weights are redrawn with std 0.5 so that the attention is far from uniform."""
    torch.manual_seed(seed)
    kwargs = dict(img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=2, num_heads=HEADS, num_classes=CLASSES)
    model = (VisionTransformerDistilled(**kwargs) if kind == "deit"
             else VisionTransformer(reg_tokens=2 if kind == "reg" else 0, **kwargs))
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.5 * torch.randn_like(param))
    return model.eval()


def explicit_forward(model, images):
    """float64 logits and per-block ``(B, heads, N, N)`` attention probabilities (kept in the graph)."""
    w = {k: v.detach().double() for k, v in model.state_dict().items()}
    batch = len(images)
    x = images.double().requires_grad_()
    patches = x.reshape(batch, 3, GRID, PATCH, GRID, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(batch, GRID ** 2, -1)
    tokens = patches @ w["patch_embed.proj.weight"].reshape(DIM, -1).T + w["patch_embed.proj.bias"]
    prefix = [w[name].expand(batch, -1, -1) for name in ("cls_token", "dist_token", "reg_token") if name in w]
    x = torch.cat(prefix + [tokens], dim=1) + w["pos_embed"]
    n, head_dim, attentions = x.shape[1], DIM // HEADS, []

    def norm(y, key):
        return F.layer_norm(y, (DIM,), w[key + ".weight"], w[key + ".bias"], eps=1e-6)

    def linear(y, key):
        return y @ w[key + ".weight"].T + w[key + ".bias"]

    for block in range(2):
        key = f"blocks.{block}."
        qkv = linear(norm(x, key + "norm1"), key + "attn.qkv").reshape(batch, n, 3, HEADS, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / head_dim ** 0.5, dim=-1)
        attentions.append(attn)
        x = x + linear((attn @ v).transpose(1, 2).reshape(batch, n, DIM), key + "attn.proj")
        x = x + linear(F.gelu(linear(norm(x, key + "norm2"), key + "mlp.fc1")), key + "mlp.fc2")
    x = norm(x, "norm")
    logits = linear(x[:, 0], "head")
    if "head_dist.weight" in w:  # DeiT-distilled in eval mode: the mean of the two heads
        logits = (logits + linear(x[:, 1], "head_dist")) / 2
    return logits, attentions


def numpy_rollout(attentions, prefix, fusion=np.mean):
    maps = []
    for b in range(attentions[0].shape[0]):
        n = attentions[0].shape[-1]
        rollout = np.eye(n)
        for attn in attentions:
            fused = fusion(attn[b], axis=0) + np.eye(n)
            rollout = (fused / fused.sum(axis=1, keepdims=True)) @ rollout  # 0.5 A + 0.5 I for the mean
        maps.append(rollout[0, prefix:].reshape(GRID, GRID))
    return np.stack(maps)


def numpy_chefer(attentions, grads, prefix):
    maps = []
    for b in range(attentions[0].shape[0]):
        relevance = np.eye(attentions[0].shape[-1])
        for attn, grad in zip(attentions, grads):
            relevance = relevance + np.maximum(grad[b] * attn[b], 0).mean(axis=0) @ relevance
        maps.append(relevance[0, prefix:].reshape(GRID, GRID))
    return np.stack(maps)


@pytest.mark.parametrize("kind, prefix", [("vit", 1), ("deit", 2), ("reg", 3)])
def test_hand_computed_rollout_and_relevance(kind, prefix):
    model = tiny_vit(kind)
    assert model.num_prefix_tokens == prefix
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 4, 2])
    logits, attentions = explicit_forward(model, images)
    with torch.no_grad():
        torch.testing.assert_close(logits.float(), model(images), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), attentions)
    attn_np, grad_np = [a.detach().numpy() for a in attentions], [g.numpy() for g in grads]
    assert min(a.max() for a in attn_np) > 0.3  # peaked attention, far from the uniform 1 / N
    got = create_explainer("attentionrollout", model, input_size=(3, SIZE, SIZE)).unnormalized_maps(images, targets)
    np.testing.assert_allclose(got.numpy(), numpy_rollout(attn_np, prefix), rtol=1e-5, atol=1e-6)
    got = create_explainer("attentionrollout", model, input_size=(3, SIZE, SIZE), head_fusion="max")
    np.testing.assert_allclose(got.unnormalized_maps(images).numpy(), numpy_rollout(attn_np, prefix, np.max),
                               rtol=1e-5, atol=1e-6)
    got = create_explainer("chefer2021", model, input_size=(3, SIZE, SIZE)).unnormalized_maps(images, targets)
    np.testing.assert_allclose(got.numpy(), numpy_chefer(attn_np, grad_np, prefix), rtol=1e-5, atol=1e-6)


def attn_modules(model):
    return [block.attn for block in model.blocks]


@pytest.mark.parametrize("name", NAMES)
def test_model_left_as_found_after_a_call_and_after_an_error(name):
    model = tiny_vit().train()
    model.blocks[1].eval()  # a flag set apart
    attn_modules(model)[0].fused_attn, attn_modules(model)[1].fused_attn = True, False
    flags = {key: module.training for key, module in model.named_modules()}
    images = torch.randn(2, 3, SIZE, SIZE).requires_grad_()
    explainer = create_explainer(name, model, input_size=(3, SIZE, SIZE))

    def untouched():
        assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
                   for m in model.modules())
        assert [a.fused_attn for a in attn_modules(model)] == [True, False]
        assert {key: module.training for key, module in model.named_modules()} == flags
        assert all(p.grad is None and p.requires_grad for p in model.parameters()) and images.grad is None
        assert torch.is_grad_enabled()

    maps = explainer(images, torch.tensor([1, 3]))
    assert maps.shape == (2, SIZE, SIZE) and maps.isfinite().all() and maps.grad_fn is None
    untouched()

    def boom(module, args, output):
        raise RuntimeError("boom")

    handle = model.norm.register_forward_hook(boom)  # after every attention ran
    with pytest.raises(RuntimeError, match="boom"):
        explainer(images, torch.tensor([1, 3]))
    handle.remove()
    untouched()
    torch.testing.assert_close(explainer(images, torch.tensor([1, 3])), maps, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence_and_targets(name):
    model = tiny_vit()
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    explainer = create_explainer(name, model, input_size=(3, SIZE, SIZE))
    maps = explainer.unnormalized_maps(images, torch.tensor([0, 1, 2]))
    for i in range(3):
        alone = explainer.unnormalized_maps(images[i:i + 1], torch.tensor([i]))
        torch.testing.assert_close(alone[0], maps[i], rtol=1e-5, atol=1e-7)
    other = explainer.unnormalized_maps(images, torch.tensor([3, 4, 0]))
    assert torch.equal(other, maps) == (name == "attentionrollout")  # rollout is class-agnostic
    predicted = model(images).argmax(dim=1)
    torch.testing.assert_close(explainer.unnormalized_maps(images), explainer.unnormalized_maps(images, predicted))
    with pytest.raises(ValueError, match=re.escape(f"[0, {CLASSES - 1}], but got [{CLASSES}]")):
        explainer(images, torch.tensor([0, CLASSES, 1]))


@pytest.mark.parametrize("name", NAMES)
def test_eva_and_beit_attention_is_read(name):
    from timm.models.beit import Beit
    from timm.models.eva import Eva

    kwargs = dict(img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=2, num_heads=HEADS, num_classes=CLASSES)
    for model in (Eva(use_rot_pos_emb=True, **kwargs), Beit(use_rel_pos_bias=True, **kwargs)):
        explainer = create_explainer(name, model.eval(), input_size=(3, SIZE, SIZE))
        maps = explainer.unnormalized_maps(torch.randn(2, 3, SIZE, SIZE), torch.tensor([0, 1]))
        assert maps.shape == (2, GRID, GRID) and maps.isfinite().all() and (maps.amax((1, 2)) > maps.amin((1, 2))).all()
        assert explainer.target_layer == "blocks.*.attn"


def test_refusals():
    from timm.models.resnet import resnet18 as timm_resnet18
    from timm.models.swin_transformer import SwinTransformer

    for name in NAMES:
        cls = "AttentionRollout" if name == "attentionrollout" else "CheferAttention"
        for model in (resnet18(num_classes=3), timm_resnet18(num_classes=3)):
            with pytest.raises(ValueError, match=re.escape(f"{cls} needs a ViT-family model with attention blocks "
                                                           "(timm VisionTransformer/DeiT/BEiT/EVA: `blocks[i].attn`); "
                                                           "ResNet has none.")):
                create_explainer(name, model)
        swin = SwinTransformer(img_size=SIZE, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1),
                               num_heads=(1, 1), num_classes=CLASSES)
        with pytest.raises(ValueError, match="SwinTransformer is a windowed / hierarchical transformer"):
            create_explainer(name, swin)
        no_token = VisionTransformer(img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=1, num_heads=HEADS,
                                     class_token=False, global_pool="avg")
        with pytest.raises(ValueError, match="Expected a model with a class token.*VisionTransformer"):
            create_explainer(name, no_token)
    with pytest.raises(ValueError, match="Expected `head_fusion` to be one of .*'median'"):
        create_explainer("attentionrollout", tiny_vit(), head_fusion="median")


def test_dynamic_image_size_gives_the_image_grid():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=2, num_heads=HEADS,
                              num_classes=CLASSES, dynamic_img_size=True).eval()
    for name in NAMES:
        explainer = create_explainer(name, model, input_size=(3, SIZE, SIZE))
        assert explainer.unnormalized_maps(torch.randn(1, 3, 16, 48)).shape == (1, 2, 6)
        assert explainer(torch.randn(1, 3, 16, 48)).shape == (1, 16, 48)
