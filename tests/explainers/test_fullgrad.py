"""FullGrad: the completeness of the full-gradient decomposition (Srinivas & Fleuret 2019, Eq. 3) and a
transcription of the authors' ``saliency`` (idiap/fullgrad-saliency: backward hooks on every layer with a bias,
batch norm's effective bias, ``_postProcess`` and ``align_corners=True`` upsampling), its ``1e-6`` epsilon set to 0
as ours."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from benchmark.explainers import create_explainer


def _vgg():
    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(num_classes=6).eval()
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # the authors' backward hooks need the layers' outputs unmodified
    with torch.no_grad():  # running statistics that are not the identity, so the effective biases matter
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.1, 0.1)
    return model


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_completeness_the_full_gradients_sum_to_the_logit(arch):
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=6).eval() if arch == "resnet18" else _vgg()
    images, targets = torch.randn(3, 3, 64, 64), torch.tensor([0, 5, 2])
    fullgrad = create_explainer("fullgrad", model, input_size=(3, 64, 64))
    input_term, terms, logits = fullgrad.full_gradients(images, targets)
    total = input_term.sum(dim=(1, 2, 3)).double() + sum(t.flatten(1).sum(dim=1).double() for t in terms)
    assert torch.allclose(total, logits.gather(1, targets[:, None]).squeeze(1).double(), rtol=1e-4, atol=1e-5)


def _authors_saliency(model, image, target, eps=0.0):
    """idiap/fullgrad-saliency's FullGrad.saliency for one image, transcribed (``eps`` their 1e-6)."""
    biases, grads, handles = [], [], []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            if isinstance(m, nn.BatchNorm2d):
                biases.append((-(m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)) + m.bias).data)
            elif m.bias is not None:
                biases.append(m.bias.data)
            handles.append(m.register_full_backward_hook(
                lambda mod, gin, gout: grads.append(gout[0]) if mod.bias is not None else None))
    image = image.clone().requires_grad_()
    out = model(image)
    scalar = -1.0 * F.nll_loss(out, torch.tensor([target]), reduction="sum")
    input_grad = torch.autograd.grad(scalar, image)[0]
    for h in handles:
        h.remove()

    def post(x):
        x = abs(x)
        x = x - x.flatten(1).min(1, keepdim=True)[0].unsqueeze(1).unsqueeze(1)
        top = x.flatten(1).max(1, keepdim=True)[0].unsqueeze(1).unsqueeze(1) + eps
        return x / top if eps else torch.where(top > 0, x / top, torch.zeros_like(x))  # 0/0: an all-zero term

    cam = post(input_grad * image).sum(1, keepdim=True)
    for i in range(len(biases)):
        g = grads[len(biases) - 1 - i]
        b = biases[i].view([1, -1] + [1] * (g.ndim - 2))
        if g.ndim == 4:
            cam = cam + F.interpolate(post(g * b), size=image.shape[-2:], mode="bilinear",
                                      align_corners=True).sum(1, keepdim=True)
    return cam[0, 0].detach()


def test_equals_the_authors_saliency():
    model, images, targets = _vgg(), torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)), [1, 4]
    raw = create_explainer("fullgrad", model, input_size=(3, 64, 64)).unnormalized_maps(images, torch.tensor(targets))
    for i, t in enumerate(targets):
        ref = _authors_saliency(model, images[i:i + 1], t)
        assert (raw[i] - ref).abs().max() <= 1e-5 * ref.abs().max()
        # the authors' epsilon only matters where a term's maximum is small: here below 1e-3 of the map
        assert (raw[i] - _authors_saliency(model, images[i:i + 1], t, eps=1e-6)).abs().max() <= 1e-3 * ref.max()


def test_a_model_where_completeness_fails_is_refused():
    """A vision transformer's layer norms, attention and GELUs hold biases the decomposition cannot see."""
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=4).eval()
    fullgrad = create_explainer("fullgrad", vit, input_size=(3, 32, 32))
    with pytest.raises(ValueError, match="decomposition is incomplete on VisionTransformer.*piecewise-linear"):
        fullgrad(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
