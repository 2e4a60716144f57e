"""Fixes from the explainer audit: 1-D pooling (Hugging Face Swin), window-partitioned layers, and Ablation-CAM
on a layer that runs twice per forward. Each is checked against a hand computation, not the explainers' own code."""
import pytest
import timm
import torch
import torchvision
import transformers
from torch import nn

from benchmark.explainers import candidate_layers, create_explainer
from benchmark.runtime.hf_backbone import HFClassifier


def _hf_swin() -> nn.Module:
    """HF Swin at 32x32: an 8x8 patch grid, then 4x4 with 16 channels; the pooler's (B, 16, 1) would read as 4x4."""
    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                                     window_size=4, num_labels=5)
    return HFClassifier(transformers.SwinForImageClassification(config)).eval()


class TokenPool1d(nn.Module):
    """Tokens (B, N, C) -> the HF Swin head: AdaptiveAvgPool1d over the tokens -> (B, C, 1) -> flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)  # 32x32 -> 8x8 grid, 16 channels
        self.norm = nn.LayerNorm(16)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        tokens = self.norm(self.embed(x).flatten(2).transpose(1, 2))  # (B, 64, 16)
        return self.head(self.pool(tokens.transpose(1, 2)).flatten(1))  # pooler output (B, 16, 1): 16 = 4 x 4


def test_1d_pooling_over_tokens_is_not_a_target():
    net = TokenPool1d().eval()
    assert candidate_layers(net, (3, 32, 32)) == ["embed", "norm"]
    explainer = create_explainer("gradcam", net, input_size=(3, 32, 32))
    assert (explainer.target_layer, str(explainer.layout)) == ("norm", "tokens:0")


def test_hf_swin_auto_layer_is_the_last_layernorm_and_gradcam_matches_a_hand_gradcam():
    model = _hf_swin()
    explainer = create_explainer("gradcam", model, input_size=(3, 32, 32))
    assert (explainer.target_layer, str(explainer.layout)) == ("model.swin.layernorm", "tokens:0")

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 3])
    kept = []

    def hook(module, args, output):
        leaf = output.detach().requires_grad_(True)
        kept.append(leaf)
        return leaf

    handle = model.get_submodule("model.swin.layernorm").register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), kept[-1])
    assert kept[-1].shape == (2, 16, 16)  # 4x4 tokens, row-major, 16 channels
    acts = kept[-1].detach().reshape(2, 4, 4, 16).permute(0, 3, 1, 2)
    weights = grad.reshape(2, 4, 4, 16).permute(0, 3, 1, 2).mean(dim=(2, 3), keepdim=True)  # Grad-CAM Eq. 1
    expected = (weights * acts).sum(dim=1)
    got = explainer.unnormalized_maps(x, targets)
    assert got.shape == (2, 4, 4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_one_channel_tokens_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"C > 1 channels.*layer before the pooling"):
        create_explainer("gradcam", _hf_swin(), target_layer="model.swin.pooler", input_size=(3, 32, 32))
    with pytest.raises(ValueError, match=r"C > 1 channels"):
        create_explainer("gradcam", TokenPool1d(), target_layer="pool", input_size=(3, 32, 32), layout="tokens:0")


def _timm_swin() -> nn.Module:
    torch.manual_seed(0)  # 64x64, patch 4: a 16x16 grid in 4x4 windows (16 per image) at stage 0
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, img_size=64,
                             window_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 1)).eval()


def test_window_partitioned_layer_is_refused_and_never_auto_detected():
    model = _timm_swin()
    shapes = []
    handle = model.get_submodule("layers.0.blocks.0.attn").register_forward_hook(
        lambda mod, args, out: shapes.append(tuple(out.shape)))
    with torch.no_grad():
        model(torch.zeros(2, 3, 64, 64))
    handle.remove()
    assert shapes == [(32, 16, 8)]  # 2 images x 16 windows folded into the batch: no per-image grid
    for method in ("gradcam", "eigencam", "ablationcam"):
        with pytest.raises(ValueError, match=r"one item per image.*'layers\.0\.blocks\.0'.*blocks\.0\.norm1"):
            create_explainer(method, model, target_layer="layers.0.blocks.0.attn", input_size=(3, 64, 64))
    assert not any(name.endswith("attn") or ".attn." in name for name in candidate_layers(model, (3, 64, 64)))
    explainer = create_explainer("gradcam", model, target_layer="layers.0.blocks.0.norm1", input_size=(3, 64, 64))
    assert str(explainer.layout) == "nhwc"
    assert explainer(torch.randn(2, 3, 64, 64), torch.tensor([0, 1])).shape == (2, 64, 64)


def _score_with_last_call_ablated(model, layer, x, target, channels, calls):
    """Class scores of ``x`` with channel ``channels[i]`` of the layer's ``calls``-th call zeroed in copy ``i``."""
    seen = []

    def hook(module, args, output):
        seen.append(1)
        if len(seen) != calls:
            return output
        output = output.clone()
        output[torch.arange(len(channels)), channels] = 0
        return output

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(x.expand(len(channels), -1, -1, -1))[:, target]
    finally:
        handle.remove()


def test_ablationcam_ablates_only_the_last_call_of_a_shared_layer():
    torch.manual_seed(0)  # torchvision's BasicBlock (resnet18's block) at 8 channels, behind a stride-4 stem
    model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), torchvision.models.resnet.BasicBlock(8, 8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).double().eval()
    layer = "1.relu"  # BasicBlock's one ReLU runs twice: after bn1 and after the residual add
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    outputs = []
    handle = model.get_submodule(layer).register_forward_hook(lambda mod, args, out: outputs.append(out.clone()))
    with torch.no_grad():
        score = model(x)[0]
    handle.remove()
    assert len(outputs) == 2
    target = int(score.argmax())
    acts = outputs[-1][0]  # A: the last call's output, what every CAM method weighs
    channels = torch.arange(acts.shape[0])
    ablated = _score_with_last_call_ablated(model, layer, x, target, channels, calls=2)
    live = acts.flatten(1).ne(0).any(dim=1)  # an all-zero channel has weight 0 without a forward
    weights = torch.where(live, (score[target] - ablated) / score[target], torch.zeros_like(ablated))  # Eq. 3
    expected = (weights[:, None, None] * acts).sum(dim=0)

    explainer = create_explainer("ablationcam", model, target_layer=layer, input_size=(3, 32, 32), chunk_size=3)
    got = explainer.unnormalized_maps(x, torch.tensor([target]))[0]
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-9)
    # the old behaviour (every call ablated) is measurably different, so the check above tells them apart
    every = []
    for k in channels.tolist():
        def zero(module, args, output, k=k):
            output = output.clone()
            output[:, k] = 0
            return output
        handle = model.get_submodule(layer).register_forward_hook(zero)
        with torch.no_grad():
            every.append(model(x)[0, target])
        handle.remove()
    old = (torch.where(live, (score[target] - torch.stack(every)) / score[target], 0.0)[:, None, None] * acts).sum(0)
    assert (old - expected).abs().max() > 1e-3


class PositionTable(nn.Module):
    """A learned (1, C, h, w) table added to the features: the same tensor whatever the batch."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(1, 4, 8, 8))

    def forward(self):
        return self.table


class WithTable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pos, self.head = nn.Conv2d(3, 4, 3, padding=1, stride=4), PositionTable(), nn.Linear(4, 3)

    def forward(self, x):
        return self.head((self.conv(x) + self.pos()).mean(dim=(2, 3)))


def test_a_layer_without_a_batch_dimension_is_refused_at_run_time():
    """The batch-1 probe cannot tell (1, C, h, w) from one image's activations; the forward of 2 images can."""
    net = WithTable().eval()
    explainer = create_explainer("gradcam", net, target_layer="pos", input_size=(3, 32, 32))
    with pytest.raises(ValueError, match=r"'pos' to give one activation per image, but got shape \(1, 4, 8, 8\) "
                                         r"for 2 images"):
        explainer(torch.randn(2, 3, 32, 32))
