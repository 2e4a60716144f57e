"""The pixel-attribution explainers against independent references.

* Guided Backpropagation: the closed form of a one-hidden-layer ReLU net, in numpy
  (``dS/dx = W1^T (1[W1 x + b1 > 0] * relu(w2))``);
* Guided Grad-CAM: captum's own ``GuidedGradCam`` (its ``LayerGradCam``, not our Grad-CAM);
  Guided Grad-CAM++: the product of guided backprop with the ``grad-cam`` package's Grad-CAM++
  on a net whose gradients are large enough that its 1e-6 epsilon is negligible (NOTES.md §4);
* Integrated Gradients / Gradient SHAP: linear models, where both equal ``(x - x') * w`` exactly,
  and IG's completeness (the signed map sums to ``S(x) - S(x')``) on a ReLU CNN;
* Occlusion: a direct loop of forwards with a patch centred on each pixel, averaged over the
  patches covering each pixel, in numpy.
"""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmark.explainers import create_explainer, default_explainers, list_explainers, normalize_maps
from benchmark.explainers.attribution import REDUCTIONS, quiet_captum, reduce_channels

ATTRIBUTIONS = ("guidedbackprop", "guidedgradcam", "guidedgradcampp", "integratedgradients", "gradientshap",
                "occlusion")


def tiny_cnn(classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)).eval()


def test_attributions_are_registered_but_not_in_the_default_run():
    assert set(ATTRIBUTIONS) <= set(list_explainers())
    assert not set(ATTRIBUTIONS) & set(default_explainers())


def test_guided_backprop_closed_form():
    rng = np.random.default_rng(0)
    w1, b1, w2 = rng.normal(size=(5, 12)), rng.normal(size=5), rng.normal(size=(3, 5))
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(w1)), net[1].bias.copy_(torch.tensor(b1))
        net[3].weight.copy_(torch.tensor(w2)), net[3].bias.zero_()
    x = rng.normal(size=(2, 3, 2, 2))
    targets = [2, 0]
    explainer = create_explainer("guidedbackprop", net, input_size=(3, 2, 2))
    got = explainer.attribute(torch.tensor(x), torch.tensor(targets), None).numpy()
    for i, c in enumerate(targets):
        active = (w1 @ x[i].ravel() + b1) > 0
        expected = w1.T @ (active * np.maximum(w2[c], 0))
        np.testing.assert_allclose(got[i].ravel(), expected, rtol=1e-10)
    maps = explainer(torch.tensor(x), torch.tensor(targets))
    expected_maps = normalize_maps(torch.tensor(np.abs(got).sum(axis=1)), (2, 2))
    torch.testing.assert_close(maps, expected_maps)


def test_guided_gradcam_equals_captum_guided_gradcam():
    from captum.attr import GuidedGradCam

    model = tiny_cnn()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 3, 1])
    ours = create_explainer("guidedgradcam", model, target_layer="3", input_size=(3, 12, 12))
    with quiet_captum():
        reference = GuidedGradCam(model, model[3]).attribute(x.clone().requires_grad_(), target=targets,
                                                             interpolate_mode="bilinear").detach()
    torch.testing.assert_close(ours.attribute(x.clone(), targets, None), reference, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours(x, targets), normalize_maps(reference.abs().sum(dim=1), (12, 12)),
                               rtol=1e-5, atol=1e-6)


def test_guided_gradcampp_is_guided_backprop_times_the_grad_cam_package():
    from captum.attr import GuidedBackprop
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = tiny_cnn()
    with torch.no_grad():
        model[-1].weight.mul_(1e4)  # gradients >> the package's 1e-6 epsilon (NOTES.md section 4)
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    targets = [2, 1]
    with GradCAMPlusPlus(model, target_layers=[model[3]]) as peer:
        peer_cam = torch.tensor(peer(x, [ClassifierOutputTarget(t) for t in targets]))  # [0, 1] at 12 x 12
    with quiet_captum():
        guided = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=torch.tensor(targets)).detach()
    expected = normalize_maps(guided.abs().sum(dim=1) * peer_cam, (12, 12))
    ours = create_explainer("guidedgradcampp", model, target_layer="3", input_size=(3, 12, 12))
    torch.testing.assert_close(ours(x, torch.tensor(targets)), expected, rtol=0, atol=1e-4)


def linear_model(w: torch.Tensor) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 2, bias=True)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([w.flatten(), -w.flatten()]))
        model[1].bias.fill_(0.7)
    return model


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_left"])
def test_integrated_gradients_on_a_linear_model_is_input_minus_baseline_times_weight(method):
    w = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ig = create_explainer("integratedgradients", linear_model(w), input_size=(2, 3, 3), steps=5, baseline=0.5,
                          method=method)
    got = ig.attribute(x, torch.tensor([0, 1]), None)
    torch.testing.assert_close(got, torch.stack([(x[0] - 0.5) * w, -(x[1] - 0.5) * w]))


def test_captum_trapezoid_rule_is_refused_while_its_steps_do_not_sum_to_one():
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters("riemann_trapezoid")
    assert sum(step_sizes(5)) == pytest.approx(0.8) and alphas(5)[-1] == pytest.approx(1.0)  # captum 0.9.0
    with pytest.raises(ValueError, match="Expected `method` to be one of"):
        create_explainer("integratedgradients", tiny_cnn(), method="riemann_trapezoid")


def test_integrated_gradients_completeness_on_a_relu_cnn():
    model = tiny_cnn().double()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([1, 2])
    ig = create_explainer("integratedgradients", model, input_size=(3, 10, 10), steps=300, reduction="sum",
                          chunk_size=300)
    total = ig.attribute(x, targets, None).sum(dim=(1, 2, 3))
    with torch.no_grad():
        gap = model(x).gather(1, targets[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(total, gap, rtol=2e-3, atol=2e-4)


def test_gradient_shap_on_a_linear_model_and_its_seeding():
    w = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    shap = create_explainer("gradientshap", linear_model(w), input_size=(2, 3, 3), n_samples=5, baselines=[-1.0])
    got = shap.attribute(x, torch.tensor([0, 0, 1]), torch.tensor([4, 5, 6]))
    torch.testing.assert_close(got, torch.stack([(x[0] + 1) * w, (x[1] + 1) * w, -(x[2] + 1) * w]))
    # random baselines and noise: seeded by (seed, dataset index), global generators left as they were
    model = tiny_cnn()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    noisy = create_explainer("gradientshap", model, input_size=(3, 8, 8), n_samples=4, baselines=[-1.0, 0.0, 1.0],
                             stdevs=0.2)
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    first = noisy(images, torch.tensor([0, 1]), torch.tensor([10, 11]))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(noisy(images[1:], torch.tensor([1]), torch.tensor([11]))[0], first[1])
    assert not torch.equal(noisy(images, torch.tensor([0, 1]), torch.tensor([12, 13])), first)


def occlusion_reference(model, x, target, patch, stride, fill, probability=False):
    """Patch centred on each strided position of the half-patch-padded image; per pixel, the mean drop over the
    patches covering it (numpy)."""
    _, h, w = x.shape
    pad = patch // 2

    def score(img):
        with torch.no_grad():
            out = model(img[None])
            out = out.softmax(dim=1) if probability else out
        return out[0, target].item()

    clean = score(x)
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for top in range(0, h + 2 * pad - patch + 1, stride):
        for left in range(0, w + 2 * pad - patch + 1, stride):
            y0, y1 = max(top - pad, 0), min(top - pad + patch, h)
            x0, x1 = max(left - pad, 0), min(left - pad + patch, w)
            occluded = x.clone()
            occluded[:, y0:y1, x0:x1] = fill
            total[y0:y1, x0:x1] += clean - score(occluded)
            count[y0:y1, x0:x1] += 1
    return total / count


@pytest.mark.parametrize("patch,stride,score", [(3, 1, "logit"), (5, 2, "logit"), (4, 1, "probability")])
def test_occlusion_equals_a_direct_loop_of_occluded_forwards(patch, stride, score):
    model = tiny_cnn().double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    targets = [3, 0]
    occ = create_explainer("occlusion", model, input_size=(3, 9, 9), patch_size=patch, stride=stride, fill=-0.5,
                           chunk_size=7, score=score)
    got = occ.signed_maps(x, torch.tensor(targets))
    for i, t in enumerate(targets):
        expected = occlusion_reference(model, x[i], t, patch, stride, -0.5, score == "probability")
        np.testing.assert_allclose(got[i].numpy(), expected, rtol=1e-5, atol=1e-6)
    pad = patch // 2
    assert occ.positions(9, 9) == ((9 + 2 * pad - patch) // stride + 1) ** 2


@pytest.mark.parametrize("side, patch, stride", [(14, 5, 5), (9, 3, 2), (10, 4, 3), (12, 5, 1)])
def test_occlusion_positions_are_the_occluded_images_captum_runs(side, patch, stride):
    """Counted with a hook on the model: every image it sees but the clean one is an occluded position (captum
    clips a last window to the edge where the stride does not divide the side)."""
    model = tiny_cnn()
    occ = create_explainer("occlusion", model, input_size=(3, side, side), patch_size=patch, stride=stride,
                           chunk_size=1)
    x, target, seen = torch.randn(1, 3, side, side), torch.tensor([1]), []
    occ(x, target)  # the first call also learns the class count (one forward)
    handle = model.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    occ(x, target)
    handle.remove()
    assert occ.positions(side, side) == sum(seen) - 1


def test_occlusion_study_geometry_one_patch_per_pixel():
    occ = create_explainer("occlusion", tiny_cnn(), input_size=(3, 224, 224))
    assert (occ.patch_size, occ.stride, occ.positions(224, 224)) == (45, 1, 50_176)


def test_reductions_and_bad_arguments():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])
    expected = {"abs_sum": [[4.0, 2.5]], "sum": [[-2.0, -1.5]], "abs_max": [[3.0, 2.0]], "mean": [[-1.0, -0.75]]}
    for rule in REDUCTIONS:
        assert reduce_channels(a, rule)[0].tolist() == expected[rule]
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"Expected `reduction` to be one of .*'abs_sum'.*but got 'l2'"):
        create_explainer("guidedbackprop", model, reduction="l2")
    with pytest.raises(ValueError, match="Expected `stride` <= `patch_size`"):
        create_explainer("occlusion", model, patch_size=3, stride=4)
    with pytest.raises(ValueError, match="Expected `steps` to be a positive int, but got 0"):
        create_explainer("integratedgradients", model, steps=0)
    with pytest.raises(ValueError, match="Expected `method` to be one of"):
        create_explainer("integratedgradients", model, method="simpson")
    with pytest.raises(ValueError, match="Expected `n_samples` to be a positive int"):
        create_explainer("gradientshap", model, n_samples=0)
    with pytest.raises(ValueError, match="Expected `score` to be one of"):
        create_explainer("occlusion", model, score="softmax")
    ig = create_explainer("integratedgradients", model, input_size=(3, 8, 8), steps=2)
    with pytest.raises(ValueError, match=r"Expected `targets` in \[0, 3\], but got \[4\]"):
        ig(torch.randn(1, 3, 8, 8), torch.tensor([4]))


def test_attributions_run_in_the_predict_loop():
    import pytorch_lightning as pl

    from benchmark.runtime.module import ExplainerModule

    batches = [{"image": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(k)),
                "label": torch.tensor([0, 1]), "index": torch.tensor([2 * k, 2 * k + 1])} for k in range(2)]
    module = ExplainerModule(tiny_cnn(), {"guidedgradcam": {"target_layer": "3"},
                                          "occlusion": {"patch_size": 5, "stride": 4},
                                          "integratedgradients": {"steps": 4}, "gradientshap": {"n_samples": 2}},
                             input_size=(3, 16, 16), metrics=["complexity"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False)
    records = [r for batch in trainer.predict(module, DataLoader(batches, batch_size=None)) for r in batch]
    assert {r["method"] for r in records} == {"guidedgradcam", "occlusion", "integratedgradients", "gradientshap"}
    assert all(r["saliency"].shape == (16, 16) and r["target_layer"] for r in records)
    assert {r["method"]: r["n"] for r in module.results} == dict.fromkeys(
        ["guidedgradcam", "occlusion", "integratedgradients", "gradientshap"], 4)
