"""Occlusion rank correlation (Grad-CAM Sec. 5.3, Nagy et al. Table 3): scipy's Spearman and rankdata, a numpy
adaptive pooling, the shared occlusion cache (stubbed and real explainer), a linear model in closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr
from torch import nn
from torchvision.models import resnet18

import benchmark.metrics.occlusion_correlation as occlusion_module
from benchmark.explainers.occlusion import Occlusion
from benchmark.metrics import OcclusionCorrelation, create_metric
from benchmark.metrics.functional import occlusion_correlation, spearman_correlation
from benchmark.metrics.functional.occlusion_correlation import average_ranks, pool_maps
from benchmark.runtime.module import ExplainerModule


@pytest.fixture(autouse=True)
def empty_cache():
    occlusion_module.clear_occlusion_cache()
    yield
    occlusion_module.clear_occlusion_cache()


def numpy_pool(m: np.ndarray, size: int) -> np.ndarray:
    """Adaptive average pooling: cell i spans [floor(i H / s), ceil((i + 1) H / s))."""
    h, w = m.shape
    out = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            out[i, j] = m[(i * h) // size:-((-(i + 1) * h) // size), (j * w) // size:-((-(j + 1) * w) // size)].mean()
    return out


def test_ranks_and_spearman_match_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 40), generator=g).double()  # many ties
    b = torch.randint(0, 7, (6, 40), generator=g).double()
    np.testing.assert_allclose(average_ranks(a).numpy(), rankdata(a.numpy(), axis=1))
    ours = spearman_correlation(a, b)
    for i in range(6):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].numpy(), b[i].numpy()).statistic, abs=1e-12)
    a[2] = 3.0
    b[4, 0] = float("nan")
    ours = spearman_correlation(a, b)
    assert math.isnan(ours[2].item()) and math.isnan(ours[4].item())


def test_pooling_and_correlation_match_numpy_on_uneven_sizes():
    g = torch.Generator().manual_seed(1)
    saliency, occlusion = torch.rand(3, 30, 23, generator=g), torch.randn(3, 30, 23, generator=g)
    pooled = pool_maps(occlusion, 14)
    for i in range(3):
        np.testing.assert_allclose(pooled[i].numpy(), numpy_pool(occlusion[i].double().numpy(), 14), rtol=1e-12)
    values = occlusion_correlation(saliency, occlusion, reduction="none")
    for i in range(3):
        expected = spearmanr(numpy_pool(saliency[i].double().numpy(), 14).ravel(),
                             numpy_pool(occlusion[i].double().numpy(), 14).ravel()).statistic
        assert values[i].item() == pytest.approx(expected, abs=1e-12)
    assert occlusion_correlation(saliency, occlusion).item() == pytest.approx(values.mean().item())
    constant = saliency.clone()
    constant[1] = 0.0
    assert math.isnan(occlusion_correlation(constant, occlusion, reduction="none")[1].item())
    assert occlusion_correlation(constant, occlusion, reduction="none", nan_policy="zero")[1].item() == 0.0


class StubOcclusion:
    """Stands in for create_explainer('occlusion', ...): a fixed signed map per image; counts its calls."""

    created, calls = [], []

    def __init__(self, model, input_size, **kwargs):
        self.input_size = tuple(input_size)
        StubOcclusion.created.append(kwargs)

    def signed_maps(self, images, targets):
        StubOcclusion.calls.append(targets.tolist())
        return torch.cos(images.sum(dim=1) * 3 + targets.view(-1, 1, 1))


@pytest.fixture
def stub(monkeypatch):
    StubOcclusion.created, StubOcclusion.calls = [], []
    monkeypatch.setattr(occlusion_module, "create_explainer",
                        lambda name, model, input_size, **kw: StubOcclusion(model, input_size, **kw))
    return StubOcclusion


def test_one_occlusion_run_per_batch_whatever_the_number_of_explainers(stub):
    model = nn.Identity()
    g = torch.Generator().manual_seed(2)
    images, targets, indices = torch.randn(3, 2, 28, 28, generator=g), torch.tensor([0, 2, 1]), torch.arange(3)
    per_explainer = [OcclusionCorrelation(patch_size=5, stride=2), create_metric("occlusion_correlation",
                                                                                 patch_size=5, stride=2)]
    maps = [torch.rand(3, 28, 28, generator=g), torch.rand(3, 28, 28, generator=g)]
    for metric, saliency in zip(per_explainer, maps):
        metric.update(model, images, saliency, targets, indices)
    assert len(stub.calls) == 1 and len(stub.created) == 1
    assert stub.created[0] == {"patch_size": 5, "stride": 2, "fill": 0.0, "chunk_size": 256, "score": "logit"}
    signed = torch.cos(images.sum(dim=1) * 3 + targets.view(-1, 1, 1))  # the stub's maps
    for metric, saliency in zip(per_explainer, maps):
        for i in range(3):  # 28 -> 14: 2 x 2 blocks
            expected = spearmanr(saliency[i].view(14, 2, 14, 2).double().mean(dim=(1, 3)).flatten(),
                                 signed[i].view(14, 2, 14, 2).double().mean(dim=(1, 3)).flatten()).statistic
            assert metric.values[-1][i].item() == pytest.approx(expected, abs=1e-9)
    stub.calls.clear()
    per_explainer[0].update(model, images.clone(), maps[0], targets, indices + 3)  # another batch
    per_explainer[1].update(model, images, maps[1], torch.tensor([1, 1, 1]), indices)  # other classes
    OcclusionCorrelation(patch_size=7, stride=2).update(model, images, maps[0], targets, indices)  # settings
    assert len(stub.calls) == 3 and len(stub.created) == 2  # the explainer is reused while model/settings hold


def test_real_occlusion_of_a_linear_model_in_closed_form():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16 * 16, 3))
    images, targets = torch.randn(2, 2, 16, 16), torch.tensor([2, 0])
    metric = OcclusionCorrelation(size=8, patch_size=1, chunk_size=64)
    saliency = torch.rand(2, 16, 16)
    metric.update(model, images, saliency, targets, torch.tensor([0, 1]))
    # a 1-pixel patch of 0 drops the logit by sum_c w[t, c, p] x[c, p]
    weight = model[1].weight.detach().view(3, 2, 16, 16)
    signed = (weight[targets] * images).sum(dim=1)
    torch.testing.assert_close(occlusion_module._CACHE[4], signed, atol=1e-5, rtol=1e-5)
    for i in range(2):
        expected = spearmanr(numpy_pool(saliency[i].double().numpy(), 8).ravel(),
                             numpy_pool(signed[i].double().numpy(), 8).ravel()).statistic
        assert metric.values[-1][i].item() == pytest.approx(expected, abs=1e-6)


def test_module_runs_occlusion_once_per_batch_for_several_explainers(monkeypatch):
    calls = []
    original = Occlusion.signed_maps

    def counting(self, images, targets=None):
        calls.append(len(images))
        return original(self, images, targets)

    monkeypatch.setattr(Occlusion, "signed_maps", counting)
    torch.manual_seed(0)
    module = ExplainerModule(resnet18(num_classes=3), ["gradcam", "gradcampp"], keep_maps=False,
                             input_size=(3, 64, 64),
                             metrics={"occlusion_correlation": {"patch_size": 16, "stride": 16, "size": 4}})
    for seed in range(2):
        batch = {"image": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed)),
                 "label": torch.tensor([0, 2]), "index": torch.tensor([2 * seed, 2 * seed + 1])}
        with torch.inference_mode():  # as in Trainer.predict
            module.predict_step(batch, seed)
    module.on_predict_epoch_end()
    assert calls == [2, 2]  # one occlusion run per batch, shared by both explainers
    rows = {(r["method"], r["metric"]): r for r in module.results}
    assert set(rows) == {("gradcam", "occlusion_correlation"), ("gradcampp", "occlusion_correlation")}
    assert all(r["n"] == 4 and -1 <= r["value"] <= 1 for r in rows.values())  # an all-zero random-init map: NaN


@pytest.mark.parametrize("call, error, match", [
    (lambda: OcclusionCorrelation(size=0), ValueError, "Expected `size` to be a positive int, but got 0."),
    (lambda: OcclusionCorrelation(patch_size=4.5), TypeError, "`patch_size`"),
    (lambda: OcclusionCorrelation(score="softmax"), ValueError, "'softmax'"),
    (lambda: OcclusionCorrelation(fill="mean"), TypeError, "`fill`"),
    (lambda: occlusion_correlation(torch.rand(2, 4, 4), torch.rand(3, 4, 4)), ValueError, r"\(2, H, W\)"),
    (lambda: occlusion_correlation(torch.rand(2, 4, 4), np.zeros((2, 4, 4))), TypeError, "`occlusion`"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
