"""Infidelity and max-sensitivity (Yeh et al., NeurIPS 2019).

References: captum 0.9's ``captum.metrics.infidelity`` and ``sensitivity_max`` fed exactly our draws (a
``perturb_func`` returning the precomputed perturbations), and hand cases on a linear model
``f(x) = w^T x``: square removal with gradient x input ``Phi = w * (x - b)`` gives
``f(x) - f(x - 1_S * (x - b)) = sum_S w (x - b) = 1_S^T Phi`` for every square ``S`` (infidelity 0), and
Gaussian noise with the gradient ``Phi = w`` gives ``f(x) - f(x - I) = w^T I = I^T Phi`` (infidelity 0).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.explainers import create_explainer
from benchmark.metrics import InfidelityGaussian, InfidelitySquare, MaxSensitivity, create_metric, default_metrics
from benchmark.metrics.functional import (
    infidelity,
    infidelity_perturbations,
    max_sensitivity,
    sensitivity_perturbations,
)

captum_metrics = pytest.importorskip("captum.metrics")


def small_cnn(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes)).eval()


def linear_model(channels: int = 3, size: int = 6, seed: int = 0) -> nn.Module:
    """``logit_0 = w^T x + bias`` with a random ``w`` (the other logit is another random map)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 2))
    model[1].weight.data.copy_(torch.randn(2, channels * size * size, generator=g))
    model[1].bias.data.copy_(torch.randn(2, generator=g))
    return model.eval()


def batch(size: int = 12, n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    saliency = torch.rand(n, size, size, generator=g)
    return images, saliency, torch.randint(0, 5, (n,), generator=g)


def probability(model):
    return lambda x: model(x).double().softmax(dim=1)


# ------------------------------------------------------------------------------------------------ captum
@pytest.mark.parametrize("perturbation", ["square", "gaussian"])
@pytest.mark.parametrize("normalize", [True, False])
def test_infidelity_equals_captums_on_the_same_draws(perturbation, normalize):
    model = small_cnn()
    images, saliency, targets = batch()
    indices = torch.tensor([5, 0, 9])
    kwargs = dict(n_perturb_samples=6, perturbation=perturbation, square_size=5, baseline=0.25, std=1.0,
                  indices=indices, seed=3)
    ours = infidelity(model, images, saliency, targets, normalize=normalize, reduction="none", **kwargs)
    pert, inputs = infidelity_perturbations(images, **kwargs)

    def perturb_func(expanded):  # captum repeats each input n times (repeat_interleave): sample-major, as ours
        assert torch.equal(expanded, images.repeat_interleave(6, dim=0))
        return pert.flatten(0, 1), inputs.flatten(0, 1)

    attributions = saliency[:, None].expand_as(images).double()  # the map broadcast over the channels
    ref = captum_metrics.infidelity(probability(model), perturb_func, images, attributions, target=targets,
                                    n_perturb_samples=6, normalize=normalize)
    assert torch.allclose(ours, ref.double(), rtol=1e-5, atol=1e-9)
    assert (ours > 0).all()


def test_max_sensitivity_equals_captums_on_the_same_draws():
    model = small_cnn()
    images, _, targets = batch()
    indices = torch.tensor([5, 0, 9])
    gradcam = create_explainer("gradcam", model, input_size=(3, 12, 12))
    saliency = gradcam(images, targets)
    ours = max_sensitivity(gradcam, images, saliency, targets, n_perturb_samples=6, radius=0.05, std=1.0,
                           indices=indices, seed=3, reduction="none")
    points = sensitivity_perturbations(images, 6, radius=0.05, std=1.0, indices=indices, seed=3)

    def explanation_func(inputs, target):  # a tuple back for a tuple in, as captum's attribution methods
        return (gradcam(inputs[0], target),) if isinstance(inputs, tuple) else gradcam(inputs, target)

    ref = captum_metrics.sensitivity_max(explanation_func, images, lambda expanded: points.flatten(0, 1),
                                         n_perturb_samples=6, target=targets)
    assert torch.allclose(ours, ref.double(), rtol=1e-5, atol=1e-6)
    assert (ours > 0).all()


# ---------------------------------------------------------------------------------------------- hand cases
def test_square_removal_is_exact_for_gradient_times_input_on_a_linear_model():
    model = linear_model()
    images = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    w = model[1].weight.data[0].view(3, 6, 6)
    grad_x_input = w * (images - 0.3)  # (B, C, H, W): used as it is
    kwargs = dict(perturbation="square", n_perturb_samples=20, square_size=3, baseline=0.3, score="logit",
                  normalize=False, reduction="none")
    exact = infidelity(model, images, grad_x_input, torch.tensor([0, 0]), **kwargs)
    assert exact.abs().max() < 1e-9
    gradient = infidelity(model, images, w.expand_as(images), torch.tensor([0, 0]), **kwargs)
    assert (gradient > 1e-2).all()  # the gradient alone is not the optimal explanation for removals


def test_gaussian_noise_is_exact_for_the_gradient_and_normalize_removes_the_scale():
    model = linear_model()
    images = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    w = model[1].weight.data[0].view(3, 6, 6).expand_as(images)
    kwargs = dict(perturbation="gaussian", n_perturb_samples=8, sigma=0.5, std=1.0, score="logit", reduction="none")
    assert infidelity(model, images, w, torch.tensor([0, 0]), normalize=False, **kwargs).abs().max() < 1e-9
    doubled = infidelity(model, images, 2 * w, torch.tensor([0, 0]), normalize=False, **kwargs)
    pert, _ = infidelity_perturbations(images, 8, "gaussian", sigma=0.5, std=1.0)
    by_hand = (pert.double() * w.double()[:, None]).flatten(2).sum(2).square().mean(1)  # ((2w - w)^T I)^2
    assert torch.allclose(doubled, by_hand, rtol=1e-6)
    assert infidelity(model, images, 2 * w, torch.tensor([0, 0]), normalize=True, **kwargs).abs().max() < 1e-9


def test_a_map_is_broadcast_over_the_channels():
    model = small_cnn()
    images, saliency, targets = batch()
    for perturbation in ("square", "gaussian"):
        as_map = infidelity(model, images, saliency, targets, perturbation, 4, square_size=4, reduction="none")
        expanded = infidelity(model, images, saliency[:, None].expand_as(images), targets, perturbation, 4,
                              square_size=4, reduction="none")
        assert torch.equal(as_map, expanded)


def test_square_perturbation_sets_one_clipped_square_to_the_baseline():
    images = torch.randn(2, 3, 7, 9)
    pert, inputs = infidelity_perturbations(images, 5, "square", square_size=4, baseline=-1.0)
    assert (pert.sum(dim=(2, 3, 4)) == 3 * 16).all() and ((pert == 0) | (pert == 1)).all()
    assert torch.equal(inputs, torch.where(pert.bool(), torch.tensor(-1.0), images[:, None].expand_as(inputs)))
    big, _ = infidelity_perturbations(images, 2, "square", square_size=50)  # clipped: the whole image
    assert (big == 1).all()


def test_gaussian_noise_is_scaled_by_the_normalisation_std():
    images = torch.zeros(1, 3, 64, 64)
    pert, inputs = infidelity_perturbations(images, 20, "gaussian", sigma=0.2, std=(0.1, 0.2, 0.4))
    assert torch.equal(inputs, -pert)
    stds = pert.transpose(1, 2).flatten(2).std(dim=2)[0]
    assert torch.allclose(stds, torch.tensor([2.0, 1.0, 0.5]), rtol=0.02)


def test_sensitivity_is_zero_for_an_explainer_that_ignores_its_input():
    model = small_cnn()
    images, _, targets = batch()
    center = create_explainer("center", model, input_size=(3, 12, 12))
    values = max_sensitivity(center, images, center(images, targets), targets, 5, radius=0.5, reduction="none")
    assert torch.equal(values, torch.zeros(3, dtype=torch.float64))


def test_sensitivity_of_the_image_as_its_map_is_the_largest_relative_step():
    images, _, targets = batch(n=2)
    pixels = lambda images, classes, indices=None: images[:, 0]  # noqa: E731
    values = max_sensitivity(pixels, images, images[:, 0], targets, 7, radius=0.1, std=1.0, reduction="none")
    points = sensitivity_perturbations(images, 7, radius=0.1, std=1.0)
    steps = (points[:, :, 0] - images[:, None, 0]).double()
    by_hand = steps.flatten(2).norm(dim=2).amax(dim=1) / images[:, 0].double().flatten(1).norm(dim=1)
    assert torch.allclose(values, by_hand, rtol=1e-6)
    assert (points - images[:, None]).abs().max() <= 0.1
    inf = max_sensitivity(pixels, images, images[:, 0], targets, 7, radius=0.1, std=1.0, norm="inf", reduction="none")
    assert (inf <= 0.1 / images[:, 0].flatten(1).abs().amax(dim=1) + 1e-6).all()


def test_a_zero_map_divides_by_one_as_captum():
    images, _, targets = batch(n=1)
    ones = lambda images, classes, indices=None: torch.ones(len(images), 12, 12)  # noqa: E731
    value = max_sensitivity(ones, images, torch.zeros(1, 12, 12), targets, 3, reduction="none")
    assert value.item() == 12.0  # ||1 - 0||_F / 1


# ------------------------------------------------------------------------------------------------- seeding
def test_the_same_index_draws_the_same_perturbations():
    images, _, _ = batch(n=3)
    pert, inputs = infidelity_perturbations(images, 4, "gaussian", indices=torch.tensor([3, 7, 1]))
    alone, alone_inputs = infidelity_perturbations(images[1:2], 4, "gaussian", indices=torch.tensor([7]))
    assert torch.equal(pert[1], alone[0]) and torch.equal(inputs[1], alone_inputs[0])
    other, _ = infidelity_perturbations(images[1:2], 4, "gaussian", indices=torch.tensor([8]))
    assert not torch.equal(other[0], alone[0])
    squares, _ = infidelity_perturbations(images, 4, "square", square_size=3, indices=torch.tensor([3, 7, 1]))
    assert torch.equal(squares[1:2], infidelity_perturbations(images[1:2], 4, "square", square_size=3,
                                                              indices=torch.tensor([7]))[0])
    points = sensitivity_perturbations(images, 4, indices=torch.tensor([3, 7, 1]))
    assert torch.equal(points[1:2], sensitivity_perturbations(images[1:2], 4, indices=torch.tensor([7])))
    assert not torch.equal(points[1], sensitivity_perturbations(images[1:2], 4, seed=1, indices=torch.tensor([7]))[0])


def _metrics(model):
    gradcam = create_explainer("gradcam", model, input_size=(3, 12, 12))
    return [(InfidelitySquare(n_perturb_samples=5, square_size=4), lambda m, *a: m.update(model, *a)),
            (InfidelityGaussian(n_perturb_samples=5), lambda m, *a: m.update(model, *a)),
            (MaxSensitivity(n_perturb_samples=3, radius=0.05), lambda m, i, s, t, idx: m.update(i, s, t, gradcam, idx))]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_two_batches_and_any_split_give_the_rows_of_one(which):
    model = small_cnn()
    images, _, targets = batch(n=4)
    saliency = create_explainer("gradcam", model, input_size=(3, 12, 12))(images, targets)
    indices = torch.tensor([10, 3, 7, 0])
    (whole, update), (split, _) = _metrics(model)[which], _metrics(model)[which]
    update(whole, images, saliency, targets, indices)
    update(split, images[2:], saliency[2:], targets[2:], indices[2:])
    update(split, images[:2], saliency[:2], targets[:2], indices[:2])
    (i1, v1), (i2, v2) = whole.sorted_values(), split.sorted_values()
    assert torch.equal(i1, i2) and torch.equal(v1, v2) and v1.shape == (4,)
    assert torch.equal(whole.compute(), split.compute()) and int(whole.n_invalid) == 0
    assert torch.isclose(whole.compute(), v1.mean())


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_nan_map_is_counted_invalid(which):
    model = small_cnn()
    images, saliency, targets = batch(n=3)
    saliency[1, 2, 3] = torch.nan
    metric, update = _metrics(model)[which]
    update(metric, images, saliency, targets, torch.tensor([0, 1, 2]))
    values = metric.sorted_values()[1]
    assert torch.isnan(values[1]) and torch.isfinite(values[[0, 2]]).all()
    assert int(metric.n_invalid) == 1 and torch.isclose(metric.compute(), values[[0, 2]].mean())


def test_a_nan_map_on_a_perturbed_input_makes_the_sensitivity_undefined():
    images, saliency, targets = batch(n=2)
    broken = lambda images, classes, indices=None: torch.full((len(images), 12, 12), torch.nan)  # noqa: E731
    metric = MaxSensitivity(n_perturb_samples=2)
    metric.update(images, saliency, targets, broken, torch.tensor([0, 1]))
    assert int(metric.n_invalid) == 2 and math.isnan(metric.compute().item())


def test_the_explainer_gets_each_samples_class_and_index():
    images, saliency, targets = batch(n=2)
    calls = []

    def explain(images, classes, indices=None):
        calls.append((len(images), classes.tolist(), indices.tolist()))
        return torch.zeros(len(images), 12, 12)

    max_sensitivity(explain, images, saliency, targets, 5, indices=torch.tensor([4, 9]), chunk_size=3)
    t0, t1 = targets.tolist()
    assert calls == [(3, [t0] * 3, [4] * 3), (2, [t0] * 2, [4] * 2), (3, [t1] * 3, [9] * 3), (2, [t1] * 2, [9] * 2)]


# ---------------------------------------------------------------------------------------------- registry, checks
def test_registered_opt_in_and_lower_is_better():
    for name in ("infidelity_square", "infidelity_gaussian", "max_sensitivity"):
        metric = create_metric(name)
        assert metric.higher_is_better is False and name not in default_metrics()
    assert create_metric("infidelity_square").normalize is True


def test_bad_arguments_raise():
    model = small_cnn()
    images, saliency, targets = batch()
    with pytest.raises(ValueError, match="perturbation"):
        infidelity(model, images, saliency, targets, "uniform")
    with pytest.raises(ValueError, match="attributions"):
        infidelity(model, images, saliency[:, :5], targets)
    with pytest.raises(ValueError, match="score"):
        InfidelitySquare(score="loss")
    with pytest.raises(ValueError, match="radius"):
        MaxSensitivity(radius=-1.0)
    with pytest.raises(ValueError, match="explain"):
        max_sensitivity(lambda images, classes, indices=None: images, images, saliency, targets, 2)
