"""Conformance of the CAM explainers across backbone families (timm, torchvision, Hugging Face).

For each architecture of :data:`CASES` (the smallest variant, random init, seeded, at its default input
size or a smaller one the model accepts; classifier heads are redrawn from a seeded normal -- Mixer and
torchvision ViT zero-initialise theirs, which zeroes every gradient -- and scaled to logits of standard
deviation ~1) the suite checks:

1. The automatically resolved Grad-CAM layer and its layout (``'nchw'``, ``'nhwc'``, ``'tokens:P'``) are
   the ones in the table, and the layer's grid after the layout is the smallest spatial grid of the
   model: the layer comes after the last downsampling. That grid is measured with forward hooks on every
   module (4-D outputs read as NCHW or NHWC, square for a square image); for the ViT family it is the
   patch embedding's grid. VGG is the one exception: the papers' layer is the last conv ReLU, before the
   final max-pool (twice the smallest grid).
2. Grad-CAM (the predicted classes of two images) equals a reference written here, independent of
   ``benchmark.explainers.layouts``: a forward hook keeps a clone of the layer's output, from which
   ``torch.autograd.grad`` of the summed target logits is taken (the layers before run without autograd,
   as in the explainer, so that both pick the same attention kernels), and each family is reshaped
   explicitly -- NCHW as is, NHWC permuted, tokens with the table's ``P`` prefix tokens dropped and the
   rest reshaped row-major to ``(B, h, w, C)``. Then weights = spatial mean of the gradients,
   ``relu(sum_k w_k A_k)``, bilinear upsampling (``align_corners=False``) and per-image min-max. Raw maps
   agree to 1e-5 of their largest magnitude, normalised maps to 1e-5. For the ViT, DeiT and Swin rows,
   pytorch-grad-cam (``reshape_transform``) agrees to 1e-4 once its output is min-maxed again: it adds
   1e-7 to the denominator of its own min-max, an affine change that a second min-max removes.
3. Score-CAM and Ablation-CAM give finite maps, non-constant before the ReLU (on a random network a map
   may be negative everywhere, which the shared normalisation rightly turns into zeros). They need one
   forward per channel, so they run on a narrower or shallower instance of the family (its own
   constructor arguments) at a small input (a 2x2 to 4x4 grid) where the smallest variant would cost
   seconds; Inception-v3, which has no width argument, runs them on the 192-channel pool branch of its
   last block (at 3x3: on a 2x2 grid that branch's 3x3 average pooling makes every cell equal).
4. Refusals rather than silent maps: a class-token model with no layer rule (ConViT), CrossViT's branch
   norm (a class token the model does not declare) and a hand-made ``(B, 7, 7, 7)`` output that reads as
   NCHW and as NHWC raise a ValueError naming the layer (and ``layout=`` for the last two). CoaT-Lite's
   last grid (a conv inside the last block's attention) does not reach its class token: refused too.

The module runs on one intra-op thread: on a busy 2-core machine, two OpenMP threads spin-wait and run
up to 10x slower.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
import transformers
from torch import nn

from benchmark.explainers import create_explainer, normalize_maps
from benchmark.runtime.hf_backbone import HFClassifier

try:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError:  # a test extra: the comparison is then left out
    pytorch_grad_cam = None

NUM_CLASSES = 10


def tm(name: str, **kwargs) -> Callable[[], nn.Module]:
    """A timm model factory (random init, 10 classes)."""
    return lambda: timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs)


def hf_vit() -> nn.Module:
    config = transformers.ViTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=NUM_CLASSES)
    return HFClassifier(transformers.ViTForImageClassification(config))


class Case(NamedTuple):
    id: str
    build: Callable[[], nn.Module]  #: the smallest variant
    size: int  #: its (square) input side
    layer: str  #: expected automatic layer
    layout: str  #: expected layout; tokens:P gives the reference its P
    small: Callable[[], nn.Module]  #: the (narrowed) instance for Score-CAM / Ablation-CAM
    small_size: int
    small_layer: Optional[str] = None  #: a cheaper layer of the last stage, where the automatic one is too wide
    before_pool: bool = False  #: the papers' layer precedes the final 2x pooling (VGG)
    pkg: bool = False  #: also compare with pytorch-grad-cam


def case(*args, **kwargs):
    return pytest.param(Case(*args, **kwargs), id=args[0])


XCEPTION_NARROW = [dict(in_chs=64, out_chs=64, stride=2), dict(in_chs=64, out_chs=64, stride=2),
                   dict(in_chs=64, out_chs=128, stride=2), dict(in_chs=128, out_chs=(128, 128, 128), stride=2),
                   dict(in_chs=128, out_chs=(128, 128, 256), stride=1, no_skip=True, start_with_relu=False)]
SWIN_NARROW = dict(img_size=64, window_size=2, embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2))
VIT = "blocks.11.norm1"
CASES = [
    case("resnet18", tm("resnet18"), 224, "layer4", "nchw", tm("resnet18"), 64),
    case("resnext50", tm("resnext50_32x4d"), 160, "layer4", "nchw",
         tm("resnext50_32x4d", layers=(1, 1, 1, 1), channels=(16, 32, 64, 128)), 64),
    case("densenet121", tm("densenet121"), 160, "features.norm5", "nchw", tm("densenet121", growth_rate=8), 64),
    case("vgg11", tm("vgg11"), 96, "features.19", "nchw", tm("vgg11", mlp_ratio=1 / 16), 32, before_pool=True),
    case("inception_v3", tm("inception_v3"), 171, "Mixed_7c", "nchw", tm("inception_v3"), 139,
         small_layer="Mixed_7c.branch_pool"),
    case("xception41", tm("xception41"), 160, "blocks", "nchw", tm("xception41", block_cfg=XCEPTION_NARROW), 64),
    case("efficientnet_b0", tm("efficientnet_b0"), 224, "bn2", "nchw", tm("efficientnet_b0"), 64),
    case("mobilenetv3", tm("mobilenetv3_small_050"), 224, "blocks", "nchw", tm("mobilenetv3_small_050"), 64),
    case("regnetx_002", tm("regnetx_002"), 224, "s4", "nchw", tm("regnetx_002"), 64),
    case("convnext", tm("convnext_atto"), 224, "stages", "nchw", tm("convnext_atto"), 64),
    case("convnextv2", tm("convnextv2_atto"), 224, "stages", "nchw", tm("convnextv2_atto"), 64),
    case("edgenext", tm("edgenext_xx_small"), 256, "stages", "nchw", tm("edgenext_xx_small"), 64),
    case("vit", tm("vit_tiny_patch16_224"), 224, VIT, "tokens:1", tm("vit_tiny_patch16_224", img_size=32), 32,
         pkg=True),
    case("deit_distilled", tm("deit_tiny_distilled_patch16_224"), 224, VIT, "tokens:2",
         tm("deit_tiny_distilled_patch16_224", img_size=32), 32, pkg=True),
    case("beit", tm("beit_base_patch16_224", img_size=96), 96, VIT, "tokens:1",
         tm("beit_base_patch16_224", img_size=32, depth=2, embed_dim=192, num_heads=3), 32),
    case("eva02", tm("eva02_tiny_patch14_224"), 224, VIT, "tokens:1", tm("eva02_tiny_patch14_224", img_size=28), 28),
    case("vit_reg4_dinov2", tm("vit_small_patch14_reg4_dinov2", img_size=224), 224, VIT, "tokens:5",
         tm("vit_small_patch14_reg4_dinov2", img_size=56, depth=2), 56),
    case("vit_reg4_gap", tm("vit_little_patch16_reg4_gap_256"), 256, "blocks.13.norm1", "tokens:4",
         tm("vit_little_patch16_reg4_gap_256", img_size=32, depth=2), 32),
    case("swin", tm("swin_tiny_patch4_window7_224"), 224, "norm", "nhwc",
         tm("swin_tiny_patch4_window7_224", **SWIN_NARROW), 64, pkg=True),
    case("swinv2", tm("swinv2_tiny_window8_256"), 256, "norm", "nhwc",
         tm("swinv2_tiny_window8_256", **SWIN_NARROW), 64),
    case("maxvit", tm("maxvit_rmlp_pico_rw_256"), 256, "norm", "nchw", tm("maxvit_rmlp_pico_rw_256", img_size=64), 64),
    case("coatnet", tm("coatnet_pico_rw_224"), 224, "norm", "nchw",
         tm("coatnet_pico_rw_224", img_size=64, depths=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128)), 64),
    case("pvt_v2", tm("pvt_v2_b0"), 224, "stages", "nchw", tm("pvt_v2_b0"), 64),
    case("poolformer", tm("poolformer_s12"), 224, "stages", "nchw", tm("poolformer_s12"), 64),
    case("mixer", tm("mixer_s32_224"), 224, "norm", "tokens:0", tm("mixer_s32_224", img_size=64), 64),
    case("cait", tm("cait_xxs24_224"), 224, "blocks_token_only.1.norm1", "tokens:1",
         tm("cait_xxs24_224", img_size=32, depth=2), 32),
    case("xcit", tm("xcit_nano_12_p16_224"), 224, "cls_attn_blocks.1.norm1", "tokens:1",
         tm("xcit_nano_12_p16_224", img_size=32, depth=2), 32),
    case("fastvit", tm("fastvit_t8"), 256, "final_conv", "nchw", tm("fastvit_t8", embed_dims=(16, 32, 64, 128)), 64),
    case("tv_vit_b_16", lambda: torchvision.models.vit_b_16(image_size=96, num_classes=NUM_CLASSES), 96,
         "encoder.layers.encoder_layer_11.ln_1", "tokens:1",
         lambda: torchvision.models.VisionTransformer(32, 16, num_layers=2, num_heads=3, hidden_dim=192,
                                                      mlp_dim=768, num_classes=NUM_CLASSES), 32),
    case("tv_swin_t", lambda: torchvision.models.swin_t(num_classes=NUM_CLASSES), 224, "norm", "nhwc",
         lambda: torchvision.models.SwinTransformer([4, 4], 24, [1, 1, 2, 1], [1, 2, 3, 4], [7, 7],
                                                    num_classes=NUM_CLASSES), 64),
    case("hf_vit", hf_vit, 64, "model.vit.layers.1.layernorm_before", "tokens:1", hf_vit, 64),
]


def prepared(build: Callable[[], nn.Module], size: int) -> nn.Module:
    """Seeded model in eval mode, its classifier weights redrawn (some families zero-initialise them) and scaled
    to logits of standard deviation ~1 (random timm Inception-v3 features reach 1e9: softmaxes saturate)."""
    torch.manual_seed(0)
    model = build().eval()
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == NUM_CLASSES]
    for head in heads:
        nn.init.normal_(head.weight, std=0.05)
        nn.init.normal_(head.bias, std=0.05)
    with torch.no_grad():
        scale = model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))).std()
        for head in heads:
            head.weight /= scale
            head.bias /= scale
    return model


def smallest_grid(model: nn.Module, images: torch.Tensor) -> tuple:
    """Smallest ``h x w > 1`` grid among the 4-D module outputs (read as NCHW or NHWC; square images)."""
    grids = set()

    def hook(module, args, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[0] == len(images):
            grids.update(g for g in (tuple(output.shape[2:]), tuple(output.shape[1:3])) if g[0] == g[1] > 1)

    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return min(grids)


def to_nchw(tensor: torch.Tensor, layout: str, grid: tuple) -> torch.Tensor:
    """The explicit per-family reshape of the reference (NOT benchmark.explainers.layouts)."""
    if layout == "nchw":
        return tensor
    if layout == "nhwc":
        return tensor.permute(0, 3, 1, 2)
    prefix = int(layout.split(":")[1])  # tokens:P -- P class / distillation / register tokens first
    patches = tensor[:, prefix:]
    return patches.reshape(len(tensor), grid[0], grid[1], tensor.shape[-1]).permute(0, 3, 1, 2)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    low, high = maps.flatten(1).aminmax(dim=1)
    span = (high - low).view(-1, 1, 1)
    return torch.where(span > 0, (maps - low.view(-1, 1, 1)) / span.clamp_min(1e-30), torch.zeros_like(maps))


def reference_gradcam(model: nn.Module, layer: str, layout: str, grid: tuple, images: torch.Tensor,
                      targets: torch.Tensor) -> tuple:
    """Raw ``(B, h, w)`` Grad-CAM before the ReLU, and the normalised ``(B, H, W)`` map."""
    kept = []

    def hook(module, args, output):
        kept.append(output.detach().clone().requires_grad_(True))
        torch.set_grad_enabled(True)  # a graph from the layer on (until the no_grad block exits)
        return kept[-1].clone()  # in-place ops after the layer must not touch the kept tensor

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:  # the layers before run without autograd, as in the explainer: same kernels (SDPA differs by ~1e-6)
        with torch.no_grad():
            score = model(images).gather(1, targets[:, None]).sum()
            grad, = torch.autograd.grad(score, kept[-1])
    finally:
        handle.remove()
    acts, grads = to_nchw(kept[-1].detach(), layout, grid), to_nchw(grad, layout, grid)
    raw = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)
    up = F.interpolate(raw.relu()[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return raw, minmax(up)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for this module (see the module docstring); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CASES)
def test_gradcam_layer_layout_and_reference(case: Case):
    model = prepared(case.build, case.size)
    images = torch.randn(2, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(images).argmax(dim=1)  # the predicted classes: a map with a positive part is likely
    explainer = create_explainer("gradcam", model, input_size=(3, case.size, case.size))
    assert (explainer.target_layer, str(explainer.layout)) == (case.layer, case.layout)

    smallest = smallest_grid(model, images)
    grid = tuple(2 * side for side in smallest) if case.before_pool else smallest
    raw = explainer.unnormalized_maps(images, targets)
    assert tuple(raw.shape) == (2, *grid) and grid[0] * grid[1] > 1

    ref_raw, ref = reference_gradcam(model, case.layer, case.layout, grid, images, targets)
    scale = ref_raw.abs().amax()
    assert scale > 0, "all-zero Grad-CAM: the comparison would be vacuous"
    torch.testing.assert_close(raw / scale, ref_raw / scale, atol=1e-5, rtol=0)
    maps = explainer(images, targets)
    assert (ref.flatten(1).amax(dim=1) == 1).any(), "constant reference maps: the comparison would be vacuous"
    torch.testing.assert_close(maps, ref, atol=1e-5, rtol=0)

    if case.pkg and pytorch_grad_cam is not None:
        layer = [model.get_submodule(case.layer)]
        reshape = None if case.layout == "nchw" else (lambda t: to_nchw(t, case.layout, grid))
        with pytorch_grad_cam.GradCAM(model=model, target_layers=layer, reshape_transform=reshape) as cam:
            theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        torch.testing.assert_close(minmax(torch.from_numpy(theirs)), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
@pytest.mark.parametrize("case", CASES)
def test_perturbation_cams_give_finite_non_constant_maps(case: Case, method: str):
    model = prepared(case.small, case.small_size)
    image = torch.randn(1, 3, case.small_size, case.small_size, generator=torch.Generator().manual_seed(1))
    explainer = create_explainer(method, model, target_layer=case.small_layer,
                                 input_size=(3, case.small_size, case.small_size), chunk_size=1024)
    assert str(explainer.layout) == case.layout
    raw = explainer.unnormalized_maps(image)  # the predicted class
    assert raw.shape[0] == 1 and raw.shape[1] * raw.shape[2] > 1 and torch.isfinite(raw).all()
    assert raw.amax() > raw.amin(), "a constant map"
    maps = normalize_maps(raw, image.shape[-2:])  # the shared post-processing of explainer(image)
    assert torch.isfinite(maps).all() and maps.amin() >= 0 and maps.amax() <= 1


class Double(nn.Module):
    """A layer whose type says nothing about its output's layout."""

    def forward(self, x):
        return 2 * x


class FixedSizeCube(nn.Module):
    """Outputs ``(B, 7, 7, 7)`` from an untyped module; accepts 56 x 56 images only (its head is fixed)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 7, 8, stride=8), Double())
        self.head = nn.Linear(7 * 7 * 7, NUM_CLASSES)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def test_refusals_name_the_layer():
    # a class-token model with no layer rule: its last token layer never reaches the class token
    with pytest.raises(ValueError, match=r"'norm'.*does not reach the logits.*target_layer"):
        create_explainer("gradcam", prepared(tm("convit_tiny"), 224))
    # CrossViT's branch norm: class token + 14 x 14 patches, but the model declares no prefix -> no grid
    crossvit = prepared(tm("crossvit_tiny_240"), 240)
    with pytest.raises(ValueError, match=r"'norm\.1'.*\(1, 197, 192\).*layout="):
        create_explainer("gradcam", crossvit, target_layer="norm.1", input_size=(3, 240, 240))
    assert str(create_explainer("gradcam", crossvit, target_layer="norm.1", input_size=(3, 240, 240),
                                layout="tokens:1").layout) == "tokens:1"
    # (B, 7, 7, 7): NCHW and NHWC both fit a 56 x 56 image; no type, no resizing, no output_fmt to tell
    cube = FixedSizeCube().eval()
    with pytest.raises(ValueError, match=r"'body'.*reads as nchw and as nhwc.*layout="):
        create_explainer("gradcam", cube, input_size=(3, 56, 56))
    assert str(create_explainer("gradcam", cube, input_size=(3, 56, 56), layout="nhwc").layout) == "nhwc"


def test_class_token_hybrid_gets_a_non_zero_map_or_a_refusal():
    model = prepared(tm("coat_lite_mini"), 224)  # pools its class token; the auto layer is 'crpe4.conv_list.2'
    with pytest.raises(ValueError, match="'crpe4.conv_list.2'.*does not reach the logits.*target_layer"):
        create_explainer("gradcam", model)
