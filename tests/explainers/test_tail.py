"""torch.fx split at the target layer: prefix + tail equals the model's own forward; Ablation-CAM uses it."""
import pytest
import torch
import torchvision
from torch import nn

from benchmark.explainers import create_explainer
from benchmark.explainers.tail import split_at_layer
from benchmark.runtime.backbones import create_backbone


def _tv(name):
    torch.manual_seed(0)
    return torchvision.models.get_model(name, num_classes=7).eval()


CASES = [  # (model factory, layer, expected number of live-in values)
    (lambda: _tv("resnet18"), "layer4", 0),
    (lambda: _tv("resnet18"), "layer4.0.conv1", 1),  # layer4.0's downsample shortcut bypasses conv1
    (lambda: _tv("densenet121"), "features.norm5", 0),  # functional relu + pool after the layer
    (lambda: _tv("vgg11"), "features.19", 0),
    (lambda: _tv("mobilenet_v3_small"), "features.12", 0),
    (lambda: create_backbone("synthetic/res_cnn").model, "features", 0),
]


@pytest.mark.parametrize("factory, layer, live_ins", CASES)
def test_prefix_then_tail_is_the_models_forward(factory, layer, live_ins):
    model = factory()
    split = split_at_layer(model, layer)
    assert split is not None and split.num_live_ins == live_ins
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        activation, values = split.run_prefix(x)
        reference = {}
        layer_module = model.get_submodule(layer)
        handle = layer_module.register_forward_hook(lambda m, a, out: reference.update(a=out.clone()))  # -> None
        logits = model(x)
        handle.remove()
        torch.testing.assert_close(activation, reference["a"], rtol=0, atol=0)
        # DenseNet's tail starts with an in-place ReLU: the tail gets copies, as Ablation-CAM gives it
        torch.testing.assert_close(split.run_tail(activation.clone(), values), logits, rtol=0, atol=1e-6)
        # a subset of the batch through the tail, as Ablation-CAM runs its chunks
        torch.testing.assert_close(split.run_tail(activation[1:].clone(), [v[1:] for v in values]), logits[1:],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory, layer, live_ins", CASES[:4])
def test_ablationcam_through_the_tail_equals_full_hooked_forwards(factory, layer, live_ins):
    model = factory()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    fast = create_explainer("ablationcam", model, target_layer=layer, input_size=(3, 64, 64), chunk_size=100)
    reference = create_explainer("ablationcam", model, target_layer=layer, input_size=(3, 64, 64), chunk_size=100,
                                 use_tail=False)
    assert fast._split() is not None and reference._split() is None
    torch.testing.assert_close(fast(x), reference(x), rtol=0, atol=1e-5)


class DataDependent(nn.Module):
    """Control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 4)

    def forward(self, x):
        h = self.conv(x).relu()
        if h.mean() > -1:
            h = h * 1.0
        return self.fc(h.mean(dim=(2, 3)))


class BatchSizeLiveIn(nn.Module):
    """The tail reads an int computed before the layer (no batch dimension to slice)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 4)

    def forward(self, x):
        n = x.size(0)
        h = self.conv(x).relu()
        return self.fc(h.mean(dim=(2, 3))).view(n, -1)


@pytest.mark.parametrize("model_cls, traceable", [(DataDependent, False), (BatchSizeLiveIn, True)])
def test_models_without_a_usable_split_fall_back_to_full_forwards(model_cls, traceable):
    torch.manual_seed(0)
    model = model_cls().eval()
    x = torch.randn(3, 3, 16, 16)
    split = split_at_layer(model, "conv")
    assert (split is not None) == traceable
    if split is not None:
        assert split.run_prefix(x) is None  # an int live-in: the tail cannot run on a chunk
    fast = create_explainer("ablationcam", model, target_layer="conv", input_size=(3, 16, 16), chunk_size=5)
    reference = create_explainer("ablationcam", model, target_layer="conv", input_size=(3, 16, 16), chunk_size=5,
                                 use_tail=False)
    torch.testing.assert_close(fast(x), reference(x), rtol=0, atol=0)


def test_a_layer_called_twice_or_missing_gives_no_split():
    shared = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    assert split_at_layer(model, "0") is None and split_at_layer(model, "nope") is None
