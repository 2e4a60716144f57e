"""MPRT against Quantus 0.6.0's ``MPRT`` where the conventions match (a test-only reference).

Quantus randomizes every module that has ``reset_parameters`` (registration order, reversed for
``"top_down"``), seeding the global generator with ``seed + 1`` before each reset. Ours re-initialises layer
groups in forward order with ``seed * 1_000_003 + g``. With one module per group (``layers=``, Quantus's
modules) and Quantus's seed substituted for ours, both build the same randomized models, and the per-layer
Spearman rank correlations of |map| must agree. Where they differ by convention the test shows both:

* a constant randomized map: Quantus (``scipy.stats.spearmanr``) gives NaN, we score 0;
* ``return_average_correlation=True``: Quantus 0.6.0 averages the "original" entry (the unrandomized model's
  map against itself, 1.0) with the ``L`` layers -- it skips a key named "orig" but stores "original" -- so
  its average is ``(1 + L * ours) / (L + 1)``.

Quantus pins ``opencv-python``, which clashes with grad-cam's ``opencv-python-headless``; it is installed
without its dependencies (``pip install --no-deps quantus==0.6.0 scikit-image``, as ``.ci/run`` does) and the
test is skipped where it is absent.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.explainers import create_explainer
from benchmark.metrics import MPRT
from benchmark.metrics.functional import mprt as functional_mprt
from benchmark.synthetic.models import build_synthetic_model

quantus = pytest.importorskip("quantus")
QUANTUS_SEED = 42
# scipy warns on the constant randomized maps (NaN, handled below); Quantus warns about its parameters
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning", "ignore::FutureWarning")


def _gradcam(model: nn.Module):
    return create_explainer("gradcam", model, input_size=(3, 64, 64), target_layer="features")


def _explain(model, inputs, targets, **kwargs) -> np.ndarray:
    """Quantus's ``explain_func``: our Grad-CAM on whatever model Quantus passes, ``(N, 1, H, W)``."""
    images = torch.as_tensor(inputs, dtype=torch.float32)
    return _gradcam(model)(images, torch.as_tensor(targets).long()).unsqueeze(1).detach().numpy()


@pytest.fixture
def setup():
    torch.manual_seed(3)
    model = build_synthetic_model("plain_cnn").eval()
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([0, 3, 5, 7])
    layers = [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")]
    return model, images, targets, layers


def _ours(model, images, targets, layers, monkeypatch, randomization):
    original = functional_mprt._random_group
    monkeypatch.setattr(functional_mprt, "_random_group",  # Quantus's seeding: seed + 1 before every reset
                        lambda m, group, tensors, seed: original(m, group, tensors, QUANTUS_SEED + 1))
    gradcam = _gradcam(model)
    metric = MPRT(randomization=randomization, layers=layers)
    metric.update(images, gradcam(images, targets), targets, gradcam)
    return metric, metric.values[-1].view(len(images), 3, -1)[:, 0].double()  # Spearman |.|, top layer first


def _quantus(model, images, targets, order, **options):
    metric = quantus.MPRT(layer_order=order, seed=QUANTUS_SEED, abs=True, normalise=False, disable_warnings=True,
                          **options)
    return metric(model=model, x_batch=images.numpy(), y_batch=targets.numpy(), a_batch=None,
                  explain_func=_explain, channel_first=True, softmax=False, device="cpu")


@pytest.mark.parametrize("randomization, order", [("cascading", "top_down"), ("independent", "independent")])
def test_per_layer_spearman_equals_quantus(setup, monkeypatch, randomization, order):
    model, images, targets, layers = setup
    metric, ours = _ours(model, images, targets, layers, monkeypatch, randomization)
    theirs = _quantus(model, images, targets, order)
    assert theirs.pop("original") == pytest.approx([1.0] * 4, abs=1e-12)
    names = list(theirs)
    top_first = layers[::-1] if order == "top_down" else layers
    assert names == top_first and len(names) == len(layers) == 13  # 6 conv + 6 BN + the linear
    if order == "independent":  # Quantus keeps registration order; ours lists the top layer first
        ours = ours.flip(1)
    constant = 0
    for k, name in enumerate(names):
        for i, value in enumerate(theirs[name]):
            if math.isnan(value):  # a constant randomized map: undefined for scipy, 0 for us
                assert ours[i, k].item() == 0.0
                constant += 1
            else:
                assert ours[i, k].item() == pytest.approx(value, abs=1e-6)
    assert constant < ours.numel() // 2  # the comparison is mostly on real rankings
    assert ours.std() > 0.05  # and the layers change them


def test_quantus_average_includes_the_original_model(setup, monkeypatch):
    model, images, targets, layers = setup
    _, ours = _ours(model, images, targets, layers, monkeypatch, "cascading")
    theirs = torch.tensor(_quantus(model, images, targets, "top_down", return_average_correlation=True))
    finite = ~torch.isnan(theirs)
    expected = (1 + ours.sum(dim=1)) / (len(layers) + 1)  # Quantus 0.6.0: L + 1 entries, the first one 1.0
    assert finite.sum() >= 2
    assert torch.allclose(theirs[finite].double(), expected[finite], atol=1e-6)
    assert not torch.allclose(theirs[finite].double(), ours.mean(dim=1)[finite], atol=1e-3)
