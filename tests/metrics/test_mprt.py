"""The model-parameter randomization test (Adebayo et al., NeurIPS 2018): functional maths, the metric, the report."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from torch import nn

from benchmark.cli import main
from benchmark.explainers import create_explainer
from benchmark.explainers.base import normalize_maps
from benchmark.metrics import MPRT, create_metric
from benchmark.metrics.functional.mprt import RandomizedModel, layer_groups, mprt_similarity, rank_correlation, ssim
from benchmark.runtime.module import ExplainerModule
from benchmark.synthetic.models import build_synthetic_model


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1) written with scipy: its filter, formula and 5-px crop."""
    blur = lambda x: ndimage.gaussian_filter(x, sigma=1.5, truncate=3.5)  # noqa: E731  (an 11 x 11 window)
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s[5:-5, 5:-5].mean())


def _linear_net() -> nn.Module:
    """conv 1x1 (channel 0: x, channel 1: -x) -> mean pool -> linear; logit_c = (W_c0 - W_c1) mean(x) + b_c."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net[3].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        net[3].bias.zero_()
    return net.eval()


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_synthetic_model("plain_cnn").eval()  # random init, 7 layer groups


def test_ssim_against_the_constant_closed_form_scikit_image_and_a_scipy_reference():
    a = torch.zeros(1, 12, 12)
    assert ssim(a, a + 0.5).item() == pytest.approx(1e-4 / (0.25 + 1e-4), rel=1e-9)  # C1 / (mu_b^2 + C1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 20, 17, generator=g, dtype=torch.float64)
    y = torch.rand(3, 20, 17, generator=g, dtype=torch.float64)
    y[1] = x[1] * 0.7 + 0.1
    ours = ssim(x, y)
    for i in range(3):
        assert ours[i].item() == pytest.approx(_ssim_reference(x[i].numpy(), y[i].numpy()), abs=1e-12)
    skimage_metrics = pytest.importorskip("skimage.metrics")
    for i in range(3):  # scikit-image itself (a test extra)
        theirs = skimage_metrics.structural_similarity(x[i].numpy(), y[i].numpy(), gaussian_weights=True, sigma=1.5,
                                                       use_sample_covariance=False, data_range=1.0)
        assert ours[i].item() == pytest.approx(theirs, abs=1e-12)
    assert ssim(x, x).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="at least 11 x 11"):
        ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))


def test_rank_correlation_against_scipy_with_ties_and_signs():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 50, generator=g).round(decimals=1)  # ties
    b = a + torch.randn(4, 50, generator=g)
    for absolute in (True, False):
        rho = rank_correlation(a, b, absolute)
        for i in range(4):
            x, y = (a[i].abs(), b[i].abs()) if absolute else (a[i], b[i])
            assert rho[i].item() == pytest.approx(stats.spearmanr(x.numpy(), y.numpy()).statistic, abs=1e-12)
    assert rank_correlation(a, b, True)[0] != rank_correlation(a, b, False)[0]
    nan = torch.tensor([[float("nan"), 1.0, 2.0]])
    assert math.isnan(rank_correlation(nan, torch.tensor([[0.0, 1.0, 2.0]])).item())


def test_hand_case_randomizing_the_top_layer_changes_a_known_map():
    net, ramp = _linear_net(), torch.linspace(-1, 1, 144).view(1, 1, 12, 12)
    target = torch.tensor([0])
    gradcam = create_explainer("gradcam", net, target_layer="0", input_size=(1, 12, 12))
    original = gradcam(ramp, target)
    # Grad-CAM at the conv: weights dS_0/dA_k = W_0k / HW, map = ReLU((W_00 - W_01) x) -> relu(x), min-max
    assert torch.allclose(original, normalize_maps(ramp[:, 0].relu(), (12, 12)))
    metric = MPRT(seed=4)
    metric.update(ramp, original, target, gradcam)
    assert metric.layer_names == ["3", "0"]  # the top group (the linear layer) first
    top = metric.randomized_model(net, ramp).select(0)[3].weight[0].detach()
    sign = float(torch.sign(top[0] - top[1]))
    assert sign < 0  # seed 4 flips the class's direction: the map becomes ReLU(-x)
    expected = normalize_maps((sign * ramp[:, 0]).relu(), (12, 12))
    row = metric.values[-1].view(3, 2)  # (Spearman |.|, signed, SSIM) x (top, all)
    rho = stats.spearmanr(original.flatten().numpy(), expected.flatten().numpy()).statistic
    assert row[0, 0].item() == pytest.approx(rho, abs=1e-12) and row[1, 0].item() == pytest.approx(rho, abs=1e-12)
    assert row[2, 0].item() == pytest.approx(_ssim_reference(original[0].double().numpy(),
                                                             expected[0].double().numpy()), abs=1e-6)
    assert rho < 0
    kept = MPRT(seed=0)  # seed 0 keeps the sign: the same ranking
    kept.update(ramp, original, target, gradcam)
    assert kept.values[-1].view(3, 2)[0, 0].item() == pytest.approx(1.0, abs=1e-12)


def test_the_original_model_is_unchanged_and_the_copies_are_built_once():
    model = _cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    module = ExplainerModule(model, ["gradcam"], keep_maps=False, input_size=(3, 32, 32), metrics=["mprt"])
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        module.predict_step({"image": torch.rand(2, 3, 32, 32, generator=g), "label": torch.tensor([1, 4]),
                             "index": torch.tensor([2 * seed, 2 * seed + 1])}, seed)
    metric = module.metrics["gradcam/mprt"]
    assert metric.builds == 1 and len(metric._twins) == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng)  # the draws use their own seeded state
    assert metric.sorted_values()[1].shape == (4, 3 * 7)


def test_cascading_and_independent_randomize_different_layer_sets():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    randomized = RandomizedModel(net, torch.zeros(1, 4))
    assert randomized.groups == [["0"], ["2"], ["4"]]
    for k in range(3):  # the k-th copy from the top: cascading layers >= 2 - k (forward order), independent 2 - k
        for mode, changed in (("cascading", set(range(2 - k, 3))), ("independent", {2 - k})):
            copy_ = randomized.select(k, mode)
            for g, layer in enumerate((0, 2, 4)):
                same = torch.equal(copy_[layer].weight, net[layer].weight)
                assert same == (g not in changed), (mode, k, layer)
    # and the rows differ below the top layer
    model, images, targets = _cnn(), torch.rand(2, 3, 32, 32), torch.tensor([0, 3])
    gradcam = create_explainer("gradcam", model, input_size=(3, 32, 32))
    rows = {}
    for mode in ("cascading", "independent"):
        metric = MPRT(randomization=mode)
        metric.update(images, gradcam(images, targets), targets, gradcam)
        rows[mode] = metric.values[-1].view(2, 3, 7)
    assert torch.equal(rows["cascading"][:, :, 0], rows["independent"][:, :, 0])
    assert not torch.equal(rows["cascading"], rows["independent"])


def test_seeding_gives_identical_copies_and_rows_whatever_the_batching():
    model = _cnn()
    a, b, c = (RandomizedModel(model, torch.zeros(1, 3, 32, 32), seed=s) for s in (0, 0, 1))
    for k in (0, 6):
        ta, tb, tc = (r.select(k).state_dict() for r in (a, b, c))
        assert all(torch.equal(ta[n], tb[n]) for n in ta)
        assert not all(torch.equal(ta[n], tc[n]) for n in ta)
    images, targets, indices = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), torch.arange(4)
    gradcam = create_explainer("gradcam", model, input_size=(3, 32, 32))
    whole, split = MPRT(), MPRT()
    whole.update(images, gradcam(images, targets), targets, gradcam, indices)
    for part in (slice(2, 4), slice(0, 2)):
        split.update(images[part], gradcam(images[part], targets[part]), targets[part], gradcam, indices[part])
    assert torch.allclose(whole.sorted_values()[1], split.sorted_values()[1], atol=1e-6, rtol=0)
    again = MPRT()
    again.update(images, gradcam(images, targets), targets, gradcam, indices)
    assert torch.equal(whole.sorted_values()[1], again.sorted_values()[1])


def test_a_model_independent_map_fails_and_gradcam_passes_at_the_top():
    model, images, targets = _cnn(), torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    center = create_explainer("center", model, input_size=(3, 32, 32))
    metric = MPRT()
    metric.update(images, center(images, targets), targets, center)
    summary = metric.summary()
    assert summary[""] == 1.0 and all(summary[f"spearman_{k}"] == 1.0 and summary[f"ssim_{k}"] == 1.0
                                      for k in range(1, 8))
    gradcam = create_explainer("gradcam", model, input_size=(3, 32, 32))
    metric = MPRT()
    metric.update(images, gradcam(images, targets), targets, gradcam)
    assert metric.extra_values()["spearman_1"] < 1 and metric.compute() < 1


class _NaNOnRandomTop:
    """Its sample 0's map is NaN whenever the top layer's weights are not the original ones."""

    def __init__(self, model):
        self.model, self.top = model, model.classifier.weight.detach().clone()

    def __call__(self, images, targets, indices=None):
        maps = images[:, 0].sigmoid()
        if not torch.equal(self.model.classifier.weight, self.top):
            maps = maps.clone()
            maps[0] = float("nan")
        return maps


def test_a_nan_map_is_counted_invalid():
    model, images, targets = _cnn(), torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    explainer = _NaNOnRandomTop(model)
    metric = MPRT()
    metric.update(images, explainer(images, targets), targets, explainer, torch.tensor([0, 1]))
    assert int(metric.n_invalid) == 1 and torch.isnan(metric.values[-1][0]).all()
    assert metric.compute().item() == 1.0  # the other sample's map ignores the weights
    assert metric.values[-1][1].tolist() == [1.0] * 21


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="randomization"):
        MPRT(randomization="bottom_up")
    with pytest.raises(ValueError, match="seed"):
        MPRT(seed=-1)
    with pytest.raises(ValueError, match="not one"):
        layer_groups(nn.Linear(2, 2), torch.zeros(1, 2), ["fc"])
    with pytest.raises(ValueError, match="B, L, H, W"):
        mprt_similarity(torch.zeros(1, 12, 12), torch.zeros(1, 12, 12))
    assert create_metric("mprt").higher_is_better is False


def test_the_sanity_section_renders_for_a_tiny_run(tmp_path, capsys):
    code = main(["run", "--data_args", "{size: 4, scene: classic, image_size: 32}", "--batch_size", "2",
                 "--backbones", "[synthetic/plain_cnn]", "--explainers", "[gradcam, center]", "--metrics", "[mprt]",
                 "--bootstrap", "20", "--out", str(tmp_path), "--trainer.accelerator", "cpu",
                 "--trainer.enable_progress_bar", "false"])
    assert code == 0
    text = (tmp_path / "leaderboard.md").read_text()
    assert "MPRT ρ ↓" in text and "Sanity check, model-parameter randomization" in text
    assert "| Method | 1 | 2 | 3 | 4 | 5 | 6 | 7 |" in text
    assert "| center | " + " | ".join(["1.000"] * 7) + " |" in text
    assert "(figures/synthetic--plain_cnn_mprt.png)" in text
    assert (tmp_path / "figures" / "synthetic--plain_cnn_mprt.png").is_file()
    rows = (tmp_path / "results.csv").read_text()
    assert "synthetic,synthetic/plain_cnn,gradcam,mprt_spearman_7," in rows
