"""ADCC family against independent references: hand cases, scipy's Pearson, Poppi Table 2."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from benchmark.metrics import ADCC, AverageDrop, AverageIncrease, Coherency, Complexity
from benchmark.metrics.functional import adcc, average_drop, average_increase, coherency, complexity


def test_average_drop_and_increase_hand_cases():
    y = torch.tensor([0.8, 0.5, 0.25, 0.0], dtype=torch.float64)
    o = torch.tensor([0.2, 0.6, 0.25, 0.3], dtype=torch.float64)
    # (0.8-0.2)/0.8 = 75 %, O > Y -> 0, equal -> 0, Y = 0 undefined
    drop = average_drop(y, o, reduction="none")
    assert drop[:3].tolist() == pytest.approx([75.0, 0.0, 0.0], abs=1e-12) and math.isnan(drop[3])
    assert average_drop(y, o).item() == pytest.approx(25.0)  # undefined omitted
    assert average_drop(y, o, nan_policy="zero").item() == pytest.approx(75.0 / 4)
    assert math.isnan(average_drop(y, o, nan_policy="propagate").item())
    assert average_increase(y, o, reduction="none").tolist() == [0.0, 100.0, 0.0, 100.0]


def test_coherency_equals_scipy_pearson():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 9, 11, generator=generator), torch.rand(5, 9, 11, generator=generator)
    b[1] = 0.3 * a[1] + 0.1  # perfectly correlated
    ours = coherency(a, b, reduction="none")
    for i in range(5):
        r = pearsonr(a[i].flatten().double().numpy(), b[i].flatten().double().numpy())[0]
        assert ours[i].item() == pytest.approx((1 + r) / 2 * 100, abs=1e-9)
    assert ours[1].item() == pytest.approx(100.0)


def test_coherency_undefined_policy():
    maps = torch.rand(2, 4, 4)
    constant = maps.clone()
    constant[0] = 0.5
    assert coherency(maps, constant, reduction="none")[0].item() == 0.0  # the authors' code: 0
    assert math.isnan(coherency(maps, constant, reduction="none", nan_policy="omit")[0].item())


def test_complexity_is_mean_of_map():
    maps = torch.tensor([[[0.0, 1.0], [0.25, 0.75]], [[1.0, 1.0], [1.0, 1.0]]])
    assert complexity(maps, reduction="none").tolist() == [50.0, 100.0]


@pytest.mark.parametrize("drop, coh, comp, expected", [
    (26.13, 93.83, 20.27, 81.66),  # Poppi Table 2, Score-CAM / VGG16
    (0.0, 100.0, 100.0, 0.0),  # Fake-CAM pattern: 1 - Complexity = 0
])
def test_adcc_harmonic_mean(drop, coh, comp, expected):
    terms = [coh / 100, 1 - comp / 100, 1 - drop / 100]
    reference = 0.0 if min(terms) == 0 else 3 / sum(1 / t for t in terms) * 100
    assert adcc(drop, coh, comp).item() == pytest.approx(reference, abs=1e-9)
    assert round(adcc(drop, coh, comp).item(), 2) == expected


def test_adcc_rejects_out_of_range():
    with pytest.raises(ValueError, match="in \\[0, 100\\]"):
        adcc(120.0, 50.0, 50.0)


def _random_batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g) * 0.9 + 0.05
    o = torch.rand(n, generator=g)
    maps, expl = torch.rand(n, 6, 6, generator=g), torch.rand(n, 6, 6, generator=g)
    return y, o, maps, expl


def test_classes_equal_functional_over_shuffled_batches():
    y, o, maps, expl = _random_batch(20, 1)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(2))
    metrics = [AverageDrop(), AverageIncrease(), Coherency(), Complexity(), ADCC()]
    for chunk in order.split(7):
        metrics[0].update(y[chunk], o[chunk], chunk)
        metrics[1].update(y[chunk], o[chunk], chunk)
        metrics[2].update(maps[chunk], expl[chunk], chunk)
        metrics[3].update(maps[chunk], chunk)
        metrics[4].update(y[chunk], o[chunk], maps[chunk], expl[chunk], chunk)
    expected = [average_drop(y, o), average_increase(y, o), coherency(maps, expl), complexity(maps)]
    for metric, value in zip(metrics, expected):
        assert metric.compute().item() == pytest.approx(value.item(), rel=1e-12)
    # ADCC: harmonic mean of the three dataset means (numpy reference)
    d, c, x = expected[0].item(), expected[2].item(), expected[3].item()
    reference = 3 / (1 / (c / 100) + 1 / (1 - x / 100) + 1 / (1 - d / 100)) * 100
    assert metrics[4].compute().item() == pytest.approx(reference, rel=1e-12)
    parts = zip(average_drop(y, o, reduction="none"), coherency(maps, expl, reduction="none"),
                complexity(maps, reduction="none"))
    per_image = np.mean([adcc(a, b, e).item() for a, b, e in parts])
    extra = metrics[4].extra_values()
    assert extra["per_image"].item() == pytest.approx(per_image, rel=1e-12)
    assert extra["per_image"] < metrics[4].compute()  # Jensen


def test_invalid_samples_are_counted():
    metric = ADCC()
    maps = torch.rand(3, 4, 4)
    flat = maps.clone()
    flat[2] = 0.0
    metric.update(torch.tensor([0.5, 0.0, 0.5]), torch.tensor([0.4, 0.1, 0.4]), maps, flat)
    assert int(metric.n_invalid) == 2  # Y = 0 (drop undefined), constant map (coherency undefined)
    assert metric.summary()["n_invalid"] == 2


def test_duplicate_indices_refused():
    metric = Complexity()
    metric.update(torch.rand(2, 3, 3), torch.tensor([0, 1]))
    metric.update(torch.rand(2, 3, 3), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"more than once: \[1\]"):
        metric.compute()


@pytest.mark.parametrize("call, match", [
    (lambda: average_drop(torch.tensor([0.5, 0.2]), torch.tensor([0.5])), r"shape \(2,\)"),
    (lambda: average_drop(torch.tensor([1.5]), torch.tensor([0.5])), r"\[1.5, 1.5\]"),
    (lambda: complexity(torch.rand(2, 3)), r"\(B, H, W\) with values in \[0, 1\], but got \(2, 3\)"),
    (lambda: complexity(torch.rand(1, 3, 3) * 2 + 0.5), r"values in \[0, 1\], but got values in"),
    (lambda: coherency(torch.rand(2, 3, 3), torch.rand(3, 3, 3)), "same batch size"),
    (lambda: coherency(torch.rand(2, 3, 3), torch.rand(2, 3, 4)), "same shape"),
    (lambda: average_drop(torch.tensor([0.5]), torch.tensor([0.5]), reduction="sum"), "'sum'"),
    (lambda: Complexity(nan_policy="ignore"), "'ignore'"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
