"""Pass accounting: the counts of a tiny run pinned by hand, and the minimum of the pass model."""
import pytest
import torch
from torchvision.models import resnet18

from benchmark import passes
from benchmark.metrics import create_metric, list_metrics
from benchmark.metrics.base import passes_unmodelled
from benchmark.metrics.registry import unmodelled_metrics
from benchmark.passes import PASS_COLUMNS
from benchmark.report.passes_report import backbone_passes, passes_text
from benchmark.runtime.module import ExplainerModule
from callbacks.per_sample_writer import records_to_frame

METRICS = {"average_drop": {}, "average_increase": {}, "coherency": {}, "complexity": {},
           "deletion": {"steps": 4}, "insertion": {"steps": 4}, "localization_error": {"top_k": [1, 2]}}


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    model = resnet18(num_classes=4).eval()
    module = ExplainerModule(model, {"gradcam": {}, "eigencam": {}, "scorecam": {"chunk_size": 16}},
                             target="prediction", input_size=(3, 64, 64), metrics=METRICS, top_k=2,
                             keep_maps=False)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0]] * 4)] * 2  # one box of every class, for the top-k maps
    batch = {"image": images, "label": torch.tensor([0, 1]), "index": torch.tensor([0, 1]), "boxes": boxes,
             "box_labels": [torch.arange(4)] * 2}
    records = module.predict_step(batch, 0)
    return model, images, {r["method"]: r["passes"] for r in records}, records


def test_gradient_cam_counts_by_hand(run):
    """Grad-CAM on 2 images, top-2 maps of the predicted class: per image one forward + backward for the map, one for
    the other top-2 class, and in the metrics ``CAM(x * CAM)`` (1 + 1 backward; its forward gives the probability of
    ``x * CAM`` for Average Drop / Increase) and the 3 inner points of two 4-step curves (6 forwards). The curves'
    endpoints are the batch's, shared by every method: ``p(x)`` (1), the blurred image (1) and the all-zero image
    (1 for the batch of 2), beside the batch's own forward (1)."""
    _, _, spent, _ = run
    assert spent["gradcam"]["passes_explainer"] == 2.0
    assert spent["gradcam"]["passes_topk"] == 2.0
    assert spent["gradcam"]["passes_metric"] == 2 + 6
    assert all(s["passes_batch"] == 1 + 1 + 1 + 0.5 for s in spent.values())
    assert spent["gradcam"]["passes_backward"] == 3.0
    # minimum: the map (2), the other class's map (2), CAM(x * CAM) whose forward gives the drop's probability (2),
    # 3 + 3 curve points (p(x) and the fully deleted / inserted image are known) and the blurred image shared by the
    # 3 methods (1/3)
    assert spent["gradcam"]["passes_minimum"] == pytest.approx(2 + 2 + 2 + 3 + 3 + 1 / 3)


def test_class_independent_methods_reuse_their_map_for_the_top_k(run):
    """Eigen-CAM's map does not depend on the class: the other top-2 class gets the same map, with no pass; the
    metrics' passes are ``CAM(x * CAM)`` (1 forward, which gives the probability too) and the curves' inner points
    (6)."""
    _, _, spent, _ = run
    eigen = spent["eigencam"]
    assert (eigen["passes_explainer"], eigen["passes_topk"], eigen["passes_backward"]) == (1.0, 0.0, 0.0)
    assert eigen["passes_metric"] == 1 + 6
    assert eigen["passes_minimum"] == pytest.approx(1 + 1 + 3 + 3 + 1 / 3)


def test_score_cam_counts_its_masked_forwards(run):
    """Score-CAM: one hooked forward, then one masked forward per non-constant channel of layer4 (counted here from
    the activations) on the inference copy; they score both top-2 classes (:meth:`BaseExplainer.class_maps`)."""
    model, images, spent, _ = run
    kept = []
    handle = model.layer4.register_forward_hook(lambda m, a, out: kept.append(out.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    flat = kept[0].flatten(2)
    live = (flat.amax(dim=2) > flat.amin(dim=2)).sum().item()
    assert spent["scorecam"]["passes_explainer"] == 1 + live / 2  # the other top-2 class's map from the same ones
    assert spent["scorecam"]["passes_topk"] == spent["scorecam"]["passes_backward"] == 0.0


def test_counter_phases_copies_and_the_report(run):
    _, _, spent, records = run
    model = resnet18(num_classes=3).eval()
    with passes.counting(model) as counter:
        copy = __import__("copy").deepcopy(model)  # carries the hooks, which count only the model itself
        with passes.phase("metric"):
            copy(torch.randn(3, 3, 32, 32))
            model(torch.randn(3, 3, 32, 32))
    assert dict(counter.counts) == {"metric/forward": 3}
    frame = records_to_frame(records, "random", "resnet18")
    assert all(c in frame.columns for c in PASS_COLUMNS)
    summary = backbone_passes(frame)["resnet18"]
    actual = 3.5 + sum(s["passes_explainer"] + s["passes_topk"] + s["passes_metric"] for s in spent.values())
    assert summary["actual"] == pytest.approx(actual, abs=1e-3)
    minimum = 1 + sum(s["passes_minimum"] for s in spent.values())
    assert summary["minimum"] == pytest.approx(minimum, abs=1e-3)
    # each method's blurred-image share (1/3) moved to the batch; there, beyond the minimum, p(x) on the curves' copy
    # (1) and the all-zero image (0.5); and Score-CAM's CAM(x * CAM) forwards the live channels of x * CAM, not of x
    for name in ("gradcam", "eigencam"):
        own = spent[name]
        assert own["passes_explainer"] + own["passes_topk"] + own["passes_metric"] - own["passes_minimum"] == \
            pytest.approx(-1 / 3)
    assert passes_text({"resnet18": summary}).startswith(f"resnet18: {actual:.1f} actual")
    assert passes_text({}) == "not recorded"


def test_metrics_the_model_cannot_count_are_named_in_the_summary_and_the_header():
    """Fidelity runs the model in its own way: its measured passes are the minimum, and the header says so rather
    than printing a minimum that looks modelled."""
    torch.manual_seed(0)
    module = ExplainerModule(resnet18(num_classes=4).eval(), {"gradcam": {}}, target="prediction",
                             input_size=(3, 32, 32), metrics={"complexity": {}, "fidelity": {"percents": [10, 50]}},
                             keep_maps=False)
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 1]), "index": torch.tensor([0, 1])}
    records = module.predict_step(batch, 0)
    own = records[0]["passes"]
    assert own["passes_metric"] == 2.0  # one masked forward per percentage
    assert own["passes_minimum"] == own["passes_explainer"] + own["passes_metric"]  # taken as measured
    summary = backbone_passes(records_to_frame(records, "random", "resnet18"))["resnet18"]
    assert summary["unmodelled"] == ["fidelity"]
    assert passes_text({"resnet18": summary}).endswith(
        "the minimum takes the passes of fidelity as measured: it does not model that metric)")


@pytest.mark.parametrize("name", list_metrics())
def test_one_rule_says_which_metrics_the_pass_model_counts(name):
    """The run's summary (by name, from the classes) and the per-batch minimum (from the instances) use one rule:
    a metric is modelled exactly when it gives its passes, and one that needs only the maps costs none."""
    metric = create_metric(name)
    assert unmodelled_metrics([name]) == ([name] if passes_unmodelled(metric) else [])
    if metric.passes_modelled:
        assert metric.modelled_passes((32, 32), 4) > 0
    else:
        with pytest.raises(NotImplementedError, match="does not model its passes"):
            metric.modelled_passes((32, 32), 4)


def test_rise_gives_the_top_k_maps_from_its_own_masked_forwards():
    """RISE's masked forwards score every class: the other top-k classes' maps cost no pass."""
    torch.manual_seed(0)
    module = ExplainerModule(resnet18(num_classes=4).eval(), {"rise": {"n_masks": 8, "chunk_size": 8}},
                             target="prediction", input_size=(3, 32, 32),
                             metrics={"localization_error": {"top_k": [1, 2]}}, top_k=2, keep_maps=False)
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 20.0]] * 4)] * 2
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 1]), "index": torch.tensor([0, 1]),
             "boxes": boxes, "box_labels": [torch.arange(4)] * 2}
    own = module.predict_step(batch, 0)[0]["passes"]
    assert own["passes_explainer"] == 1 + 8  # the class check, then one masked forward per mask
    assert own["passes_topk"] == 0.0 and own["passes_metric"] == 0.0
    assert own["passes_minimum"] == own["passes_explainer"]


def test_the_minimum_is_the_correctly_rounded_sum_in_any_metric_order():
    from fractions import Fraction

    from benchmark.runtime.pass_model import minimum_passes

    class Free:  # a class-independent map (center, random, Fake-CAM): no top-k call
        class_independent, scores_every_class = True, False

    metrics = {"deletion": create_metric("deletion", steps=16), "insertion": create_metric("insertion", steps=16),
               "average_drop": create_metric("average_drop")}
    measured = {"metric/forward": 31.0}
    first, _ = minimum_passes(Free(), metrics, measured, (128, 128), 14)
    second, _ = minimum_passes(Free(), dict(reversed(metrics.items())), measured, (128, 128), 14)
    # 15 inner points each, insertion's 1/14 share of the blurred image (15 + 1/14 in float), the drop's forward of
    # x * CAM: their exact sum, rounded once
    exact = Fraction(15) + Fraction(15 + 1 / 14) + Fraction(1)
    assert first == second == float(exact) == 31.07142857142857
