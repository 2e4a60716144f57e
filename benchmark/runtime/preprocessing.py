"""Shared types of the model side and the data side: :class:`Preprocessing` (what a backbone expects of its
inputs), :class:`Backbone` (a model and its preprocessing) and the preprocessing presets of the shipped
model families. Both :mod:`benchmark.runtime.backbones` and :mod:`datamodules` import from here, so neither
imports the other for them; this module imports neither.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, NamedTuple, Tuple

import torch
from torch import nn
from torchvision.transforms import v2

__all__ = ["Backbone", "IMAGENET_MEAN", "IMAGENET_STD", "MNIST_MEAN", "MNIST_STD", "Preprocessing", "RESIZE_MODES",
           "imagenet_preprocessing", "mnist_preprocessing", "recorded_preprocessing", "synthetic_preprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

#: ``Preprocessing.resize_mode`` values: "shorter" resizes the shorter side to ``resize_size`` (keeps the
#: aspect ratio; torchvision, most timm tags); "squash" warps the image to ``resize_size x resize_size``
#: (Hugging Face ``{"height", "width"}`` processors, timm ``crop_mode='squash'``). The centre crop follows both.
RESIZE_MODES = ("shorter", "squash")


@dataclass(frozen=True)
class Preprocessing:
    """What a backbone expects: resize (the shorter side, or squash to a square), centre-crop, normalise.

    ``resize_mode`` is one of :data:`RESIZE_MODES`; "shorter" (the default) keeps the aspect ratio, "squash"
    warps any image to ``resize_size x resize_size`` first, as Hugging Face processors with a
    ``{"height", "width"}`` size and timm's ``crop_mode='squash'`` do.

    Raises:
        ValueError: ``resize_mode`` not one of :data:`RESIZE_MODES`.

    Examples:
        >>> p = Preprocessing((3, 224, 224), 256, 224, (0.5,) * 3, (0.5,) * 3, "bilinear")
        >>> p.transform()(torch.zeros(3, 300, 400, dtype=torch.uint8)).shape
        torch.Size([3, 224, 224])
        >>> q = Preprocessing((3, 4, 4), 4, 4, (0.0,) * 3, (1.0,) * 3, "nearest", resize_mode="squash")
        >>> image = (torch.arange(8, dtype=torch.uint8) * 30).reshape(1, 2, 4).expand(3, 2, 4)  # 2 x 4: warped to 4 x 4
        >>> (q.transform()(image)[0, :, 0] * 255).round().tolist()
        [0.0, 0.0, 120.0, 120.0]
    """

    input_size: Tuple[int, int, int]  #: (C, H, W) fed to the model
    resize_size: int  #: shorter side after resizing
    crop_size: int  #: side of the centre crop
    mean: Tuple[float, ...]  #: per-channel mean subtracted after scaling to [0, 1]
    std: Tuple[float, ...]  #: per-channel std divided by
    interpolation: str  #: "bilinear", "bicubic" or "nearest"
    resize_mode: str = "shorter"  #: "shorter" or "squash" (:data:`RESIZE_MODES`)

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"Expected `resize_mode` to be one of {list(RESIZE_MODES)} (\"shorter\": resize the "
                             "shorter side to resize_size; \"squash\": resize to resize_size x resize_size), but got "
                             f"{self.resize_mode!r}.")

    def transform(self) -> v2.Compose:
        """torchvision transform: PIL image or uint8 tensor -> normalised float tensor."""
        mode = v2.InterpolationMode(self.interpolation)
        size = self.resize_size if self.resize_mode == "shorter" else (self.resize_size, self.resize_size)
        return v2.Compose([
            v2.ToImage(),
            v2.Resize(size, interpolation=mode, antialias=True),
            v2.CenterCrop(self.crop_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(self.mean), list(self.std)),
        ])

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict, for result headers."""
        return asdict(self)


def recorded_preprocessing(recorded: Mapping[str, Any]) -> Dict[str, Any]:
    """A recorded preprocessing dict (``run.json``) with the fields older runs lack at their defaults.

    Runs recorded before ``resize_mode`` existed all resized the shorter side, so an absent key reads as
    "shorter" and compares equal to ``Preprocessing(..., resize_mode="shorter")``.

    Examples:
        >>> recorded_preprocessing({"resize_size": 256, "crop_size": 224})
        {'resize_size': 256, 'crop_size': 224, 'resize_mode': 'shorter'}
    """
    return {**dict(recorded), "resize_mode": recorded.get("resize_mode", "shorter")}


class Backbone(NamedTuple):
    """``model, preprocessing = create_backbone(...)``."""

    model: nn.Module
    preprocessing: Preprocessing


def imagenet_preprocessing(resize_size: int = 256, crop_size: int = 224) -> Preprocessing:
    """The ImageNet default: resize the shorter side to 256, centre-crop 224, ImageNet mean/std, bilinear.

    Examples:
        >>> imagenet_preprocessing().input_size
        (3, 224, 224)
    """
    return Preprocessing((3, crop_size, crop_size), resize_size, crop_size, IMAGENET_MEAN, IMAGENET_STD, "bilinear")


def synthetic_preprocessing(image_size: int = 128) -> Preprocessing:
    """The shipped SyntheticShapes models' preprocessing: no resize or crop at ``image_size``, mean = std = 0.5.

    Examples:
        >>> synthetic_preprocessing().mean
        (0.5, 0.5, 0.5)
    """
    return Preprocessing((3, image_size, image_size), image_size, image_size, (0.5,) * 3, (0.5,) * 3, "bilinear")


def mnist_preprocessing() -> Preprocessing:
    """The MNIST default: 1 channel, 28 x 28 (no resize or crop), MNIST mean/std.

    Examples:
        >>> mnist_preprocessing().input_size, mnist_preprocessing().mean
        ((1, 28, 28), (0.1307,))
    """
    return Preprocessing((1, 28, 28), 28, 28, MNIST_MEAN, MNIST_STD, "bilinear")
