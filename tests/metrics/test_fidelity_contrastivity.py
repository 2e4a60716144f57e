"""Fidelity and contrastivity (Pope et al. 2019): numpy set references, a hand-built model, policies, arguments."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.metrics import Contrastivity, Fidelity, create_metric
from benchmark.metrics.base import MetricInputs
from benchmark.metrics.functional import contrastivity, fidelity, top_percent_mask

KEY = [(1, 1), (2, 3)]  # the pixels the KeyPixels model reads


class KeyPixels(nn.Module):
    """``logit_1 = x[c, 1, 1] + x[c, 2, 3] - 1.5``, ``logit_0 = 0``: class 1 on an all-ones image, class 0 as
    soon as one key pixel is 0 (channel ``c``)."""

    def __init__(self, channel: int = 0) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, x):
        key = sum(x[:, self.channel, r, c] for r, c in KEY)
        return torch.stack([torch.zeros_like(key), key - 1.5], dim=1)


def reference_mask(s: np.ndarray, p: float) -> np.ndarray:
    """The k largest positive values, k = ceil(p n / 100), for maps without ties (numpy argsort)."""
    flat = s.ravel()
    positive = np.flatnonzero(flat > 0)
    k = max(1, math.ceil(round(p * len(positive) / 100, 9)))
    mask = np.zeros(flat.shape, dtype=bool)
    if len(positive):
        mask[positive[np.argsort(-flat[positive])[:k]]] = True
    return mask.reshape(s.shape)


def random_maps(n, h, w, seed, zero_share=0.4):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, h, w, generator=g)
    maps[torch.rand(n, h, w, generator=g) < zero_share] = 0.0
    return maps


@pytest.mark.parametrize("percent", [1.0, 10.0, 33.3, 100.0])
def test_top_percent_mask_is_the_k_largest_positive_values(percent):
    maps = random_maps(5, 12, 10, 0)
    maps[4] = 0.0  # no positive pixel: empty
    masks = top_percent_mask(maps, percent)
    for s, m in zip(maps.numpy(), masks.numpy()):
        np.testing.assert_array_equal(m, reference_mask(s, percent))
    assert not masks[4].any()


def test_top_percent_mask_keeps_every_tie_at_the_cut():
    s = torch.tensor([[[0.5, 0.5, 0.5, 0.9], [0.1, 0.0, 0.0, 0.0]]])  # 5 positives; 40 % -> k = 2, cut 0.5
    assert top_percent_mask(s, 40.0).int().tolist() == [[[1, 1, 1, 1], [0, 0, 0, 0]]]
    assert top_percent_mask(s, 1.0).int().sum().item() == 1  # k = ceil(0.05) = 1: the 0.9 alone
    many = torch.zeros(1, 10, 20)
    many[0, :, :] = torch.arange(200).view(10, 20) / 200  # 199 positive values, 1 % -> k = ceil(1.99) = 2
    assert top_percent_mask(many, 1.0).int().sum().item() == 2


def test_fidelity_against_the_key_pixel_model():
    maps = random_maps(8, 4, 5, 1, zero_share=0.2)
    images = torch.ones(8, 1, 4, 5)
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 1, 1])  # 0: wrong before the removal
    percents = (10.0, 30.0, 100.0)
    ours = fidelity(KeyPixels(), images, maps, labels, percents=percents, reduction="none", chunk_size=5)
    for i in range(8):
        for j, p in enumerate(percents):
            removed = reference_mask(maps[i].numpy(), p)
            key_left = sum(1.0 - removed[r, c] for r, c in KEY)
            before = int(labels[i] == 1)  # the clean image is class 1
            after = int((1 if key_left - 1.5 > 0 else 0) == labels[i])
            assert ours[i, j].item() == 100 * (before - after), (i, p)
    assert ours[:, 2].tolist() == [100.0 if label else -100.0 for label in labels.tolist()]  # all removed
    mean = fidelity(KeyPixels(), images, maps, labels, percents=percents)
    torch.testing.assert_close(mean, ours.mean(dim=0))


def test_fidelity_fill_and_channels():
    images = torch.ones(1, 3, 4, 5)
    maps = torch.zeros(1, 4, 5)
    maps[0, 1, 1] = 1.0  # the top pixel is a key pixel
    labels = torch.tensor([1])
    assert fidelity(KeyPixels(channel=2), images, maps, labels, percents=1.0).tolist() == [100.0]  # every channel
    assert fidelity(KeyPixels(channel=2), images, maps, labels, percents=1.0, fill=1.0).tolist() == [0.0]
    assert fidelity(KeyPixels(), images, torch.zeros(1, 4, 5), labels, percents=50.0).tolist() == [0.0]  # empty B
    nan_map = torch.full((1, 4, 5), float("nan"))
    assert math.isnan(fidelity(KeyPixels(), images, nan_map, labels, reduction="none")[0, 0].item())


def test_fidelity_metric_batching_and_label_fallback():
    maps = random_maps(9, 4, 5, 2, zero_share=0.3)
    images = torch.ones(9, 1, 4, 5)
    labels = torch.tensor([1, 0, 1, 1, 1, 0, 1, 1, 1])
    whole, split = Fidelity(percents=(10, 50)), Fidelity(percents=(10, 50))
    whole.update(KeyPixels(), images, maps, labels, torch.arange(9))
    for part in torch.tensor([4, 8, 0, 2, 6, 1, 3, 5, 7]).split(4):
        split.update(KeyPixels(), images[part], maps[part], labels[part], part)
    assert split.compute() == whole.compute() and set(whole.compute()) == {"top10", "top50"}
    reference = fidelity(KeyPixels(), images, maps, labels, percents=(10, 50))
    assert [v.item() for v in whole.compute().values()] == pytest.approx(reference.tolist(), abs=1e-12)
    # no labels in the data: the explained classes stand in
    metric = create_metric("fidelity", percents=100.0)
    probs = KeyPixels()(images[:2]).softmax(dim=1)  # the module's clean forward: its argmax is reused
    inputs = MetricInputs(images[:2], torch.tensor([1, 0]), torch.tensor([0, 1]), maps[:2], torch.ones(2),
                          probs, model=KeyPixels())
    metric.update_from(inputs)
    assert metric.values[-1][:, 0].tolist() == [100.0, -100.0]
    inputs.labels = torch.tensor([0, 0])
    metric.update_from(inputs)
    assert metric.values[-1][:, 0].tolist() == [-100.0, -100.0]


def reference_contrastivity(target, others, p):
    b_t = reference_mask(target, p)
    ratios = []
    for other in others:
        b_k = reference_mask(other, p)
        union = np.logical_or(b_t, b_k).sum()
        if union:
            ratios.append(np.logical_xor(b_t, b_k).sum() / union)
    return 100 * np.mean(ratios) if ratios else float("nan")


def test_contrastivity_against_numpy_sets():
    target, others = random_maps(4, 6, 6, 3), random_maps(4 * 5, 6, 6, 4).view(4, 5, 6, 6)
    others[2] = 0.0
    target[2] = 0.0  # every union empty: undefined
    values = contrastivity(target, others, percents=(10.0, 50.0), reduction="none")
    for i in range(4):
        for j, p in enumerate((10.0, 50.0)):
            expected = reference_contrastivity(target[i].numpy(), others[i].numpy(), p)
            if math.isnan(expected):
                assert math.isnan(values[i, j].item())
            else:
                assert values[i, j].item() == pytest.approx(expected, abs=1e-12)
    identical = contrastivity(target[:1], target[:1, None].repeat(1, 3, 1, 1), percents=10.0)
    assert identical.tolist() == [0.0]  # the same map for every class: not contrastive at all


def test_contrastivity_metric_picks_the_classes_and_calls_explain_per_class():
    g = torch.Generator().manual_seed(5)
    class_maps = torch.rand(6, 3, 5, 5, generator=g)  # (class, sample, H, W)
    calls = []

    def explain(images, classes, indices=None):
        calls.append(classes.tolist())
        return class_maps[classes, torch.arange(len(classes))]

    probs = torch.tensor([[0.1, 0.3, 0.05, 0.25, 0.2, 0.1], [0.5, 0.1, 0.1, 0.1, 0.1, 0.1],
                          [0.0, 0.0, 0.0, 0.0, 0.4, 0.6]])
    targets = torch.tensor([1, 0, 4])
    saliency = class_maps[targets, torch.arange(3)]
    metric = Contrastivity(percents=(10.0,), classes=2)
    metric.update(torch.zeros(3, 1, 5, 5), saliency, targets, probs, explain, torch.arange(3))
    assert calls == [[3, 1, 5], [4, 2, 0]]  # by probability, target left out, ties by class index
    for i in range(3):
        others = class_maps[[calls[0][i], calls[1][i]], i].numpy()
        assert metric.values[-1][i, 0].item() == pytest.approx(
            reference_contrastivity(saliency[i].numpy(), others, 10.0), abs=1e-12)
    calls.clear()
    everything = Contrastivity(percents=(10.0,))
    everything.update(torch.zeros(3, 1, 5, 5), saliency, targets, probs, explain, torch.arange(3))
    assert len(calls) == 5 and all(sorted(c[i] for c in calls) == [k for k in range(6) if k != t]
                                   for i, t in enumerate(targets.tolist()))
    reference = contrastivity(saliency, torch.stack([class_maps[c, torch.arange(3)] for c in calls], dim=1), 10.0,
                              reduction="none")
    torch.testing.assert_close(everything.values[-1], reference)


@pytest.mark.parametrize("call, error, match", [
    (lambda: Fidelity(percents=0.0), ValueError, r"Expected each of `percents` in \(0, 100\], but got 0.0."),
    (lambda: Fidelity(percents=(1.0, 150)), ValueError, "but got 150"),
    (lambda: Fidelity(percents="1"), TypeError, "`percents`"),
    (lambda: Fidelity(percents=(1, 1.0)), ValueError, "distinct"),
    (lambda: Fidelity(fill="0"), TypeError, "`fill`"),
    (lambda: Fidelity(chunk_size=0), ValueError, "`chunk_size`"),
    (lambda: Contrastivity(classes=0), ValueError, r"'all' or a positive int, but got 0"),
    (lambda: Contrastivity(classes="most"), ValueError, "'most'"),
    (lambda: fidelity(KeyPixels(), torch.ones(2, 1, 4, 5), torch.rand(2, 4, 5), torch.tensor([1])), ValueError,
     r"`labels` to have shape \(2,\)"),
    (lambda: contrastivity(torch.rand(2, 4, 4), torch.rand(2, 3, 4, 5)), ValueError, r"\(B, M, H, W\)"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
