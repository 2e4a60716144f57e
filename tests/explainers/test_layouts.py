"""The layout adapter: NCHW / NHWC / prefix tokens read as (B, C, h, w), and refusals that say what to pass.

References: explicit permutes and slices written here (not the adapter's code), the shapes of
NOTES.md §6, and hand-built modules whose layout is known by construction.
"""
import re

import pytest
import torch
from torch import nn

from benchmark.explainers import create_explainer
from benchmark.explainers.layers import resolve_layer
from benchmark.explainers.layouts import Layout, detect_layout, grid_fits, parse_layout, spatial_readings


class ChannelsLast(nn.Module):
    """A CNN whose last stage is stored NHWC by a custom (untyped) module, then pooled."""

    def __init__(self, channels=6, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=4, padding=1)
        self.to_nhwc = Mul()
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        y = self.to_nhwc(self.conv(x).permute(0, 2, 3, 1))  # (B, h, w, C)
        return self.head(y.mean(dim=(1, 2)))


class Mul(nn.Module):
    def forward(self, x):
        return x * 1.5


class Tokens(nn.Module):
    """A ViT-like toy: `prefix` learned tokens, then patch tokens; pooled by the mean of the patches."""

    def __init__(self, prefix=1, dim=5, classes=3):
        super().__init__()
        self.num_prefix_tokens = prefix
        self.embed = nn.Conv2d(3, dim, 8, stride=8)
        self.prefix = nn.Parameter(torch.randn(1, prefix, dim))
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = self.mix(torch.cat([self.prefix.expand(len(x), -1, -1), t], dim=1))
        return self.head(t[:, self.num_prefix_tokens:].mean(dim=1) + t[:, 0])


def reference_gradcam(model, layer, images, to_nchw):
    """Grad-CAM by hand: hook, explicit reshape, spatial-mean weights, ReLU, upsample, min-max."""
    store = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, o: store.append(o))
    with torch.enable_grad():
        images = images.clone().requires_grad_(True)
        logits = model(images)
        target = logits.argmax(1)
        grads = to_nchw(torch.autograd.grad(logits.gather(1, target[:, None]).sum(), store[-1])[0])
        acts = to_nchw(store[-1])
    handle.remove()
    cam = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True).relu()
    cam = nn.functional.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False).flatten(1)
    low, high = cam.min(1, keepdim=True).values, cam.max(1, keepdim=True).values
    return ((cam - low) / (high - low)).view(len(images), *images.shape[-2:]).detach()


def test_grid_fits_and_readings():
    assert grid_fits((7, 7), (224, 224)) and grid_fits((8, 8), (299, 299)) and grid_fits((7, 6), (224, 170))
    assert not grid_fits((7, 768), (224, 224)) and not grid_fits((64, 56), (224, 224))
    assert spatial_readings((1, 768, 7, 7), (224, 224)) == ["nchw"]
    assert spatial_readings((1, 7, 7, 768), (224, 224)) == ["nhwc"]
    assert spatial_readings((1, 7, 7, 7), (224, 224)) == ["nchw", "nhwc"]


@pytest.mark.parametrize("spec, expected", [
    ("nchw", Layout("nchw")), ("NHWC", Layout("nhwc")), ("tokens", Layout("tokens", None)),
    ("tokens:2", Layout("tokens", 2)), ("tokens:1:14x14", Layout("tokens", 1, (14, 14))),
])
def test_parse_layout(spec, expected):
    assert parse_layout(spec) == expected


@pytest.mark.parametrize("spec", ["nwhc", "nchw:1", "tokens:x", "tokens:1:14", "tokens:-1", "tokens:1:0x3"])
def test_parse_layout_refuses(spec):
    with pytest.raises(ValueError, match="Expected `layout`"):
        parse_layout(spec)


def test_round_trip_keeps_prefix_tokens_and_order():
    out = torch.randn(2, 2 + 12, 4)  # 2 prefix tokens, 3 x 4 grid (image 24 x 32)
    layout = Layout("tokens", 2)
    nchw = layout.to_nchw(out, (24, 32))
    assert nchw.shape == (2, 4, 3, 4)
    assert torch.equal(nchw[1, :, 2, 1], out[1, 2 + 2 * 4 + 1])  # row-major patch order
    assert torch.equal(layout.from_nchw(nchw, out), out)
    nhwc = torch.randn(2, 3, 4, 5)
    assert torch.equal(Layout("nhwc").to_nchw(nhwc, (24, 32)), nhwc.permute(0, 3, 1, 2))


def test_nhwc_layer_equals_hand_reference():
    torch.manual_seed(0)
    model = ChannelsLast(channels=6).eval()
    images = torch.randn(2, 3, 32, 32)
    explainer = create_explainer("gradcam", model, target_layer="to_nhwc", input_size=(3, 32, 32))
    assert str(explainer.layout) == "nhwc"  # (B, 8, 8, 6): only the NHWC reading fits a 32 x 32 image
    ref = reference_gradcam(model, "to_nhwc", images, lambda o: o.permute(0, 3, 1, 2))
    torch.testing.assert_close(explainer(images), ref, atol=1e-5, rtol=0)
    read_wrong = create_explainer("gradcam", model, target_layer="to_nhwc", input_size=(3, 32, 32), layout="nhwc")
    torch.testing.assert_close(read_wrong(images), ref, atol=1e-5, rtol=0)


def test_tokens_layer_equals_hand_reference_and_ablation_keeps_prefix():
    torch.manual_seed(0)
    model = Tokens(prefix=1).eval()
    images = torch.randn(2, 3, 32, 32)
    explainer = create_explainer("gradcam", model, target_layer="mix", input_size=(3, 32, 32))
    assert str(explainer.layout) == "tokens:1"
    ref = reference_gradcam(model, "mix", images, lambda o: o[:, 1:].reshape(len(o), 4, 4, -1).permute(0, 3, 1, 2))
    torch.testing.assert_close(explainer(images), ref, atol=1e-5, rtol=0)
    # Ablation-CAM zeroes feature k of every patch token, never the class token: hand loop
    ablation = create_explainer("ablationcam", model, target_layer="mix", input_size=(3, 32, 32))
    with torch.no_grad():
        logits = model(images)
        target = logits.argmax(1)
        base = logits.gather(1, target[:, None]).squeeze(1)
        expected = []
        for k in range(5):
            handle = model.mix.register_forward_hook(lambda m, a, o, k=k: torch.cat(
                [o[:, :1], o[:, 1:].index_fill(2, torch.tensor([k]), 0.0)], dim=1))
            expected.append((base - model(images).gather(1, target[:, None]).squeeze(1)) / base)
            handle.remove()
    weights = torch.stack(expected, dim=1)
    acts = model.mix(torch.cat([model.prefix.expand(2, -1, -1), model.embed(images).flatten(2).transpose(1, 2)], 1))
    raw = (weights[:, :, None, None] * acts[:, 1:].reshape(2, 4, 4, 5).permute(0, 3, 1, 2)).sum(1)
    torch.testing.assert_close(ablation.unnormalized_maps(images), raw.detach(), atol=1e-5, rtol=1e-5)


def test_tokens_with_explicit_grid_and_wrong_count():
    model = Tokens(prefix=1).eval()
    explainer = create_explainer("gradcam", model, target_layer="mix", input_size=(3, 32, 32), layout="tokens:1:4x4")
    assert explainer(torch.randn(1, 3, 32, 32)).shape == (1, 32, 32)
    with pytest.raises(ValueError, match="'mix'.*layout="):
        create_explainer("gradcam", model, target_layer="mix", input_size=(3, 32, 32), layout="tokens:1:3x3")


def test_dynamic_image_size_uses_the_patch_grid():
    model = Tokens(prefix=2).eval()
    model.patch_size = 8
    explainer = create_explainer("gradcam", model, target_layer="mix", input_size=(3, 32, 32))
    assert explainer(torch.randn(1, 3, 16, 48)).shape == (1, 16, 48)  # a 2 x 6 grid, not the 32 x 32 one


def test_ambiguous_square_tensor_is_refused_with_the_argument_to_pass():
    """(B, 7, 7, 7) from an untyped module in a fixed-size model: nothing tells NCHW from NHWC."""
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 7, 4, stride=4)
            self.cube = Mul()
            self.head = nn.Linear(7 * 7 * 7, 2)

        def forward(self, x):
            if x.shape[-1] != 28:
                raise ValueError("fixed input size")
            return self.head(self.cube(self.conv(x)).flatten(1))

    with pytest.raises(ValueError, match=re.escape("'cube'") + r".*\(1, 7, 7, 7\).*layout="):
        create_explainer("gradcam", Fixed(), target_layer="cube", input_size=(3, 28, 28))
    explainer = create_explainer("gradcam", Fixed(), target_layer="cube", input_size=(3, 28, 28), layout="nchw")
    assert explainer(torch.randn(1, 3, 28, 28)).shape == (1, 28, 28)


def test_ambiguous_tensor_settled_by_growth_with_the_image():
    """The same (B, 7, 7, 7) in a model accepting any size: the axes that grow are spatial."""
    model = nn.Sequential(nn.Conv2d(3, 7, 4, stride=4), Mul(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 2))
    assert str(resolve_layer(model, "1", (3, 28, 28))[1]) == "nchw"


def test_not_a_grid_is_refused():
    with pytest.raises(ValueError, match=r"'x'.*\(2, 5\).*layout="):
        detect_layout(nn.Identity(), "x", torch.zeros(2, 5), (32, 32))
    with pytest.raises(ValueError, match="no prefix count"):
        detect_layout(nn.Identity(), "x", torch.zeros(2, 7, 4), (32, 32))  # 7 tokens: no grid, no prefix


def test_class_token_pooled_last_layer_is_refused_when_auto_detected():
    """Auto-detection on a class-token model outside the table: the last token layer's patches are dead."""
    class ClsPooled(Tokens):
        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = self.mix(torch.cat([self.prefix.expand(len(x), -1, -1), t], dim=1))
            return self.head(t[:, 0])

    with pytest.raises(ValueError, match="does not reach the logits.*blocks.<last>.norm1"):
        create_explainer("gradcam", ClsPooled().eval(), input_size=(3, 32, 32))


def test_inference_copy_of_swin():
    """Score-CAM's / deletion's inference copy of timm Swin (a fused constant refuses channels-last)."""
    import timm

    from benchmark.explainers.fastpath import InferenceCopy

    model = timm.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1)).eval().requires_grad_(False)
    images = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(InferenceCopy(model)(images), model(images), atol=1e-4, rtol=1e-4)


def test_declared_prefix_matching_the_patch_grid_wins_at_tiny_sizes():
    """28 x 28 image, patch 14: 5 prefix + 2 x 2 patches = 9 tokens; prefix 0 would also read as 3 x 3."""
    model = nn.Module()
    model.num_prefix_tokens, model.patch_size = 5, 14
    layout = detect_layout(model, "x", torch.zeros(1, 9, 8), (28, 28))
    assert (layout.prefix, tuple(layout.to_nchw(torch.zeros(1, 9, 8), (28, 28)).shape)) == (5, (1, 8, 2, 2))


def test_ablation_tail_on_a_vit_equals_full_forwards():
    """timm attention hands its tail flags (``attn_mask=None``, ``is_causal``): the fx tail still runs."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64).eval()
    images = torch.randn(2, 3, 64, 64)
    fast = create_explainer("ablationcam", model, input_size=(3, 64, 64), chunk_size=64)
    full = create_explainer("ablationcam", model, input_size=(3, 64, 64), chunk_size=64, use_tail=False)
    torch.testing.assert_close(fast.unnormalized_maps(images), full.unnormalized_maps(images), atol=1e-6, rtol=1e-5)
    assert fast._layer_split is not None and fast._layer_split.run_prefix(images) is not None
