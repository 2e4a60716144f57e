"""Target-layer resolution: the papers' table, auto-detection, and names on real backbones."""
import pytest
import timm
import torchvision
from torch import nn

from benchmark.explainers import PAPER_LAYERS, candidate_layers, resolve_target_layer

HEAD = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)]


class NormAct(nn.Module):
    """timm's BatchNormAct2d pattern: norm -> Identity drop -> in-place activation."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.drop(x * 2.0))


def test_pass_through_layers_neither_chosen_nor_disqualifying():
    assert resolve_target_layer(nn.Sequential(nn.Conv2d(3, 4, 3), NormAct(), *HEAD), None, (3, 8, 8)) == "1"
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(), *HEAD)
    assert resolve_target_layer(net, None, (3, 8, 8)) == "1"


def test_pooling_output_and_its_container_excluded():
    features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    net = nn.Sequential(features, *HEAD)
    assert resolve_target_layer(net, None, (3, 10, 10)) == "0.1"
    assert candidate_layers(net, (3, 10, 10)) == ["0.0", "0.1"]


@pytest.mark.parametrize("factory, expected", [
    # the papers' layers (Grad-CAM, the reproduction study)
    (lambda: torchvision.models.vgg16(), "features.29"),
    (lambda: torchvision.models.vgg16_bn(), "features.42"),
    (lambda: torchvision.models.alexnet(), "features.11"),
    (lambda: torchvision.models.resnet50(), "layer4"),
    (lambda: torchvision.models.resnext50_32x4d(), "layer4"),
    (lambda: torchvision.models.densenet121(), "features.norm5"),
    (lambda: torchvision.models.googlenet(init_weights=False, aux_logits=False), "inception5b"),
    # auto-detection
    (lambda: torchvision.models.mobilenet_v2(), "features"),
    (lambda: torchvision.models.efficientnet_b0(), "features"),
    (lambda: torchvision.models.convnext_tiny(), "features"),
    (lambda: timm.create_model("mobilenetv3_small_100"), "blocks"),
    (lambda: timm.create_model("efficientnet_b0"), "bn2"),
    (lambda: timm.create_model("regnetx_002"), "s4"),
    (lambda: timm.create_model("convnext_atto"), "stages"),
])
def test_default_layers_of_known_backbones(factory, expected):
    model = factory()
    assert resolve_target_layer(model) == expected
    assert model.get_submodule(expected) is not None


def test_paper_table_covers_the_papers_families():
    assert {"VGG", "AlexNet", "ResNet", "DenseNet", "GoogLeNet"} <= set(PAPER_LAYERS)
