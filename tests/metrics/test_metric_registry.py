"""Every registered metric through ExplainerModule's wiring (parametrized over the registry)."""
import math

import pytest
import torch
from torchvision.models import resnet18

from benchmark.metrics import create_metric, list_metrics
from benchmark.runtime.explainer_setup import topk_maps
from benchmark.runtime.module import ExplainerModule

KWARGS = {"deletion": {"steps": 8}, "insertion": {"steps": 8}, "max_box_acc": {"thresholds": [0.1, 0.5]},
          # budgets cut for speed: 64 occlusion positions instead of 4,096; a 2-image, 3-generation attack
          "occlusion_correlation": {"patch_size": 16, "stride": 8},
          "one_pixel_sensitivity": {"n_images": 2, "popsize": 10, "maxiter": 3},
          "road_morf": {"percentiles": [30, 70]}, "road_lerf": {"percentiles": [30, 70]},
          # 3 perturbations instead of 10 (16-px squares on the 64 x 64 images)
          "infidelity_square": {"n_perturb_samples": 3, "square_size": 16},
          "infidelity_gaussian": {"n_perturb_samples": 3}, "max_sensitivity": {"n_perturb_samples": 3},
          "mprt": {"layers": ["fc", "layer4"]}}  # 2 layer groups instead of ResNet-18's 10


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return resnet18(num_classes=6)


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(3, 3, 64, 64, generator=g), "label": torch.tensor([1, 4, 2]),
            "index": torch.tensor([seed * 3, seed * 3 + 1, seed * 3 + 2]),
            "boxes": [torch.tensor([[4.0, 8.0, 40.0, 50.0]]), torch.tensor([[0.0, 0.0, 64.0, 30.0], [10, 10, 20, 20]]),
                      torch.tensor([[30.0, 30.0, 60.0, 63.0]])],
            "box_labels": [torch.tensor([1]), torch.tensor([4, 0]), torch.tensor([2])],
            "masks": [torch.rand(n, 64, 64, generator=g) > 0.7 for n in (1, 2, 1)],  # one per box
            "difficult_item": torch.tensor([False, True, False])}


@pytest.mark.parametrize("name", list_metrics())
def test_metric_through_module(name, model):
    module = ExplainerModule(model, ["gradcam"], keep_maps=False, input_size=(3, 64, 64),
                             metrics={name: KWARGS.get(name, {})})
    for seed in range(2):
        module.predict_step(_batch(seed), seed)
    module.on_predict_epoch_end()
    rows = [r for r in module.results if r["method"] == "gradcam"]
    assert rows and all(r["n"] == 6 for r in rows)
    assert all(math.isfinite(r["value"]) or r["n_invalid"] > 0 or "difficult" in r["metric"] for r in rows)
    metric = create_metric(name, **KWARGS.get(name, {}))
    assert metric.higher_is_better in (True, False)


def test_recall_gets_relative_raw_maxima_from_the_module(model):
    module = ExplainerModule(model, ["gradcam"], keep_maps=False, input_size=(3, 64, 64),
                             metrics=["pointing_game_recall"])
    explainer = module.explainers["gradcam"]
    module.predict_step(_batch(0), 0)
    metric = module.metrics["gradcam/pointing_game_recall"]
    assert int(metric.n_without_raw_max) == 0
    # the module's top-k maps and raw maxima equal direct explainer calls for every top-k class
    batch = _batch(0)
    with torch.no_grad():
        classes = model(batch["image"]).softmax(1).topk(5).indices
    targets = batch["label"]
    maps = explainer(batch["image"], targets, indices=batch["index"])
    topk, raw = topk_maps(explainer, batch["image"], targets, batch["index"], maps,
                          explainer.last_raw_max.clone(), classes)
    for j in range(5):
        direct = explainer(batch["image"], classes[:, j], indices=batch["index"])
        assert torch.allclose(topk[:, j], direct, atol=1e-6)
        assert torch.allclose(raw[:, j], explainer.last_raw_max, rtol=1e-5)
