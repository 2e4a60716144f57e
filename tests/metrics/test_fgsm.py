"""FGSM robustness: the closed-form step of a linear model, no parameter gradients, inference mode, scipy's
Pearson, flipped predictions, batching and bad arguments."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import pearsonr
from torch import nn

from benchmark.metrics import FGSMRobustness, create_metric
from benchmark.metrics.base import MetricInputs
from benchmark.metrics.functional import fgsm_attack, fgsm_robustness

STD = (0.2, 0.4, 0.5)


def linear(seed=0, channels=3, size=4):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 2))
    with torch.no_grad():  # integer weights, the two rows differing everywhere but where both are 0
        first = torch.randint(-2, 3, (channels * size * size,)).float()
        offset = torch.randint(1, 3, first.shape).float() * (torch.randint(0, 2, first.shape) * 2 - 1)
        second = first + offset
        first[::5] = second[::5] = 0.0  # a zero gradient there, exactly
        model[1].weight.copy_(torch.stack([first, second]))
    return model


def squash(images, classes, indices=None):
    """A stand-in explainer: a smooth [0, 1] map of the image."""
    return torch.sigmoid(images.sum(dim=1) * (1 + classes.view(-1, 1, 1)))


def test_step_is_epsilon_over_std_times_the_sign_of_the_closed_form_gradient():
    model = linear()
    images = torch.randn(3, 3, 4, 4)
    targets = torch.tensor([0, 1, 0])
    adversarial, logits = fgsm_attack(model, images, targets, epsilon=4 / 255, std=STD)
    w = model[1].weight.detach()
    # CE gradient of a 2-class linear model: dL/dx = p_other * (w_other - w_target), p_other > 0
    direction = torch.stack([(w[1 - t] - w[t]).sign() for t in targets.tolist()]).view(3, 3, 4, 4)
    step = 4 / 255 / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(adversarial, images + step * direction)
    assert (adversarial == images)[direction == 0].all() and (direction == 0).any()  # sign(0) = 0: unchanged
    torch.testing.assert_close(logits, model(images))


def test_no_parameter_grad_and_inference_mode():
    model = linear()
    with torch.inference_mode():
        images = torch.randn(2, 3, 4, 4)  # an inference tensor, as in Trainer.predict
        adversarial, _ = fgsm_attack(model, images, torch.tensor([0, 1]), std=STD)
    with torch.no_grad():
        again, _ = fgsm_attack(model, images.clone(), torch.tensor([0, 1]), std=STD)
    torch.testing.assert_close(adversarial, again)
    assert not torch.equal(adversarial, images)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # the caller's train flag is restored (eval only during the attack)


def test_clamp_keeps_the_image_range():
    model = linear()
    mean = (0.5, 0.5, 0.5)
    images = (torch.rand(2, 3, 4, 4) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    adversarial, _ = fgsm_attack(model, images, torch.tensor([0, 1]), epsilon=0.5, std=STD, clamp=True, mean=mean)
    pixels = adversarial * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert ((pixels < 1e-6) | (pixels > 1 - 1e-6)).any()  # some were clipped


def test_correlation_matches_scipy_and_constant_maps_are_undefined():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 6, 5, generator=g), torch.rand(4, 6, 5, generator=g)
    b[1] = 1 - a[1]
    b[3] = 0.3  # constant
    values = fgsm_robustness(a, b, reduction="none")
    for i in range(3):
        expected = pearsonr(a[i].flatten().double().numpy(), b[i].flatten().double().numpy())[0]  # scipy keeps float32
        assert values[i].item() == pytest.approx(expected, abs=1e-9)
    assert values[1].item() == pytest.approx(-1.0) and math.isnan(values[3].item())
    assert fgsm_robustness(a, b).item() == pytest.approx(values[:3].mean().item())
    assert fgsm_robustness(a, b, nan_policy="zero").item() == pytest.approx(values[:3].sum().item() / 4)


def test_metric_values_flips_and_batching():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))  # logit_0 = sum(x), logit_1 = 0
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.ones(16), torch.zeros(16)]))
        model[1].bias.zero_()
    images = torch.full((4, 1, 4, 4), 0.01)
    images[2:] = 0.5
    images += torch.linspace(0, 0.05, 16).view(1, 1, 4, 4)  # maps that are not constant
    targets = torch.zeros(4, dtype=torch.long)
    # x' = x - 0.1: sum 16 * (0.01 - 0.1) < 0 flips the first two; the last two stay class 0
    metric = FGSMRobustness(epsilon=0.1, std=1.0)
    maps = squash(images, targets)
    metric.update(model, images, maps, targets, squash, torch.arange(4))
    adversarial_maps = squash(images - 0.1, targets)
    for i in range(4):
        expected = pearsonr(maps[i].flatten().double().numpy(), adversarial_maps[i].flatten().double().numpy())[0]
        assert metric.values[-1][i, 0].item() == pytest.approx(expected, abs=1e-6)
    assert metric.values[-1][:, 1].tolist() == [100.0, 100.0, 0.0, 0.0]
    assert metric.extra_values() == {"flip_rate": torch.tensor(50.0, dtype=torch.float64)}
    split = create_metric("fgsm_robustness", epsilon=0.1, std=1.0)
    for part in (torch.tensor([3, 1]), torch.tensor([0, 2])):
        split.update(model, images[part], maps[part], targets[part], squash, part)
    assert split.summary() == metric.summary()


def test_update_from_passes_the_explain_callable():
    calls = []

    def explain(images, classes, indices=None):
        calls.append((tuple(images.shape), classes.tolist(), indices))
        return squash(images, classes)

    model = linear(channels=3)
    images, targets = torch.randn(2, 3, 4, 4), torch.tensor([1, 0])
    metric = FGSMRobustness(std=STD)
    metric.update_from(MetricInputs(images, targets, torch.tensor([5, 6]), squash(images, targets), torch.ones(2),
                                    torch.ones(2, 2), model=model, explain=explain))
    assert len(calls) == 1 and calls[0][:2] == ((2, 3, 4, 4), [1, 0])
    assert calls[0][2].tolist() == [5, 6]
    with pytest.raises(ValueError, match=r"needs \['explain'\]"):
        metric.update_from(MetricInputs(images, targets, torch.tensor([5, 6]), squash(images, targets),
                                        torch.ones(2), torch.ones(2, 2), model=model))


@pytest.mark.parametrize("call, error, match", [
    (lambda: FGSMRobustness(epsilon=1.5), ValueError, r"Expected `epsilon` in \[0, 1\], but got 1.5."),
    (lambda: FGSMRobustness(epsilon="8/255"), TypeError, "`epsilon`"),
    (lambda: FGSMRobustness(std=(0.2, -0.1, 0.2)), ValueError, "finite positive"),
    (lambda: fgsm_attack(linear(), torch.randn(1, 3, 4, 4), torch.tensor([0]), std=(0.2, 0.2)), ValueError,
     r"`std` to have 3 value\(s\) \(the images' channels\), but got 2"),
    (lambda: fgsm_attack(linear(), torch.randn(3, 4, 4), torch.tensor([0])), ValueError, r"\(B, C, H, W\)"),
    (lambda: fgsm_attack(linear(), torch.randn(2, 3, 4, 4), torch.tensor([0])), ValueError, r"`targets`"),
    (lambda: fgsm_robustness(torch.rand(2, 3, 3), torch.rand(2, 3, 4)), ValueError, "same shape"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
