"""Small CNN families for the SyntheticShapes benchmark (each well under 3 MB).

All take ``(B, 3, 128, 128)`` images and end in an ``8 x 8`` feature map (stride 16, like a ResNet's
7 x 7 at 224) held by ``features``, so every CAM method explains ``features`` (found by the
auto-detection of :mod:`benchmark.explainers.layers`). The heads cover the two kinds of the papers:

* global average pooling + one linear layer (``res_cnn``, ``plain_cnn``, ``mobile_cnn``) -- the class
  score's gradient is the same at every position and for every input, so Grad-CAM, HiResCAM and
  XGrad-CAM give the same maps, and so do Grad-CAM++ and Smooth Grad-CAM++;
* flatten -> FC -> ReLU -> FC (``vgg_cnn``, the head of VGG-16 in the Grad-CAM and Grad-CAM++ papers) --
  where the gradients vary over the map and these methods differ.

* ``plain_cnn`` -- VGG-style: 3x3 conv + BN + ReLU stages with max pooling, GAP head;
* ``vgg_cnn`` -- the same kind of conv stages with VGG's fully connected head;
* ``res_cnn`` -- a small ResNet: a strided stem and one basic residual block per stage;
* ``mobile_cnn`` -- MobileNetV2-style inverted residual blocks (depthwise separable) and a 1x1 head;
* ``conv_vit`` -- a vision transformer (timm ``VisionTransformer``, class token, 4 blocks of width 96) on
  a convolutional stem (Xiao et al., NeurIPS 2021, "Early Convolutions Help Transformers See Better"):
  its 64 patch tokens form the same 8 x 8 grid, and the CAM methods explain the token layer
  ``blocks.3.norm1`` through the layout adapter (class token dropped, tokens reshaped to the grid).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch
from torch import Tensor, nn
from torchvision.models.mobilenetv2 import InvertedResidual

__all__ = ["SYNTHETIC_MODELS", "ConvStem", "SyntheticNet", "SyntheticVGG", "build_synthetic_model"]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class SyntheticNet(nn.Module):
    """``features`` -> global average pool -> ``classifier``."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def plain_cnn(num_classes: int = 8) -> SyntheticNet:
    """VGG-style plain CNN (128 -> 8 x 8 x 128)."""
    features = nn.Sequential(_conv(3, 16, 2), _conv(16, 32), nn.MaxPool2d(2), _conv(32, 64), nn.MaxPool2d(2),
                             _conv(64, 96), nn.MaxPool2d(2), _conv(96, 128), _conv(128, 128))
    return SyntheticNet(features, 128, num_classes)


class SyntheticVGG(nn.Module):
    """``features`` -> flatten -> ``classifier`` (FC -> ReLU -> FC), the head of VGG-16."""

    def __init__(self, features: nn.Module, channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.classifier = nn.Sequential(nn.Linear(channels * 8 * 8, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg_cnn(num_classes: int = 8) -> SyntheticVGG:
    """VGG-style CNN with VGG's fully connected head (128 -> 8 x 8 x 64 -> 4096 -> 64 -> classes)."""
    features = nn.Sequential(_conv(3, 16, 2), _conv(16, 32), nn.MaxPool2d(2), _conv(32, 64), nn.MaxPool2d(2),
                             _conv(64, 96), nn.MaxPool2d(2), _conv(96, 64))
    return SyntheticVGG(features, 64, 64, num_classes)


def res_cnn(num_classes: int = 8) -> SyntheticNet:
    """Small ResNet: stem (stride 2) and one basic block per stage (16, 32, 64, 128 channels)."""
    features = nn.Sequential(_conv(3, 16, 2), _BasicBlock(16, 32, 2), _BasicBlock(32, 64, 2),
                             _BasicBlock(64, 128, 2))
    return SyntheticNet(features, 128, num_classes)


def mobile_cnn(num_classes: int = 8) -> SyntheticNet:
    """MobileNetV2-style: inverted residual blocks (expansion 4) and a 1x1 conv head."""
    features = nn.Sequential(
        _conv(3, 16, 2), InvertedResidual(16, 24, 2, 4), InvertedResidual(24, 24, 1, 4),
        InvertedResidual(24, 48, 2, 4), InvertedResidual(48, 48, 1, 4), InvertedResidual(48, 96, 2, 4),
        InvertedResidual(96, 96, 1, 4),
        nn.Sequential(nn.Conv2d(96, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6(inplace=True)))
    return SyntheticNet(features, 128, num_classes)


class ConvStem(nn.Module):
    """Patch embedding of four stride-2 3x3 conv-BN-ReLU and a 1x1 projection (timm ``embed_layer``).

    Args:
        img_size: Input side (square).
        patch_size: Total stride (16: four stride-2 convolutions).
        in_chans: Input channels.
        embed_dim: Token width.
        **kwargs: timm's other patch-embedding arguments (``bias``, ``dynamic_img_pad``, ...), unused.

    Examples:
        >>> ConvStem(128, 16, 3, 96)(torch.zeros(2, 3, 128, 128)).shape
        torch.Size([2, 64, 96])
    """

    def __init__(self, img_size: int = 128, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 96,
                 **kwargs: Any) -> None:
        super().__init__()
        if patch_size != 16:
            raise ValueError(f"ConvStem has stride 16 (four stride-2 convolutions); got patch_size={patch_size}.")
        widths = (in_chans, 24, 48, embed_dim, embed_dim)
        self.img_size: Tuple[int, int] = (img_size, img_size)
        self.patch_size: Tuple[int, int] = (patch_size, patch_size)
        self.grid_size: Tuple[int, int] = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.convs = nn.Sequential(*(_conv(a, b, 2) for a, b in zip(widths, widths[1:])))
        self.proj = nn.Conv2d(embed_dim, embed_dim, 1)

    def feat_ratio(self, as_scalar: bool = True) -> int:
        """The stride of the token grid (timm reads it for feature info)."""
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.convs(x)).flatten(2).transpose(1, 2)


def conv_vit(num_classes: int = 8) -> nn.Module:
    """Small ViT on a conv stem: 128 -> 64 tokens + class token, width 96, depth 4, 3 heads."""
    from timm.models.vision_transformer import VisionTransformer  # timm is only needed for this family

    return VisionTransformer(img_size=128, patch_size=16, num_classes=num_classes, embed_dim=96, depth=4,
                             num_heads=3, mlp_ratio=3.0, global_pool="token", embed_layer=ConvStem)


#: Architecture name -> constructor ``(num_classes) -> nn.Module``.
SYNTHETIC_MODELS: Dict[str, Callable[[int], nn.Module]] = {
    "plain_cnn": plain_cnn, "res_cnn": res_cnn, "mobile_cnn": mobile_cnn, "vgg_cnn": vgg_cnn, "conv_vit": conv_vit}


def build_synthetic_model(name: str, num_classes: int = 8) -> nn.Module:
    """Random-init model ``name`` (one of :data:`SYNTHETIC_MODELS`).

    Examples:
        >>> model = build_synthetic_model("res_cnn")
        >>> model(torch.zeros(2, 3, 128, 128)).shape, model.features(torch.zeros(1, 3, 128, 128)).shape[-2:]
        (torch.Size([2, 8]), torch.Size([8, 8]))
    """
    if name not in SYNTHETIC_MODELS:
        raise KeyError(f"Unknown synthetic model {name!r}; valid: {sorted(SYNTHETIC_MODELS)}.")
    return SYNTHETIC_MODELS[name](num_classes)
