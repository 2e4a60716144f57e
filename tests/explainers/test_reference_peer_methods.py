"""The methods of pytorch-grad-cam and torch-cam that we added for parity, against those packages (test-only).

EigenGrad-CAM: pytorch-grad-cam's ``get_2d_projection`` centres the columns and keeps LAPACK's SVD sign, which is
arbitrary. Ours (``center=True``) equals its raw projection up to that sign on every image; where the signs agree
the final maps agree, and where they do not, pytorch-grad-cam's ReLU keeps the other half of the map.
"""
import numpy as np
import pytest
import torch
import torchvision

from benchmark.explainers import create_explainer

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

SIZE = 64


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.double().flatten(1)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    return torch.where(high > low, (flat - low) / (high - low), torch.zeros_like(flat)).view_as(maps)


def _package(cam_class, model, layer, images, targets, target=ClassifierOutputTarget, **kwargs) -> torch.Tensor:
    """A pytorch-grad-cam method's maps, re-normalised per image (its resize commutes with min-max)."""
    with cam_class(model, [model.get_submodule(layer)], **kwargs) as cam:
        out = cam(images, [target(int(c)) for c in targets])
    model.zero_grad(set_to_none=True)
    return _minmax(torch.from_numpy(np.asarray(out)))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_eigengradcam_equals_grad_cam_package_up_to_its_svd_sign(resnet, images, layer):
    targets = torch.tensor([1, 7, 0, 3, 9, 4])
    explainer = create_explainer("eigengradcam", resnet, target_layer=layer, input_size=(3, SIZE, SIZE), center=True)
    ours_raw = explainer.unnormalized_maps(images, targets).double()
    acts, grads = explainer.layer_gradients(images, targets)
    theirs_raw = torch.from_numpy(get_2d_projection((grads * acts).numpy())).double()
    sign = torch.sign((ours_raw * theirs_raw).sum(dim=(1, 2)))
    scale = theirs_raw.abs().amax()
    assert (ours_raw - sign.view(-1, 1, 1) * theirs_raw).abs().max() <= 1e-5 * scale
    ours = explainer(images, targets)
    theirs = _package(pytorch_grad_cam.EigenGradCAM, resnet, layer, images, targets)
    same = sign > 0
    assert (ours[same].double() - theirs[same]).abs().max() <= 1e-5
    if (~same).any():  # the other sign: the package shows the half of the map that ours cuts off
        other = create_explainer("eigengradcam", resnet, target_layer=layer, input_size=(3, SIZE, SIZE),
                                 center=True)
        flipped = _minmax(torch.nn.functional.interpolate(
            (-other.unnormalized_maps(images[~same], targets[~same])).relu()[:, None], size=(SIZE, SIZE),
            mode="bilinear", align_corners=False)[:, 0])
        assert (flipped - theirs[~same]).abs().max() <= 1e-5
    # our sign rule: the largest magnitude of the projection is positive
    assert (ours_raw.flatten(1).amax(dim=1) >= -ours_raw.flatten(1).amin(dim=1)).all()


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "poly", "linear", "cosine"])
def test_kpcacam_equals_grad_cam_package(resnet, images, kernel):
    """pytorch-grad-cam's KPCA_CAM (scikit-learn's KernelPCA, whose sign is deterministic) on layer3: 4 x 4
    positions, scikit-learn's dense solver."""
    targets = torch.tensor([1, 7, 0, 3, 9, 4])
    ours = create_explainer("kpcacam", resnet, target_layer="layer3", input_size=(3, SIZE, SIZE), kernel=kernel)
    ref = _package(pytorch_grad_cam.KPCA_CAM, resnet, "layer3", images, targets, kernel=kernel)
    maps = ours(images, targets)
    assert (maps.double() - ref).abs().max() <= 1e-5
    assert maps.flatten(1).amax(dim=1).min() == 1.0  # no all-zero map in the comparison


def test_kpcacam_raw_projection_equals_scikit_learn_on_a_larger_grid(resnet):
    """On 8 x 8 = 64 positions (dense solver) and 16 x 16 = 256 (ARPACK), the raw coordinates equal
    ``KernelPCA(n_components=1).fit_transform`` of the centred activations."""
    decomposition = pytest.importorskip("sklearn.decomposition")
    for size in (128, 256):
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
        ours = create_explainer("kpcacam", resnet, target_layer="layer3", input_size=(3, size, size))
        raw = ours.unnormalized_maps(x, torch.tensor([0, 1])).double()
        acts = create_explainer("gradcam", resnet, target_layer="layer3",
                                input_size=(3, size, size)).layer_gradients(x, torch.tensor([0, 1]))[0]
        for i in range(2):
            matrix = acts[i].flatten(1).T.double().numpy()
            matrix = matrix - matrix.mean(axis=0)
            ref = decomposition.KernelPCA(n_components=1, kernel="sigmoid").fit_transform(matrix)[:, 0]
            assert np.abs(raw[i].flatten().numpy() - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("score, target_class", [("rest", "ClassifierOutputReST"), ("logit", "ClassifierOutputTarget")])
@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_shapleycam_equals_grad_cam_package(resnet, images, score, target_class, layer):
    """pytorch-grad-cam's ShapleyCAM (the authors' code) with its ReST target or the logit."""
    targets = torch.tensor([1, 7, 0, 3, 9, 4])
    ours = create_explainer("shapleycam", resnet, target_layer=layer, input_size=(3, SIZE, SIZE), score=score)
    maps = ours(images, targets)
    ref = _package(pytorch_grad_cam.ShapleyCAM, resnet, layer, images, targets,
                   target=getattr(pytorch_grad_cam.utils.model_targets, target_class))
    assert (maps.double() - ref).abs().max() <= 1e-5
    assert (maps.flatten(1).amax(dim=1) == 1.0).sum() >= 2  # not a comparison of all-zero maps


def test_fullgrad_pytorch_grad_cam_convention_equals_the_package():
    """pytorch-grad-cam's FullGrad (each channel rescaled on its own, OpenCV upsampling, 1e-7 epsilons made
    negligible by a 1e5-scaled head) on VGG-11-BN with running statistics that are not the identity."""
    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(num_classes=6).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.ReLU):
                module.inplace = False
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        model.classifier[6].weight.mul_(1e5)
        model.classifier[6].bias.mul_(1e5)
    images, targets = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4)), torch.tensor([2, 5])
    ours = create_explainer("fullgrad", model, input_size=(3, SIZE, SIZE), convention="pytorch-grad-cam")
    with pytorch_grad_cam.FullGrad(model, []) as cam:
        ref = _minmax(torch.from_numpy(np.asarray(cam(images, [ClassifierOutputTarget(int(c)) for c in targets]))))
    model.zero_grad(set_to_none=True)
    maps = ours(images, targets)
    assert (maps.double() - ref).abs().max() <= 1e-4
    authors = create_explainer("fullgrad", model, input_size=(3, SIZE, SIZE))(images, targets)
    assert (authors - maps).abs().max() > 1e-2  # the two conventions differ


def test_finercam_softmax_weighting_equals_grad_cam_package(resnet, images):
    """``weighting="softmax"`` (alpha 1) is pytorch-grad-cam's ``FinerCAM`` (the authors' current
    ``FinerWeightedTarget``), with its own choice of the predicted class and references."""
    ours = create_explainer("finercam", resnet, target_layer="layer3", input_size=(3, SIZE, SIZE),
                            weighting="softmax")
    assert ours.alpha == 1.0
    maps = ours(images).double()  # the predicted classes, as the package's targets=None
    with pytorch_grad_cam.FinerCAM(resnet, [resnet.layer3]) as cam:
        ref = _minmax(torch.from_numpy(np.asarray(cam(images))))
    resnet.zero_grad(set_to_none=True)
    assert (maps - ref).abs().max() <= 1e-5
    mean = create_explainer("finercam", resnet, target_layer="layer3", input_size=(3, SIZE, SIZE))(images)
    assert (mean.double() - ref).abs().max() > 1e-3  # the two conventions differ


def test_finercam_mean_weighting_equals_torchcam(resnet, images):
    """``weighting="mean"`` (default, alpha 0.6) is torch-cam 0.5.0's ``FinerCAM`` over Grad-CAM (its maps on the
    layer's grid, before upsampling)."""
    methods = pytest.importorskip("torchcam.methods")
    targets = [3, 0, 9, 5, 5, 1]
    ours = create_explainer("finercam", resnet, target_layer="layer3", input_size=(3, SIZE, SIZE))
    assert ours.alpha == 0.6
    raw = ours.unnormalized_maps(images, torch.tensor(targets)).relu()
    with methods.FinerCAM(resnet, "layer3", input_shape=(3, SIZE, SIZE)) as extractor:
        scores = resnet(images)
        ref = extractor(targets, scores)[0].detach()  # ReLU and min-max on the layer's grid
    resnet.zero_grad(set_to_none=True)
    assert (_minmax(raw) - ref.double()).abs().max() <= 1e-5


def _tiny_vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5).eval()


VIT_CASES = [("kpcacam", "KPCA_CAM", {}), ("eigengradcam", "EigenGradCAM", {"center": True})]


@pytest.mark.parametrize("name, cls, kwargs", VIT_CASES)
def test_token_layers_of_a_vision_transformer_through_the_layout_adapter(name, cls, kwargs):
    """On a timm ViT's ``blocks.1.norm1`` (class token + 4 x 4 patch tokens) our layout adapter and the package's
    ``reshape_transform`` (drop the class token, reshape to the grid) give the same maps (EigenGrad-CAM: where the
    SVD signs agree)."""
    vit = _tiny_vit()
    images, targets = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(6)), torch.tensor([0, 1, 2, 4])
    ours = create_explainer(name, vit, input_size=(3, 32, 32), **kwargs)
    assert (ours.target_layer, str(ours.layout)) == ("blocks.1.norm1", "tokens:1")
    maps = ours(images, targets).double()

    def reshape(t):
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    with getattr(pytorch_grad_cam, cls)(vit, [vit.get_submodule("blocks.1.norm1")], reshape_transform=reshape) as cam:
        ref = _minmax(torch.from_numpy(np.asarray(cam(images, [ClassifierOutputTarget(int(c)) for c in targets]))))
    vit.zero_grad(set_to_none=True)
    close = (maps - ref).flatten(1).abs().amax(dim=1) <= 1e-5
    assert close.all() if name != "eigengradcam" else close.any()
    assert (maps.flatten(1).amax(dim=1) == 1.0).sum() >= 2


def test_shapleycam_runs_on_a_vision_transformer():
    """pytorch-grad-cam's ShapleyCAM cannot run here (its weights see the 3-D token activations: "Invalid activation
    shape", and the fused attention kernel has no double backward); ours reads the tokens through the layout adapter
    and runs attention after the target layer on the math kernel. The Hessian term is not zero there (layer norm,
    softmax attention)."""
    vit = _tiny_vit()
    images, targets = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(6)), torch.tensor([0, 1, 2, 4])
    shapley = create_explainer("shapleycam", vit, input_size=(3, 32, 32), score="logit")
    assert str(shapley.layout) == "tokens:1"
    maps = shapley(images, targets)
    gradcam = create_explainer("gradcam", vit, input_size=(3, 32, 32))(images, targets)
    assert maps.shape == (4, 32, 32) and torch.isfinite(maps).all() and (maps - gradcam).abs().max() > 1e-3
