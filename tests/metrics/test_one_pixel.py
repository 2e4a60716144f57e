"""One-pixel attack (Su et al. 2019) and map sensitivity (Nagy et al., Table 6): a model that only one pixel can
fool, determinism per (seed, index), the batched budget, the statistics and the metric's bookkeeping."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.metrics import OnePixelSensitivity, create_metric
from benchmark.metrics.functional import one_pixel_attack
from benchmark.metrics.functional.one_pixel import one_pixel_summary

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
ROW, COL = 5, 2


class OnePixel(nn.Module):
    """``logit_1 = x[c, 5, 2] - 1``, ``logit_0 = -0.05 sum_p w_p x[c, p]`` (normalised units, ``c = channel``,
    ``w_p = exp(-|p - (5, 2)|^2 / 8)``: a slope that guides the search): class 0 on the mean-colour image (x = 0);
    one changed pixel ``p`` of value ``v <= 2`` gives ``logit_0 >= -0.1 > logit_1 = -1`` unless ``p = (5, 2)``,
    where class 1 wins for ``v > 1 / 1.05`` normalised, i.e. above 0.738 in image units (mean 0.5, std 0.25)."""

    def __init__(self, channel: int = 1) -> None:
        super().__init__()
        self.channel = channel
        self.sizes = []
        rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        self.register_buffer("w", torch.exp(-((rows - ROW) ** 2 + (cols - COL) ** 2) / 8))

    def forward(self, x):
        self.sizes.append(len(x))
        plane = x[:, self.channel]
        return torch.stack([-0.05 * (plane * self.w).sum(dim=(1, 2)), plane[:, ROW, COL] - 1.0], dim=1)


class Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(len(x))
        return torch.tensor([[1.0, 0.0]]).expand(len(x), 2)


def green(images, classes, indices=None):
    """A stand-in explainer: the green channel back in [0, 1] image units."""
    green.calls.append((len(images), classes.tolist(), None if indices is None else indices.tolist()))
    return (images[:, 1] * STD[1] + MEAN[1]).clamp(0, 1)


green.calls = []


def attack(model, images, indices, **kwargs):
    kwargs = {"popsize": 60, "maxiter": 40, "mean": MEAN, "std": STD, **kwargs}
    return one_pixel_attack(model, images, torch.zeros(len(images), dtype=torch.long), indices, **kwargs)


def test_the_attack_finds_the_only_pixel_that_fools_the_model():
    images = torch.zeros(3, 3, 8, 8)  # the mean colour
    result = attack(OnePixel(), images, torch.tensor([0, 1, 2]))
    assert result.success.tolist() == [True] * 3
    assert result.rows.tolist() == [ROW] * 3 and result.cols.tolist() == [COL] * 3
    assert (result.colours[:, 1] > 0.738).all()  # green above 1 / 1.05 normalised
    expected = images.clone()
    for i in range(3):  # the attacked images differ from the clean ones by that pixel, in normalised units
        expected[i, :, ROW, COL] = ((result.colours[i] - torch.tensor(MEAN, dtype=torch.float64))
                                    / torch.tensor(STD, dtype=torch.float64)).float()
    torch.testing.assert_close(result.images, expected)
    logits = OnePixel()(result.images)
    assert (logits.argmax(dim=1) == 1).all()
    # the reported probability is the target's softmax on the attacked image
    torch.testing.assert_close(result.probabilities, logits.softmax(dim=1)[:, 0].double())


def test_one_channel_candidates_are_x_y_v():
    result = attack(OnePixel(channel=0), torch.zeros(1, 1, 8, 8), torch.tensor([4]), mean=0.5, std=0.25)
    assert result.success.item() and (result.rows.item(), result.cols.item()) == (ROW, COL)
    assert result.colours.shape == (1, 1) and result.colours.item() > 0.738


def test_the_attack_is_deterministic_for_a_seed_and_index():
    images = torch.zeros(2, 3, 8, 8)
    first = attack(OnePixel(), images, torch.tensor([10, 11]))
    second = attack(OnePixel(), images, torch.tensor([10, 11]))
    for name in ("success", "rows", "cols", "colours", "generations", "images"):
        torch.testing.assert_close(getattr(first, name), getattr(second, name))
    # per-sample seeding: sample 11 alone (another batch) gets the same attack as in the batch
    alone = attack(OnePixel(), images[1:], torch.tensor([11]))
    torch.testing.assert_close(alone.colours[0], first.colours[1])
    other_seed = attack(OnePixel(), images, torch.tensor([10, 11]), seed=1)
    assert not torch.equal(other_seed.colours, first.colours)


def test_each_generation_is_one_batched_evaluation_in_chunks():
    model = Constant()  # never fooled: runs every generation
    result = attack(model, torch.zeros(1, 3, 8, 8), torch.tensor([0]), popsize=20, maxiter=3, chunk_size=7)
    assert not result.success.item() and result.rows.item() == -1 and math.isnan(result.colours[0, 0].item())
    assert result.generations.item() == 3
    # one clean forward, then (1 initial + 3) generations of 4 x 5 = 20 candidates, in chunks of 7
    assert model.sizes == [1] + [7, 7, 6] * 4


def test_early_stop_after_the_first_successful_generation():
    model = OnePixel()
    result = attack(model, torch.zeros(1, 3, 8, 8), torch.tensor([0]), popsize=60, maxiter=100)
    assert result.success.item() and result.generations.item() < 100
    assert len(model.sizes) == 1 + result.generations.item() + 1  # clean + initial population + generations


def test_metric_stores_before_and_after_for_the_attacked_indices():
    green.calls.clear()
    images = torch.zeros(4, 3, 8, 8)
    images[:, 1, ROW, COL] = -0.4  # green 0.4 there
    clean_maps = green(images, torch.zeros(4, dtype=torch.long))
    green.calls.clear()
    metric = OnePixelSensitivity(n_images=100, popsize=60, maxiter=40, mean=MEAN, std=STD)
    indices = torch.tensor([3, 150, 7, 99])
    metric.update(OnePixel(), images, clean_maps, torch.zeros(4, dtype=torch.long), green, indices)
    rows = metric.values[-1]
    assert rows[:, 0].tolist() == [1.0, 0.0, 1.0, 1.0] and math.isnan(rows[1, 1].item())
    assert green.calls == [(3, [0, 0, 0], [3, 7, 99])]  # one explainer call on the successful attacks
    attacked = attack(OnePixel(), images[[0, 2, 3]], indices[[0, 2, 3]])
    np.testing.assert_allclose(rows[[0, 2, 3], 2].numpy(), 0.4, rtol=1e-6)  # before: the clean map there
    np.testing.assert_allclose(rows[[0, 2, 3], 3].numpy(), attacked.colours[:, 1].numpy(), rtol=1e-6)
    assert rows[[0, 2, 3], 4:].tolist() == [[ROW, COL]] * 3
    results = metric.compute()
    assert results["attacked"].item() == 3 and results["success_rate"].item() == 100.0
    after = attacked.colours[:, 1].numpy()
    assert results["after_mean"].item() == pytest.approx(after.mean(), rel=1e-6)
    assert results["after_std"].item() == pytest.approx(after.std(), rel=1e-5)  # ddof = 0
    assert results["after_min"].item() == pytest.approx(after.min(), rel=1e-6)
    assert results["change_max"].item() == pytest.approx(after.max() - 0.4, rel=1e-5)
    assert int(metric.n_invalid) == 1 and metric.summary()["n"] == 4


def test_failed_attacks_are_undefined_and_batching_does_not_matter():
    images = torch.zeros(5, 3, 8, 8)
    clean = torch.full((5, 8, 8), 0.5)
    whole = create_metric("one_pixel_sensitivity", n_images=4, popsize=10, maxiter=2, mean=MEAN, std=STD)
    whole.update(Constant(), images, clean, torch.zeros(5, dtype=torch.long), green, torch.arange(5))
    results = whole.compute()
    assert results["success_rate"].item() == 0.0 and results["attacked"].item() == 4
    assert math.isnan(results["before_mean"].item()) and int(whole.n_invalid) == 5
    split = OnePixelSensitivity(n_images=2, popsize=30, maxiter=20, mean=MEAN, std=STD)
    joined = OnePixelSensitivity(n_images=2, popsize=30, maxiter=20, mean=MEAN, std=STD)
    joined.update(OnePixel(), images[:3], clean[:3], torch.zeros(3, dtype=torch.long), green, torch.arange(3))
    for part in (torch.tensor([2, 0]), torch.tensor([1])):
        split.update(OnePixel(), images[part], clean[part], torch.zeros(len(part), dtype=torch.long), green, part)
    assert {k: v.item() for k, v in split.compute().items()} == {k: v.item() for k, v in joined.compute().items()}


def test_summary_against_numpy():
    before = torch.tensor([0.1, float("nan"), 0.3, 0.9], dtype=torch.float64)
    after = torch.tensor([0.5, float("nan"), 0.2, 0.95], dtype=torch.float64)
    stats = one_pixel_summary(before, after, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    b, a = np.array([0.1, 0.3, 0.9]), np.array([0.5, 0.2, 0.95])
    expected = {"before_mean": b.mean(), "before_std": b.std(), "after_max": a.max(), "change_min": (a - b).min(),
                "change_std": (a - b).std(), "success_rate": 75.0, "attacked": 4.0}
    for key, value in expected.items():
        assert stats[key].item() == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("call, error, match", [
    (lambda: OnePixelSensitivity(n_images=0), ValueError, "Expected `n_images` to be a positive int, but got 0."),
    (lambda: OnePixelSensitivity(popsize=2.5), TypeError, "`popsize`"),
    (lambda: OnePixelSensitivity(std=(0.2, 0.0, 0.2)), ValueError, "finite positive"),
    (lambda: OnePixelSensitivity(seed=-1), ValueError, "`seed`"),
    (lambda: attack(OnePixel(), torch.zeros(1, 1, 8, 8), torch.tensor([0])), ValueError,
     r"`mean` to have 1 value\(s\) \(the images' channels\), but got 3"),
    (lambda: attack(OnePixel(), torch.zeros(1, 3, 8, 8), torch.tensor([-1])), ValueError, "`indices`"),
    (lambda: OnePixelSensitivity().update(OnePixel(), torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8),
                                          torch.tensor([0]), green, None), TypeError, "`indices`"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
