"""ROAD MoRF / LeRF (Rong et al., ICML 2022).

References: the 8-neighbour equations of a 4 x 4 case written out by hand and solved with
``numpy.linalg.solve``, and pytorch-grad-cam's ``pytorch_grad_cam.metrics.road`` (the authors'
``NoisyLinearImputer`` and its ROAD classes; installed with the test extra) with the noise set to 0.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.metrics import ROADLeRF, ROADMoRF, create_metric, default_metrics
from benchmark.metrics.functional import noisy_linear_impute, road_curve, road_lerf, road_morf
from benchmark.metrics.functional.road import PERCENTILES, removal_masks

#: pytorch-grad-cam's imputer calls ``np.argwhere`` on torch tensors (a NumPy 2 deprecation in the peer, not here)
PEER_WARNING = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")


def small_cnn(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes)).eval()


def batch(size: int = 10, n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    saliency = torch.rand(n, size, size, generator=g)  # distinct values: no ties
    return images, saliency, torch.randint(0, 5, (n,), generator=g)


# ----------------------------------------------------------------------------------------------- imputer
def test_imputer_solves_the_hand_written_8_neighbour_equations():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(2, 4, 4, generator=g, dtype=torch.float64)
    removed = torch.zeros(4, 4, dtype=torch.bool)
    removed[0, 0] = removed[1, 1] = removed[1, 2] = True  # a corner pixel and two interior neighbours
    out = noisy_linear_impute(img[None], removed[None], noise=0.0)[0]
    for c in range(2):
        v = img[c].numpy()
        # unknowns (x0, xa, xb) = pixels (0, 0), (1, 1), (1, 2); weights 1/6 direct, 1/12 diagonal;
        # each row: (sum of the in-image neighbours' weights) x_i - (removed neighbours) = (kept neighbours)
        a = np.array([[5 / 12, -1 / 12, 0.0],  # (0, 0): in-image (0, 1), (1, 0), (1, 1)
                      [-1 / 12, 1.0, -1 / 6],  # (1, 1): all 8 in the image; (0, 0) and (1, 2) removed
                      [0.0, -1 / 6, 1.0]])  # (1, 2): all 8; (1, 1) removed
        b = np.array([v[0, 1] / 6 + v[1, 0] / 6,
                      v[0, 1] / 6 + v[0, 2] / 12 + v[1, 0] / 6 + v[2, 0] / 12 + v[2, 1] / 6 + v[2, 2] / 12,
                      v[0, 1] / 12 + v[0, 2] / 6 + v[0, 3] / 12 + v[1, 3] / 6 + v[2, 1] / 12 + v[2, 2] / 6
                      + v[2, 3] / 12])
        x0, xa, xb = np.linalg.solve(a, b)
        assert out[c, 0, 0].item() == pytest.approx(x0, abs=1e-12)
        assert out[c, 1, 1].item() == pytest.approx(xa, abs=1e-12)
        assert out[c, 1, 2].item() == pytest.approx(xb, abs=1e-12)
    assert torch.equal(out[:, ~removed], img[:, ~removed])  # kept pixels untouched
    assert out.dtype == torch.float64


@PEER_WARNING
def test_imputer_matches_pytorch_grad_cam():
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    g = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 12, 15, generator=g)  # not square: rows and columns not mixed up
    removed = torch.rand(4, 12, 15, generator=g) < torch.tensor([0.1, 0.5, 0.9, 0.99]).view(4, 1, 1)
    ours = noisy_linear_impute(images, removed, noise=0.0)
    for image, mask, mine in zip(images, removed, ours):
        ref = road.NoisyLinearImputer(noise=0.0)(image, (~mask).float())
        assert torch.allclose(mine, ref, atol=1e-4, rtol=0)


def test_noise_is_seeded_by_the_dataset_index():
    images = torch.zeros(3, 3, 8, 8)
    removed = torch.zeros(3, 8, 8, dtype=torch.bool)
    removed[:, 2:6, 2:6] = True
    a = noisy_linear_impute(images, removed, noise=0.1, indices=torch.tensor([4, 9, 4]))
    b = noisy_linear_impute(images[:1], removed[:1], noise=0.1, indices=torch.tensor([9]))
    assert torch.equal(a[0], a[2]) and torch.equal(a[1], b[0])  # same index, same noise, whatever the batch
    assert not torch.equal(a[0], a[1])
    assert (a[:, :, ~removed[0]] == 0).all()  # noise on the imputed pixels only
    std = torch.tensor([0.229, 0.224, 0.225])  # the default: 0.1 pixel units / ImageNet std per channel
    all_but_one = torch.ones(1, 64, 64, dtype=torch.bool)
    all_but_one[0, 0, 0] = False  # a zero image: the imputation is 0, what is left is the noise
    big = noisy_linear_impute(torch.zeros(1, 3, 64, 64), all_but_one, noise=0.1)
    assert torch.allclose(big[0].flatten(1)[:, 1:].std(dim=1), 0.1 / std, rtol=0.05)
    other = noisy_linear_impute(images, removed, noise=0.1, indices=torch.tensor([4, 9, 4]), seed=1)
    assert not torch.equal(a, other)


# ----------------------------------------------------------------------------------------------- removal
def test_rank_removal_counts_and_orders():
    saliency = torch.tensor([[[0.3, 0.3, 0.9], [0.1, 0.3, 0.5], [0.0, 0.7, 0.3]]])
    morf = removal_masks(saliency, [10, 34, 50, 90], "morf")
    lerf = removal_masks(saliency, [10, 34, 50, 90], "lerf")
    assert morf.flatten(2).sum(2).tolist() == [[0, 3, 4, 8]] == lerf.flatten(2).sum(2).tolist()  # floor(q 9 / 100)
    assert morf[0, 1].flatten().nonzero().flatten().tolist() == [2, 5, 7]  # 0.9, 0.7, 0.5
    assert morf[0, 2].flatten().nonzero().flatten().tolist() == [0, 2, 5, 7]  # ties: raster order (0, 0) first
    assert lerf[0, 1].flatten().nonzero().flatten().tolist() == [3, 6, 8]  # 0.0, 0.1, then the last 0.3 tie
    # the MoRF set at q is the complement of the LeRF set at 100 - q when q HW / 100 is whole
    s = torch.rand(2, 10, 10)
    assert torch.equal(removal_masks(s, [30], "morf"), ~removal_masks(s, [70], "lerf"))


@PEER_WARNING
@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("size, removal", [(10, "rank"), (10, "threshold"), (16, "threshold")])
def test_curves_match_pytorch_grad_cam(order, size, removal):
    """pytorch-grad-cam's ``percentile=p`` imputes ~(100 - p) %: our q is its 100 - q. On 10 x 10 images with
    distinct values its np.percentile threshold removes exactly floor(q HW / 100) pixels, as the paper's rank."""
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = small_cnn()
    images, saliency, targets = batch(size)
    ours = road_curve(model, images, saliency, targets, order, noise=0.0, removal=removal, chunk_size=7)
    cls = road.ROADMostRelevantFirst if order == "morf" else road.ROADLeastRelevantFirst
    score = [targets_mod.ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
    columns = []
    for q in PERCENTILES:
        peer = cls(percentile=100 - q)
        peer.perturbation.imputer.noise = 0.0
        columns.append(peer(images, saliency.numpy(), score, model, return_diff=False))
    assert torch.allclose(ours, torch.tensor(np.stack(columns, axis=1), dtype=torch.float64), atol=1e-4, rtol=0)


def test_rank_and_threshold_differ_off_the_exact_sizes():
    """On 16 x 16, np.percentile's interpolation removes one pixel more than floor(q HW / 100) at some q."""
    _, saliency, _ = batch(16)
    rank, threshold = removal_masks(saliency, PERCENTILES), removal_masks(saliency, PERCENTILES, removal="threshold")
    counts = threshold.flatten(2).sum(2) - rank.flatten(2).sum(2)
    assert counts.min() >= 0 and counts.max() == 1


@PEER_WARNING
@pytest.mark.parametrize("name, peer", [("road_morf", "ROADMostRelevantFirstAverage"),
                                        ("road_lerf", "ROADLeastRelevantFirstAverage")])
def test_means_match_pytorch_grad_cam_averages(name, peer, monkeypatch):
    """Its averages return mean_q (p_q - p(x)); ours mean_q p_q."""
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")

    class NoiselessImputer(road.NoisyLinearImputer):
        def __init__(self):
            super().__init__(noise=0.0)

    monkeypatch.setattr(road, "NoisyLinearImputer", NoiselessImputer)  # its ROAD classes take no noise argument
    model = small_cnn()
    images, saliency, targets = batch(10)
    score = [targets_mod.ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
    ref = getattr(road, peer)()(images, saliency.numpy(), score, model)
    with torch.no_grad():
        clean = model(images).double().softmax(1).gather(1, targets[:, None]).squeeze(1)
    fn = road_morf if name == "road_morf" else road_lerf
    ours = fn(model, images, saliency, targets, reduction="none", noise=0.0)
    assert torch.allclose(ours - clean, torch.tensor(ref, dtype=torch.float64), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("cls", [ROADMoRF, ROADLeRF])
def test_two_batches_and_any_split_give_the_rows_of_one(cls):
    model = small_cnn()
    images, saliency, targets = batch(12, n=4)
    indices = torch.tensor([10, 3, 7, 0])
    whole = cls(noise=0.05, fast=False)
    whole.update(model, images, saliency, targets, indices)
    split = cls(noise=0.05, fast=False, chunk_size=5)
    split.update(model, images[2:], saliency[2:], targets[2:], indices[2:])
    split.update(model, images[:2], saliency[:2], targets[:2], indices[:2])
    (i1, v1), (i2, v2) = whole.sorted_values(), split.sorted_values()
    assert torch.equal(i1, i2) and torch.equal(v1, v2)
    assert v1.shape == (4, 1 + len(PERCENTILES)) and torch.allclose(v1[:, 0], v1[:, 1:].mean(1))
    assert torch.equal(whole.compute(), split.compute()) and whole.n_invalid == 0
    assert torch.equal(whole.mean_curve(), split.mean_curve())
    noiseless = cls(noise=0.0, fast=False)
    noiseless.update(model, images, saliency, targets, indices)
    assert not torch.allclose(noiseless.sorted_values()[1], v1)  # the noise is there


def test_a_nan_map_is_counted_invalid_and_runs_no_imputation():
    model = small_cnn()
    images, saliency, targets = batch(10)
    saliency[1, 3, 4] = float("nan")
    metric = ROADMoRF(noise=0.0, fast=False)
    metric.update(model, images, saliency, targets, torch.tensor([0, 1, 2]))
    values = metric.sorted_values()[1]
    assert int(metric.n_invalid) == 1 and torch.isnan(values[1]).all() and not torch.isnan(values[[0, 2]]).any()
    alone = road_morf(model, images[[0, 2]], saliency[[0, 2]], targets[[0, 2]], reduction="none", noise=0.0)
    assert torch.allclose(values[[0, 2], 0], alone, atol=1e-12)
    assert metric.compute().item() == pytest.approx(alone.mean().item(), abs=1e-12)  # omitted


def test_the_forwards_are_batched_in_chunks():
    calls = []
    model = small_cnn()
    model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    images, saliency, targets = batch(10)
    road_curve(model, images, saliency, targets, "lerf", noise=0.0, chunk_size=8)
    assert calls == [8, 8, 8, 3]  # 3 images x 9 percentages


def test_threshold_mode_leaves_a_fully_removed_point_undefined():
    model = small_cnn()
    images, _, targets = batch(6, n=1)
    curve = road_curve(model, images, torch.zeros(1, 6, 6), targets, "morf", [50], noise=0.0, removal="threshold")
    assert torch.isnan(curve).all()  # a constant map: every pixel is >= its percentile
    assert not torch.isnan(road_curve(model, images, torch.zeros(1, 6, 6), targets, "morf", [50])).any()


def test_checks_and_registry():
    model, (images, saliency, targets) = small_cnn(), batch(6)
    with pytest.raises(ValueError, match="percentiles"):
        ROADMoRF(percentiles=[0, 50])
    with pytest.raises(ValueError, match="percentiles"):
        road_curve(model, images, saliency, targets, percentiles=[100])
    with pytest.raises(ValueError, match="order"):
        road_curve(model, images, saliency, targets, order="both")
    with pytest.raises(ValueError, match="removal"):
        ROADLeRF(removal="quantile")
    with pytest.raises(ValueError, match="noise"):
        ROADLeRF(noise=-0.1)
    with pytest.raises(ValueError, match="std"):
        road_curve(model, images, saliency, targets, std=(0.2, 0.2))
    with pytest.raises(ValueError, match="saliency"):
        road_curve(model, images, saliency[:, :3], targets)
    assert create_metric("road_morf").higher_is_better is False and create_metric("road_lerf").higher_is_better
    assert not {"road_morf", "road_lerf"} & set(default_metrics())  # opt-in
    assert math.isclose(road_morf(model, images, saliency, targets, noise=0.0).item(),
                        road_curve(model, images, saliency, targets, noise=0.0).mean().item(), abs_tol=1e-12)
