"""Every registered explainer leaves the model as it found it, and sees the layer's real output.

References: ``BaseExplainer``'s contract (base.py module docstring: hooks and train/eval flags
restored in ``finally``, parameter ``.grad`` never written, output ``(B, H, W)`` float32 in
[0, 1] on the images' device without graph); NOTES.md section 4 on in-place ops after the hooked
layer (DenseNet ``F.relu(inplace=True)`` after ``features.norm5``, ResNet ``out += identity``
after ``bn2``), checked against a separate forward of the sub-network; Lightning's predict
loop, which runs under ``torch.inference_mode()``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from benchmark.explainers import create_explainer, list_explainers
from benchmark.explainers.registry import _REGISTRY

SIZE = 32
NUM_CLASSES = 5
LAYER = "features"


# Module-level, so that copies of the model (Score-CAM's inference copy) share the counter.
BOMB = {"fuse": 0, "calls": 0}


@pytest.fixture(autouse=True)
def disarm_bomb():
    """Reset the :class:`Bomb` counter around every test."""
    BOMB.update(fuse=0, calls=0)
    yield
    BOMB.update(fuse=0, calls=0)


class Bomb(nn.Module):
    """Identity that raises ``RuntimeError("boom")`` on the ``BOMB["fuse"]``-th forward (0: never).

    Calls with a non-tensor (a ``torch.fx`` Proxy while a model copy is traced) are not counted.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            BOMB["calls"] += 1
            if BOMB["fuse"] and BOMB["calls"] >= BOMB["fuse"]:
                raise RuntimeError("boom")
        return x


class TinyNet(nn.Module):
    """Small CNN: ``features`` (target layer, 16x16 at 32x32) -> bomb -> dropout -> GAP -> linear.

    ``features`` contains a BatchNorm whose train/eval flag the tests set apart from the rest.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.bomb = Bomb()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.bomb(self.features(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TinyViT(VisionTransformer):
    """2-block timm ViT (8x8 patches, dropout 0.5 on the attention and before the head) -> bomb -> head, for the
    explainers that read attention (``requires_attention``) and refuse CNNs."""

    def __init__(self) -> None:
        super().__init__(img_size=SIZE, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=NUM_CLASSES,
                         drop_rate=0.5, attn_drop_rate=0.5)
        self.bomb = Bomb()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return super().forward_head(self.bomb(x), pre_logits)


def needs_vit(name: str) -> bool:
    """Whether explainer ``name`` explains ViT-family models only (:class:`TinyViT` instead of :class:`TinyNet`)."""
    return getattr(_REGISTRY[name], "requires_attention", False)


def set_apart(model: nn.Module) -> nn.Module:
    """The submodule whose train/eval flag :func:`make_model` sets apart from the rest."""
    return model.blocks[1] if isinstance(model, TinyViT) else model.features[1]


def make_model(name: str = "gradcam") -> nn.Module:
    """Seeded :class:`TinyNet` (:class:`TinyViT` for ``name`` that :func:`needs_vit`) in train mode with one
    submodule (the BatchNorm; the ViT's second block) in eval mode.

    Returns:
        The model; all its parameters require grad.
    """
    torch.manual_seed(0)
    model = (TinyViT() if needs_vit(name) else TinyNet()).train()
    set_apart(model).eval()
    return model


def make_explainer(name: str, model: nn.Module):
    """Small-budget explainer on ``model.features``.

    Args:
        name: registered explainer name.
        model: the network.

    Returns:
        The explainer.
    """
    options = {"smoothgradcampp": {"n_samples": 2}, "occlusion": {"patch_size": 9, "stride": 4},
               "integratedgradients": {"steps": 4}, "gradientshap": {"n_samples": 2}}.get(name, {})
    return create_explainer(name, model, target_layer=LAYER, input_size=(3, SIZE, SIZE), **options)


def module_state(model: nn.Module) -> dict:
    """Per-module training flags, by name."""
    return {name: mod.training for name, mod in model.named_modules()}


def assert_untouched(model: nn.Module, flags: dict) -> None:
    """No hooks left, flags as before, no parameter gradients, grad mode on.

    Args:
        model: the network after the explainer ran.
        flags: :func:`module_state` before it ran.
    """
    for name, mod in model.named_modules():
        assert not mod._forward_hooks, f"forward hook left on {name!r}"
        assert not mod._forward_pre_hooks, f"forward pre-hook left on {name!r}"
        assert not mod._backward_hooks and not mod._backward_pre_hooks, f"backward hook on {name!r}"
    assert module_state(model) == flags
    assert model.training and not set_apart(model).training
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert torch.is_grad_enabled()


def assert_valid_maps(maps: torch.Tensor, images: torch.Tensor) -> None:
    """Output contract of ``BaseExplainer.__call__``.

    Args:
        maps: the explainer's output.
        images: its input.
    """
    assert maps.shape == (images.shape[0], *images.shape[-2:])
    assert maps.dtype == torch.float32
    assert maps.device == images.device
    assert maps.grad_fn is None and not maps.requires_grad
    assert maps.isfinite().all()
    assert maps.min().item() >= 0.0 and maps.max().item() <= 1.0


@pytest.fixture
def images():
    """Two seeded 32x32 inputs that require grad (their ``.grad`` must stay None)."""
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).requires_grad_()


@pytest.mark.parametrize("name", list_explainers())
def test_normal_call_leaves_model_untouched(name, images):
    """Reference: BaseExplainer contract (hooks, flags, grads, output)."""
    model = make_model(name)
    flags = module_state(model)
    maps = make_explainer(name, model)(images, torch.tensor([1, 3]), torch.tensor([10, 11]))
    assert_valid_maps(maps, images)
    assert_untouched(model, flags)
    assert images.grad is None
    # Default targets (the predicted classes) work too.
    assert_valid_maps(make_explainer(name, model)(images.detach()), images)
    assert_untouched(model, flags)


@pytest.mark.parametrize("fuse", [1, 2], ids=["first-forward", "second-forward"])
@pytest.mark.parametrize("name", list_explainers())
def test_exception_in_forward_leaves_model_untouched(name, images, fuse):
    """Reference: BaseExplainer contract; an exception after the target layer propagates as is.

    ``fuse=2`` raises in the second forward (masked / ablated / noisy forwards) for the methods
    that run several; the others finish normally. The model-agnostic baselines never call it.
    """
    model = make_model(name)
    flags = module_state(model)
    explainer = make_explainer(name, model)
    BOMB.update(fuse=fuse, calls=0)
    try:
        explainer(images, torch.tensor([1, 3]))
        error = None
    except RuntimeError as err:
        error = err
    assert (error is not None) == (BOMB["calls"] >= fuse)  # raised iff the bomb went off
    assert error is None or str(error) == "boom"
    if fuse == 1:  # every method but the two model-free baselines runs the model (layer, input, attention, masks)
        assert (error is not None) == (name not in ("center", "fakecam"))
    assert_untouched(model, flags)
    BOMB.update(fuse=0)
    assert_valid_maps(explainer(images, torch.tensor([1, 3])), images)
    assert_untouched(model, flags)


@pytest.mark.parametrize("name", list_explainers())
def test_targets_out_of_range_leaves_model_untouched(name, images):
    """Reference: BaseExplainer contract; out-of-range targets raise inside the hooked forward."""
    model = make_model(name)
    flags = module_state(model)
    explainer = make_explainer(name, model)
    called = []
    handle = model.register_forward_pre_hook(lambda mod, args: called.append(True))
    try:
        explainer(images, torch.tensor([1, NUM_CLASSES]))
    except ValueError as err:
        assert f"[{NUM_CLASSES}]" in str(err)
        raised = True
    else:
        raised = False
    finally:
        handle.remove()
    # Methods that run the model must reject the target; baselines that never run it cannot.
    assert raised == bool(called)
    assert_untouched(model, flags)


@pytest.mark.parametrize("name", list_explainers())
def test_inference_mode(name):
    """Reference: Lightning's predict loop runs under ``torch.inference_mode()``; same maps."""
    model = make_model(name)
    flags = module_state(model)
    explainer = make_explainer(name, model)
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    expected = explainer(images, torch.tensor([0, 4]), torch.tensor([3, 4]))
    with torch.inference_mode():
        inf_images = images.clone()
        maps = explainer(inf_images, torch.tensor([0, 4]), torch.tensor([3, 4]))
    assert_valid_maps(maps, images)
    assert torch.equal(maps, expected)
    assert_untouched(model, flags)
    # A first call under inference mode (lazily built state such as Score-CAM's model copy),
    # then a normal call, on a fresh explainer.
    fresh = make_explainer(name, model)
    with torch.inference_mode():
        first = fresh(images.clone(), torch.tensor([0, 4]), torch.tensor([3, 4]))
    assert torch.equal(first, expected)
    assert torch.equal(fresh(images, torch.tensor([0, 4]), torch.tensor([3, 4])), expected)
    assert_untouched(model, flags)


@pytest.mark.parametrize("name", list_explainers())
def test_maps_follow_in_place_weight_updates(name):
    """Reference: a fresh explainer on the updated model (e.g. a model-randomisation sanity check).

    The weights change in place between two calls, as in a cascading-randomisation sanity check
    (Adebayo et al. 2018), ``load_state_dict`` or fine-tuning with the explainer kept around.
    """
    model = make_model(name).eval()
    explainer = make_explainer(name, model)
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    targets, indices = torch.tensor([0, 4]), torch.tensor([3, 4])
    before = explainer(images, targets, indices)
    torch.manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param))
    after = explainer(images, targets, indices)
    fresh = make_explainer(name, model)(images, targets, indices)
    assert (after - fresh).abs().max().item() <= 1e-5
    if name not in ("center", "fakecam", "random"):  # model-dependent maps do change
        assert (after - before).abs().max().item() > 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list_explainers())
def test_cuda_output_device(name):
    """Reference: BaseExplainer contract (maps on the images' device); CPU vs CUDA maps agree."""
    model = make_model(name)
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    targets, indices = torch.tensor([0, 4]), torch.tensor([3, 4])
    cpu = make_explainer(name, model)(images, targets, indices)
    model.cuda()
    maps = make_explainer(name, model)(images.cuda(), targets.cuda(), indices.cuda())
    assert_valid_maps(maps, images.cuda())
    assert (maps.cpu() - cpu).abs().max().item() <= 1e-4


# ------------------------------------------------------------------ in-place ops after the layer
@pytest.fixture(scope="module")
def inputs64():
    """Two seeded 64x64 inputs and targets."""
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)), torch.tensor([1, 6])


def test_densenet_norm5_sees_pre_relu_output(inputs64):
    """Reference: ``features(x)`` (norm5's output), then ``F.relu`` / pool / classifier by hand.

    torchvision's DenseNet applies ``F.relu(features, inplace=True)`` right after norm5.
    """
    images, targets = inputs64
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=10).eval()
    got = create_explainer("gradcam", model, target_layer="features.norm5").forward_layer(
        images, targets, None, True)
    with torch.no_grad():
        norm5 = model.features(images)
    assert (norm5 < 0).any()  # the in-place ReLU would change these
    assert torch.equal(got.activations, norm5)
    leaf = norm5.clone().requires_grad_()
    logits = model.classifier(F.adaptive_avg_pool2d(F.relu(leaf), 1).flatten(1))
    grad = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), leaf)[0]
    assert torch.allclose(got.gradients, grad, rtol=1e-5, atol=1e-8)
    assert torch.allclose(got.logits, logits.detach(), rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_resnet_bn2_sees_output_before_residual_add(inputs64):
    """Reference: ResNet-18's ``layer4.1`` recomputed by hand; ``out += identity`` follows bn2."""
    images, targets = inputs64
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    got = create_explainer("gradcam", model, target_layer="layer4.1.bn2").forward_layer(
        images, targets, None, True)
    block = model.layer4[1]
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        identity = model.layer4[0](model.layer3(model.layer2(model.layer1(x))))
        bn2 = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(identity)))))
    assert (bn2 < 0).any()
    assert torch.equal(got.activations, bn2)
    leaf = bn2.clone().requires_grad_()
    logits = model.fc(model.avgpool(F.relu(leaf + identity)).flatten(1))
    grad = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), leaf)[0]
    assert torch.allclose(got.gradients, grad, rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in model.parameters())
