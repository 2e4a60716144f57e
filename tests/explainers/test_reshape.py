"""``layout=`` as a reshape function (pytorch-grad-cam's ``reshape_transform``): verified, then exact."""
import pytest
import torch

from benchmark.explainers import create_explainer, list_explainers
from benchmark.explainers.registry import _lookup
from benchmark.explainers.reshape import as_layout
from tests.explainers.test_layouts import Tokens, reference_gradcam

LAYER_METHODS = [n for n in list_explainers() if _lookup(n).uses_layer and n not in ("attention_rollout", "chefer")]


def grad_cam_style_reshape(tensor, height=4, width=4):
    """pytorch-grad-cam's ViT ``reshape_transform`` (its tutorial), transcribed."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def test_gradcam_with_a_reshape_equals_the_hand_reference():
    torch.manual_seed(0)
    model = Tokens(prefix=1).eval()
    images = torch.randn(2, 3, 32, 32)
    explainer = create_explainer("gradcam", model, target_layer="mix", input_size=(3, 32, 32),
                                 layout=grad_cam_style_reshape)
    assert str(explainer.layout) == f"reshape:{__name__}:grad_cam_style_reshape"
    ref = reference_gradcam(model, "mix", images, grad_cam_style_reshape)
    torch.testing.assert_close(explainer(images), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", LAYER_METHODS)
def test_every_layer_method_equals_the_builtin_token_layout(name):
    """The same layer read through the user's reshape or ``tokens:1`` gives the same maps (Ablation-CAM
    writes its zeroed channel back through the reshape; the gradient methods differentiate through it)."""
    torch.manual_seed(0)
    model = Tokens(prefix=1).eval()
    images = torch.randn(2, 3, 32, 32)
    kwargs = dict(target_layer="mix", input_size=(3, 32, 32))
    builtin = create_explainer(name, model, layout="tokens:1", **kwargs)
    custom = create_explainer(name, model, layout=grad_cam_style_reshape, **kwargs)
    torch.testing.assert_close(custom(images, indices=torch.arange(2)), builtin(images, indices=torch.arange(2)),
                               atol=1e-5, rtol=0)


def test_ablation_without_the_tail_and_a_timm_vit():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64, num_classes=4).eval()
    images = torch.randn(2, 3, 64, 64)
    kwargs = dict(target_layer="blocks.1.norm1", input_size=(3, 64, 64), chunk_size=64)
    expected = create_explainer("ablationcam", model, **kwargs).unnormalized_maps(images)
    for use_tail in (True, False):
        got = create_explainer("ablationcam", model, layout=grad_cam_style_reshape, use_tail=use_tail, **kwargs)
        torch.testing.assert_close(got.unnormalized_maps(images), expected, atol=1e-6, rtol=1e-5)


def test_import_paths(tmp_path):
    path = tmp_path / "my_reshape.py"
    path.write_text("def vit(t):\n    return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)\n")
    layout = as_layout(f"{path}:vit")
    assert str(layout) == f"reshape:{path}:vit"
    explainer = create_explainer("gradcam", Tokens(prefix=1).eval(), target_layer="mix", input_size=(3, 32, 32),
                                 layout=f"{path}:vit")
    assert explainer(torch.randn(1, 3, 32, 32)).shape == (1, 32, 32)
    assert str(as_layout("torch:flatten")) == "reshape:torch:flatten"
    with pytest.raises(ValueError, match="'package.module:function' or 'path/to/file.py:function'"):
        as_layout("no_such_module_xyz:fn")
    with pytest.raises(FileNotFoundError, match="missing.py"):
        as_layout(str(tmp_path / "missing.py") + ":fn")


@pytest.mark.parametrize("fn, reason", [
    (lambda t: t[:, 1:].mean(1)[:, :, None, None].expand(-1, -1, 4, 4), "only select and rearrange"),
    (lambda t: 2 * grad_cam_style_reshape(t), "only select and rearrange"),
    (lambda t: torch.cat([grad_cam_style_reshape(t)] * 2, dim=1), "only select and rearrange"),
    (lambda t: t[:, 1:], r"into \(B, C, h, w\).*returned \(1, 16, 5\)"),
    (lambda t: grad_cam_style_reshape(t, 2, 8), r"grid fitting the image, but it returned \(1, 5, 2, 8\)"),
    (lambda t: t.reshape(3, -1), "it raised RuntimeError"),
])
def test_a_reshape_that_computes_or_misreads_is_refused(fn, reason):
    with pytest.raises(ValueError, match=r"(?s)layout='reshape:.*" + reason) as err:
        create_explainer("gradcam", Tokens(prefix=1).eval(), target_layer="mix", input_size=(3, 32, 32), layout=fn)
    assert "target layer 'mix' of Tokens (output (1, 17, 5)" in str(err.value)
