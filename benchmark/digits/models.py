"""A small MNIST CNN, for the MNIST experiments of Nagy, Nimara and Qian, "Analysis and Evaluation of Grad-CAM
Explanations".

The classic two-convolution MNIST network of PyTorch's ``examples/mnist``, the kind of small CNN that study
explains (its exact layer sizes were not checked against the paper)::

    (B, 1, 28, 28) -> conv 3x3 (1 -> 32) -> ReLU -> conv 3x3 (32 -> 64) -> ReLU      features: (B, 64, 24, 24)
      -> max-pool 2 -> dropout 0.25 -> flatten (9216) -> fc 128 -> ReLU -> dropout 0.5 -> fc 10   classifier

1,199,882 parameters. ``features`` ends with the last convolution's ReLU, so Grad-CAM explains that
24 x 24 map: the automatic target layer of :mod:`benchmark.explainers.layers` is ``features``. The
network returns logits (PyTorch's example returns their ``log_softmax``; the softmax of either is the
same). Train it with :mod:`benchmark.digits.train`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict

from torch import Tensor, nn

__all__ = ["DIGITS_MODELS", "MnistCNN", "build_digits_model"]


class MnistCNN(nn.Module):
    """Two 3x3 convolutions (``features``), then max-pool, dropout and two linear layers (``classifier``).

    Examples:
        >>> import torch
        >>> model = MnistCNN().eval()
        >>> model(torch.zeros(2, 1, 28, 28)).shape, model.features(torch.zeros(1, 1, 28, 28)).shape
        (torch.Size([2, 10]), torch.Size([1, 64, 24, 24]))
        >>> sum(p.numel() for p in model.parameters())
        1199882
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 32, 3), relu1=nn.ReLU(), conv2=nn.Conv2d(32, 64, 3), relu2=nn.ReLU()))
        self.classifier = nn.Sequential(OrderedDict(
            pool=nn.MaxPool2d(2), dropout1=nn.Dropout(0.25), flatten=nn.Flatten(), fc1=nn.Linear(9216, 128),
            relu=nn.ReLU(), dropout2=nn.Dropout(0.5), fc2=nn.Linear(128, num_classes)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


#: Architecture name -> constructor ``(num_classes) -> nn.Module``.
DIGITS_MODELS: Dict[str, Callable[[int], nn.Module]] = {"mnist_cnn": MnistCNN}


def build_digits_model(name: str, num_classes: int = 10) -> nn.Module:
    """Random-init model ``name`` (one of :data:`DIGITS_MODELS`).

    Examples:
        >>> type(build_digits_model("mnist_cnn")).__name__
        'MnistCNN'
        >>> build_digits_model("lenet")
        Traceback (most recent call last):
        ...
        KeyError: "Unknown digits model 'lenet'; valid: ['mnist_cnn']."
    """
    if name not in DIGITS_MODELS:
        raise KeyError(f"Unknown digits model {name!r}; valid: {sorted(DIGITS_MODELS)}.")
    return DIGITS_MODELS[name](num_classes)
