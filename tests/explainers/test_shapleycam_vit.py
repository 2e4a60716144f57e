"""Shapley-CAM on a vision transformer: an independent whole-graph reference, and where the math attention kernel
runs (after the target layer only; the layers before it run on the fused kernels, as in every other method)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmark.explainers import create_explainer
from tests.explainers.test_closed_forms import assert_close_maps, reference_postprocess

timm = pytest.importorskip("timm")
LAYER = "blocks.1.norm1"


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, num_classes=5).eval()


def _hf_vit():
    """A tiny random Hugging Face ViT classifier; its attention runs through ``scaled_dot_product_attention``."""
    tf = pytest.importorskip("transformers")
    from benchmark.runtime.hf_backbone import HFClassifier

    torch.manual_seed(0)
    config = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                          intermediate_size=64, num_labels=5, attn_implementation="sdpa")
    return HFClassifier(tf.ViTForImageClassification(config).eval()).eval()


def _reference(model, images, targets, score, layer_name=LAYER):
    """``sum_k mean_hw(g - H A / 2)_k A_k`` with ``g`` and ``H A`` from ``torch.autograd.functional`` on the float64
    model (math kernel everywhere): the score as a function of the 16 patch tokens at ``layer_name`` (the class
    token held fixed, as the layout adapter does)."""
    model = copy.deepcopy(model).double()
    images = images.double()
    layer = model.get_submodule(layer_name)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        kept = []
        handle = layer.register_forward_hook(lambda m, a, out: kept.append(out))
        model(images)
        handle.remove()
    cls, patches = kept[0][:, :1], kept[0][:, 1:]
    raws = []
    for i in range(len(images)):
        def fn(tokens, i=i):
            handle = layer.register_forward_hook(lambda m, a, out: torch.cat([cls[i:i + 1], tokens[None]], 1))
            try:
                with sdpa_kernel(SDPBackend.MATH):
                    logits = model(images[i:i + 1])[0]
            finally:
                handle.remove()
            c = int(targets[i])
            return logits[c] + (F.log_softmax(logits, 0)[c] if score == "rest" else 0)

        grad = torch.autograd.functional.jacobian(fn, patches[i])
        _, hvp = torch.autograd.functional.hvp(fn, patches[i], patches[i])
        weights = (grad - hvp / 2).mean(dim=0)  # (D,) over the 16 positions
        raws.append((patches[i] @ weights).view(4, 4))
    return reference_postprocess(torch.stack(raws), size=(32, 32))


@pytest.mark.parametrize("score", ["rest", "logit"])
def test_shapleycam_on_a_vit_equals_the_whole_graph_reference(vit, score):
    images, targets = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 3, 4])
    ours = create_explainer("shapleycam", vit, target_layer=LAYER, input_size=(3, 32, 32), score=score)
    assert str(ours.layout) == "tokens:1"
    maps = ours(images, targets)
    ref = _reference(vit, images, targets, score)
    assert_close_maps(maps, ref)
    gradcam = create_explainer("gradcam", vit, target_layer=LAYER, input_size=(3, 32, 32))(images, targets)
    assert (maps - gradcam).abs().max() > 1e-2  # the Hessian term is not zero (layer norm, softmax attention)


def test_shapleycam_on_a_hugging_face_vit_equals_the_whole_graph_reference():
    """Hugging Face's ViT attends through ``scaled_dot_product_attention`` (its fused CPU kernel has no double
    backward either); at the default layer, the last block's ``layernorm_before``, through the layout adapter."""
    model = _hf_vit()
    assert model.model.config._attn_implementation == "sdpa"
    layer = model.default_target_layer
    assert layer.endswith("2.layernorm_before")
    images, targets = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 2, 4])
    ours = create_explainer("shapleycam", model, target_layer=layer, input_size=(3, 32, 32))
    assert str(ours.layout) == "tokens:1"
    assert_close_maps(ours(images, targets), _reference(model, images, targets, "rest", layer))


def test_only_the_layers_after_the_target_run_on_the_math_kernel(vit):
    """The attention kernels' flags, read as each block starts: the fused ones on before the target layer's block,
    only the math one after it (for the double backward), and restored when the call returns."""
    seen = {}
    shapley = create_explainer("shapleycam", vit, target_layer=LAYER, input_size=(3, 32, 32))

    def record(block):
        def hook(module, args):  # only the math kernel, or any fused one
            backends = torch.backends.cuda
            fused = backends.flash_sdp_enabled() or backends.mem_efficient_sdp_enabled() or backends.cudnn_sdp_enabled()
            seen[block] = "math" if backends.math_sdp_enabled() and not fused else "fused"
        return hook

    handles = [vit.get_submodule(f"blocks.{b}").register_forward_pre_hook(record(b)) for b in range(3)]
    try:
        shapley(torch.randn(2, 3, 32, 32))
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {0: "fused", 1: "fused", 2: "math"}
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
