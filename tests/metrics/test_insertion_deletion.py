"""Deletion / Insertion (RISE) against independent references.

References: closed-form curves on a model whose class logit is a linear function of the pixels
(the logit after deleting / restoring the top-k pixels is a cumulative sum along the order);
RISE's blur rebuilt with scipy (``gaussian_filter`` of a delta = RISE's ``gkern``, then
``scipy.ndimage.correlate`` with zero padding); ``numpy.trapezoid`` for the AUC; a 2 x 2 hand case.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from benchmark.metrics.base import MetricInputs
from benchmark.metrics.functional.insertion_deletion import (
    deletion,
    deletion_curve,
    gaussian_kernel,
    insertion,
    insertion_curve,
    rise_blur,
)
from benchmark.metrics.insertion_deletion import Deletion, Insertion


class LinearLogit(nn.Module):
    """``logits = [sum(w * x) + b, 0]``: ``p_0 = sigmoid(sum(w * x) + b)``, ``p_1 = 1 - p_0``."""

    def __init__(self, weight: torch.Tensor, bias: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = (x * self.weight).sum(dim=(1, 2, 3)) + self.bias
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


class Counter(nn.Module):
    """Counts forwards and the largest batch seen."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls, self.largest = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.largest = max(self.largest, len(x))
        return self.model(x)


def tiny_cnn(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, classes))
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval vs train mode matters
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def reference_trapezoid(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, x=np.linspace(0, 1, len(curve))))


def reference_blur(image: np.ndarray) -> np.ndarray:
    """RISE's ``blur``: per channel, ``gkern(11, 5)`` (gaussian_filter of a delta), zero padding."""
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    kernel = ndimage.gaussian_filter(delta, 5)
    return np.stack([ndimage.correlate(channel, kernel, mode="constant", cval=0.0) for channel in image])


def reference_curves(weight, bias, images, saliency, targets, pixels, insert):
    """Closed-form curves of ``LinearLogit``: logit after k steps = start logit + cumsum of changes."""
    curves = []
    for x, s, t in zip(images, saliency, targets):
        area = s.size
        order = np.argsort(-s.reshape(-1), kind="stable")
        substrate = reference_blur(x) if insert else np.zeros_like(x)
        contrib_x = (weight * x).sum(axis=0).reshape(-1)  # per-pixel logit contribution, all channels
        contrib_s = (weight * substrate).sum(axis=0).reshape(-1)
        start, finish = (contrib_s, contrib_x) if insert else (contrib_x, contrib_s)
        changes = np.concatenate([[0.0], np.cumsum((finish - start)[order])])
        counts = np.minimum(np.arange(math.ceil(area / pixels) + 1) * pixels, area)
        logits = bias + start.sum() + changes[counts]
        curves.append(sigmoid(logits) if t == 0 else 1 - sigmoid(logits))
    return np.stack(curves)


@pytest.mark.parametrize("insert", [False, True], ids=["deletion", "insertion"])
@pytest.mark.parametrize("pixels", [1, 10, 16])
def test_linear_model_closed_form(insert, pixels):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 2, 16, 16, generator=generator, dtype=torch.float64)
    weight = torch.randn(2, 16, 16, generator=generator, dtype=torch.float64) / 8
    saliency = torch.rand(3, 16, 16, generator=generator, dtype=torch.float64)
    targets = torch.tensor([0, 1, 0])
    model = LinearLogit(weight, bias=0.3)
    curve_fn, score_fn = (insertion_curve, insertion) if insert else (deletion_curve, deletion)
    curves = curve_fn(model, images, saliency, targets, pixels_per_step=pixels, chunk_size=50)
    expected = reference_curves(weight.numpy(), 0.3, images.numpy(), saliency.numpy(), targets.numpy(), pixels,
                                insert)
    assert curves.shape == (3, math.ceil(256 / pixels) + 1)
    np.testing.assert_allclose(curves.numpy(), expected, rtol=0, atol=1e-12)
    scores = score_fn(model, images, saliency, targets, pixels_per_step=pixels, chunk_size=50, reduction="none")
    np.testing.assert_allclose(scores.numpy(), [reference_trapezoid(c) for c in expected], rtol=0, atol=1e-12)
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("insert", [False, True], ids=["deletion", "insertion"])
def test_default_step_is_the_width_and_float32(insert):
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, 12, 20, generator=generator)
    weight = torch.randn(3, 12, 20, generator=generator) / 10
    saliency = torch.rand(2, 12, 20, generator=generator)
    curve_fn = insertion_curve if insert else deletion_curve
    curves = curve_fn(LinearLogit(weight), images, saliency, torch.tensor([1, 0]))
    expected = reference_curves(weight.double().numpy(), 0.0, images.double().numpy(), saliency.numpy(), [1, 0],
                                20, insert)
    assert curves.shape == (2, 13) and curves.dtype == torch.float64  # 240 px, 20 per step: 12 steps
    np.testing.assert_allclose(curves.numpy(), expected, rtol=0, atol=2e-6)


def test_hand_case_2x2():
    model = LinearLogit(torch.ones(1, 2, 2, dtype=torch.float64))
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    s = [1 / (1 + math.exp(-z)) for z in range(11)]
    saliency = torch.tensor([[[0.1, 0.9], [0.8, 0.5]]], dtype=torch.float64)  # order: 2, 3, 4, 1
    curve = deletion_curve(model, image, saliency, torch.tensor([0]), pixels_per_step=1)
    assert curve[0].tolist() == pytest.approx([s[10], s[8], s[5], s[1], s[0]], abs=1e-15)
    expected_auc = (s[10] / 2 + s[8] + s[5] + s[1] + s[0] / 2) / 4
    assert deletion(model, image, saliency, torch.tensor([0]), pixels_per_step=1).item() == pytest.approx(
        expected_auc, abs=1e-15)
    # ties go in raster order: 1, 2, 3, 4
    ties = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    assert deletion_curve(model, image, ties, torch.tensor([0]), pixels_per_step=1)[0].tolist() == pytest.approx(
        [s[10], s[9], s[7], s[4], s[0]], abs=1e-15)
    # steps=2 -> 2 px per step; steps=3 -> ceil(4 / 3) = 2 px per step as well (2 steps)
    for steps in (2, 3):
        assert deletion_curve(model, image, ties, torch.tensor([0]), steps=steps)[0].tolist() == pytest.approx(
            [s[10], s[7], s[0]], abs=1e-15)
    # insertion: start from the blur, restore 2, then 3, 4, 1; the last point is the image itself
    blurred = reference_blur(image[0].numpy())[0]
    restored = [blurred.sum(), blurred.sum() - blurred[0, 1] + 2]
    restored.append(restored[-1] - blurred[1, 0] + 3)
    restored.append(restored[-1] - blurred[1, 1] + 4)
    restored.append(10.0)
    curve = insertion_curve(model, image, saliency, torch.tensor([0]), pixels_per_step=1)
    np.testing.assert_allclose(curve[0].numpy(), sigmoid(np.array(restored)), rtol=0, atol=1e-15)


def test_gaussian_kernel_is_rise_gkern():
    for size, sigma in ((11, 5.0), (5, 1.0), (7, 2.5), (3, 10.0)):
        delta = np.zeros((size, size))
        delta[size // 2, size // 2] = 1
        np.testing.assert_allclose(gaussian_kernel(size, sigma).numpy(), ndimage.gaussian_filter(delta, sigma),
                                   rtol=0, atol=1e-15)
    image = torch.randn(2, 3, 9, 13, dtype=torch.float64)
    np.testing.assert_allclose(rise_blur(image)[1].numpy(), reference_blur(image[1].numpy()), rtol=0, atol=1e-13)


@pytest.mark.parametrize("insert", [False, True], ids=["deletion", "insertion"])
def test_chunk_size_invariance_forward_count_and_endpoints(insert):
    model = tiny_cnn()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    saliency = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([0, 3, 4])
    curve_fn = insertion_curve if insert else deletion_curve
    runs = {}
    for chunk in (1, 7, 1000):
        counter = Counter(model)
        runs[chunk] = curve_fn(counter, images, saliency, targets, chunk_size=chunk)
        assert counter.calls == math.ceil(3 * 33 / chunk)  # 32 px per step on 32 x 32: 33 points each
        assert counter.largest == min(chunk, 99)
    for chunk in (7, 1000):
        torch.testing.assert_close(runs[chunk], runs[1], rtol=0, atol=1e-6)
    with torch.no_grad():
        full = model(images).double().softmax(dim=1)[torch.arange(3), targets]
    endpoint = runs[7][:, -1] if insert else runs[7][:, 0]
    torch.testing.assert_close(endpoint, full, rtol=0, atol=1e-6)
    if not insert:  # every pixel at 0: the probability on a black (mean-colour) image
        with torch.no_grad():
            black = model(torch.zeros(1, 3, 32, 32)).double().softmax(dim=1)[0, targets]
        torch.testing.assert_close(runs[7][:, -1], black, rtol=0, atol=1e-6)


def test_eval_mode_and_train_flag_restored():
    model = tiny_cnn().train()
    stats = model[1].running_mean.clone()
    images, saliency = torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16)
    curve = deletion_curve(model, images, saliency, torch.tensor([1, 2]), chunk_size=5)
    assert model.training and torch.equal(model[1].running_mean, stats)
    with torch.no_grad():
        expected = model.eval()(images).softmax(dim=1)[torch.arange(2), torch.tensor([1, 2])]
    torch.testing.assert_close(curve[:, 0], expected.double(), rtol=0, atol=1e-6)
    model.train()
    with pytest.raises(ValueError, match="targets"):
        deletion_curve(model, images, saliency, torch.tensor([1, 5]))
    assert model.training


def test_nan_maps():
    model = tiny_cnn()
    images, saliency = torch.randn(3, 3, 16, 16), torch.rand(3, 16, 16)
    saliency[1, 4, 4] = float("nan")
    counter = Counter(model)
    curves = insertion_curve(counter, images, saliency, torch.tensor([0, 1, 2]), chunk_size=10)
    assert counter.calls == math.ceil(2 * 17 / 10)  # no forward for the undefined sample
    assert torch.isnan(curves[1]).all() and not torch.isnan(curves[[0, 2]]).any()
    clean = insertion_curve(model, images[[0, 2]], saliency[[0, 2]], torch.tensor([0, 2]), chunk_size=10)
    torch.testing.assert_close(curves[[0, 2]], clean, rtol=0, atol=1e-6)
    scores = insertion(model, images, saliency, torch.tensor([0, 1, 2]), reduction="none")
    assert torch.isnan(scores[1]) and not torch.isnan(scores[[0, 2]]).any()
    assert insertion(model, images, saliency, torch.tensor([0, 1, 2])).item() == pytest.approx(
        scores[[0, 2]].mean().item(), abs=1e-12)
    assert insertion(model, images, saliency, torch.tensor([0, 1, 2]), nan_policy="zero").item() == pytest.approx(
        scores[[0, 2]].sum().item() / 3, abs=1e-12)
    all_nan = torch.full((1, 16, 16), float("nan"))
    assert torch.isnan(deletion(model, images[:1], all_nan, torch.tensor([0]), reduction="none")).all()
    metric = Deletion()
    metric.update(model, images, saliency, torch.tensor([0, 1, 2]), indices=torch.tensor([5, 6, 7]))
    assert metric.n_invalid.item() == 1
    assert not torch.isnan(metric.compute()) and not torch.isnan(metric.mean_curve()).any()


@pytest.mark.parametrize("cls, fn, curve_fn", [(Deletion, deletion, deletion_curve),
                                               (Insertion, insertion, insertion_curve)])
def test_class_matches_functional_with_shuffled_batches(cls, fn, curve_fn):
    model = tiny_cnn()
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(7, 3, 16, 16, generator=generator)
    saliency = torch.rand(7, 16, 16, generator=generator)
    targets = torch.randint(0, 5, (7,), generator=generator)
    dataset_index = torch.tensor([40, 12, 3, 25, 7, 31, 18])  # arrival order != dataset order
    metric = cls(pixels_per_step=8, chunk_size=9, fast=False)
    for batch in (slice(0, 3), slice(3, 4), slice(4, 7)):
        metric.update(model, images[batch], saliency[batch], targets[batch], indices=dataset_index[batch])
    assert metric.higher_is_better is (cls is Insertion) and metric.needs == frozenset({"model"})
    order = torch.argsort(dataset_index)
    scores = fn(model, images, saliency, targets, pixels_per_step=8, reduction="none")
    curves = curve_fn(model, images, saliency, targets, pixels_per_step=8)
    torch.testing.assert_close(metric.compute(), scores[order].mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(metric.mean_curve(), curves[order].mean(dim=0), rtol=0, atol=1e-12)
    indices, values = metric.sorted_values()
    assert indices.tolist() == sorted(dataset_index.tolist())
    torch.testing.assert_close(values[:, 0], scores[order], rtol=0, atol=1e-12)
    fast = cls(pixels_per_step=8, chunk_size=64)  # default: InferenceCopy of the model
    fast.update(model, images, saliency, targets)
    torch.testing.assert_close(fast.compute(), metric.compute(), rtol=0, atol=1e-5)
    light = cls(pixels_per_step=8, keep_curves=False, fast=False)
    light.update(model, images, saliency, targets, indices=dataset_index)
    torch.testing.assert_close(light.compute(), metric.compute(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="keep_curves"):
        light.mean_curve()


def test_update_from_and_curve_length_check():
    model = tiny_cnn()
    images, saliency, targets = torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16), torch.tensor([0, 1])
    inputs = MetricInputs(images=images, targets=targets, indices=torch.tensor([0, 1]), saliency=saliency,
                          full_probs=torch.rand(2), probs=torch.rand(2, 5), model=model)
    metric = Insertion(pixels_per_step=64, fast=False)
    metric.update_from(inputs)
    expected = insertion(model, images, saliency, targets, steps=4)  # the same 64 px per step
    torch.testing.assert_close(metric.compute(), expected, rtol=0, atol=1e-12)
    assert metric.mean_curve().shape == (5,)
    with pytest.raises(ValueError, match="points"):
        metric.update(model, torch.randn(1, 3, 8, 8), torch.rand(1, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="model"):
        Deletion().update_from(MetricInputs(images=images, targets=targets, indices=torch.tensor([0, 1]),
                                            saliency=saliency, full_probs=torch.rand(2), probs=torch.rand(2, 5)))


def test_bad_inputs():
    model = tiny_cnn()
    images, saliency, targets = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8), torch.tensor([0, 1])
    cases = [
        ((model, images[0], saliency, targets), {}, ValueError, r"`images` to have shape \(B, C, H, W\)"),
        ((model, images.long(), saliency, targets), {}, ValueError, "floating"),
        ((model, images.numpy(), saliency, targets), {}, TypeError, "`images` to be a torch.Tensor"),
        ((model, images, saliency[:, :, :4], targets), {}, ValueError, r"\(2, 8, 4\)"),
        ((model, images, saliency[:1], targets), {}, ValueError, r"\(1, 8, 8\)"),
        ((model, images, saliency * 3, targets), {}, ValueError, r"values in \[0, 1\]"),
        ((model, images, saliency, targets.float()), {}, ValueError, "integer dtype"),
        ((model, images, saliency, targets[:1]), {}, ValueError, r"targets.*\(1,\)"),
        ((model, images, saliency, torch.tensor([0, -1])), {}, ValueError, ">= 0"),
        ((model, images, saliency, torch.tensor([0, 5])), {}, ValueError, r"in \[0, 5\)"),
        ((model, images, saliency, targets), {"chunk_size": 0}, ValueError, "`chunk_size`.*got 0"),
        ((model, images, saliency, targets), {"chunk_size": 2.5}, TypeError, "`chunk_size`.*float"),
        ((model, images, saliency, targets), {"pixels_per_step": -3}, ValueError, "`pixels_per_step`.*-3"),
        ((model, images, saliency, targets), {"steps": 0}, ValueError, "`steps`.*got 0"),
        ((model, images, saliency, targets), {"steps": 4, "pixels_per_step": 2}, ValueError, "at most one"),
        ((nn.Identity(), images, saliency, targets), {}, ValueError, r"logits of shape \(18, K\)"),
    ]
    for args, kwargs, error, message in cases:
        for fn in (deletion_curve, insertion):
            with pytest.raises(error, match=message):
                fn(*args, **kwargs)
                pytest.fail(f"{fn.__name__} accepted {message!r}")
    with pytest.raises(ValueError, match="`chunk_size`.*got 0"):
        Deletion(chunk_size=0)
    with pytest.raises(ValueError, match="at most one"):
        Insertion(steps=3, pixels_per_step=3)
    with pytest.raises(ValueError, match="nan_policy"):
        Insertion(nan_policy="ignore")
    with pytest.raises(ValueError, match="reduction"):
        deletion(model, images, saliency, targets, reduction="sum")


def test_inference_copy_cache():
    model = tiny_cnn().train()
    images, saliency, targets = torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16), torch.tensor([0, 1])
    metric = Deletion(steps=4)
    metric.update(model, images, saliency, targets)
    assert model.training and all(m.training for m in model.modules())  # the user's model is left alone
    cached = metric._inference_copy
    assert cached is not None and cached.model is model
    assert copy.deepcopy(metric)._inference_copy is None  # the cache (and the model it holds) is not copied
    with torch.no_grad():
        model[-1].bias += 1.0  # an in-place weight update: the copy is rebuilt, the new weights are used
    metric.update(model, images, saliency, targets)
    expected = deletion_curve(model, images, saliency, targets, steps=4)
    torch.testing.assert_close(metric.sorted_values()[1][2:, 1:], expected, rtol=0, atol=1e-5)
    other = tiny_cnn(classes=3)
    metric.update(other, images, saliency, targets)
    assert metric._inference_copy.model is other


@pytest.mark.parametrize("insert", [False, True])
def test_known_endpoints_skip_their_forwards(insert):
    """With the endpoints given (as the module computes them once per batch, :meth:`endpoint_probs`), the curve runs
    only its inner points and equals the full curve."""
    model = tiny_cnn()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    saliency = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    saliency[1] = float("nan")  # an undefined map: NaN curve, endpoints or not
    targets = torch.tensor([0, 3, 4])
    curve_fn = insertion_curve if insert else deletion_curve
    full = curve_fn(model, images, saliency, targets, chunk_size=7)
    metric = Insertion(fast=False) if insert else Deletion(fast=False)
    first, last = metric.endpoint_probs(model, images)
    ends = tuple(e.expand(3, -1)[torch.arange(3), targets] for e in (first, last))
    counter = Counter(model)
    known = curve_fn(counter, images, saliency, targets, chunk_size=7, endpoints=ends)
    assert counter.calls == math.ceil(2 * 31 / 7)  # 31 inner points of the two defined maps
    torch.testing.assert_close(known, full, rtol=0, atol=1e-6, equal_nan=True)
    # the metric reads them from the module's per-batch table, keyed by what they depend on
    inputs = MetricInputs(images, targets, torch.arange(3), saliency, torch.zeros(3), torch.zeros(3, 5), model=model,
                          extra={"curve_endpoints": {metric.endpoint_key: (first, last)}})
    metric.update_from(inputs)
    reference = Insertion(fast=False) if insert else Deletion(fast=False)
    reference.update(model, images, saliency, targets, torch.arange(3))
    torch.testing.assert_close(metric.values[-1], reference.values[-1], rtol=0, atol=1e-6, equal_nan=True)


def test_shared_endpoints_of_both_curves():
    """The module's table (one memo for both curves): the image's probability is computed once, and each curve's
    endpoints are its own (the deletion's all-zero image and the insertion's blurred one are never confused)."""
    from benchmark.runtime.explainer_setup import curve_endpoints

    model = tiny_cnn()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    deletion_metric, insertion_metric = Deletion(fast=False), Insertion(fast=False)
    counter = Counter(model)
    table = curve_endpoints([deletion_metric, insertion_metric, Deletion(fast=False)], counter, images)
    assert set(table) == {deletion_metric.endpoint_key, insertion_metric.endpoint_key}
    assert counter.calls == 3  # p(x), the all-zero image, the blurred images
    with torch.no_grad():
        expected = {"image": model(images), "zero": model(torch.zeros(1, 3, 32, 32)), "blur": model(rise_blur(images))}
    first, last = table[deletion_metric.endpoint_key]
    torch.testing.assert_close(first, expected["image"].double().softmax(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(last, expected["zero"].double().softmax(1), rtol=0, atol=1e-6)
    first, last = table[insertion_metric.endpoint_key]
    torch.testing.assert_close(first, expected["blur"].double().softmax(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(last, expected["image"].double().softmax(1), rtol=0, atol=1e-6)
