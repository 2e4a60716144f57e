"""Undefined samples (a map that is not finite, marked by ``ExplainerModule.invalidate_last``) are left out of
every result alike, against hand computations; a finite constant map keeps Coherency's convention (scored 0).

The registry-wide test drives every registered metric through the module and checks that marking one sample
undefined gives, under ``nan_policy="omit"``, exactly the results of the dataset without that sample.
"""
import math

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from benchmark.metrics import ADCC, Coherency, FGSMRobustness, PointingGameRecall, create_metric, list_metrics
from benchmark.runtime.module import ExplainerModule
from tests.metrics.test_metric_registry import KWARGS, _batch

MAP = torch.tensor([[0.0, 1.0], [0.5, 1.0]], dtype=torch.float64)  # complexity 62.5 %
Y, O_ = 0.8, 0.6  # drop (0.8 - 0.6) / 0.8 = 25 %


def _hand_adcc(drop, coh, comp):
    """Poppi Eq. 5 on % values, by hand (0 when a term is 0)."""
    terms = [coh / 100, 1 - comp / 100, 1 - drop / 100]
    return 0.0 if min(terms) == 0 else 300 / sum(1 / t for t in terms)


def _adcc(full, expl, maps, expl_maps, **kwargs):
    metric = ADCC(**kwargs)
    metric.update(torch.tensor(full, dtype=torch.float64), torch.tensor(expl, dtype=torch.float64), maps, expl_maps,
                  torch.arange(len(full)))
    return metric


def test_adcc_leaves_a_not_finite_sample_out_of_every_part():
    # the audit's case: two identical samples, the second marked not finite by the module
    metric = _adcc([Y, Y], [O_, O_], torch.stack([MAP, MAP]), torch.stack([MAP, MAP]))
    metric.invalidate_last(torch.tensor([False, True]))
    summary = metric.summary()
    assert summary[""] == pytest.approx(_hand_adcc(25, 100, 62.5)) == pytest.approx(60.0)
    assert summary["per_image"] == pytest.approx(60.0)
    assert (summary["average_drop"], summary["coherency"], summary["complexity"]) == pytest.approx((25, 100, 62.5))
    assert (summary["n"], summary["n_invalid"]) == (2, 1)
    propagated = _adcc([Y, Y], [O_, O_], torch.stack([MAP, MAP]), torch.stack([MAP, MAP]), nan_policy="propagate")
    propagated.invalidate_last(torch.tensor([False, True]))
    assert all(math.isnan(v) for k, v in propagated.summary().items() if not k.startswith("n"))


def test_adcc_without_the_module_treats_a_nan_map_of_x_times_cam_as_undefined():
    nan_map = torch.full((2, 2), float("nan"), dtype=torch.float64)
    metric = _adcc([Y, Y], [O_, O_], torch.stack([MAP, MAP]), torch.stack([MAP, nan_map]))
    assert metric.summary()[""] == pytest.approx(60.0) and metric.summary()["n_invalid"] == 1


def test_adcc_headline_and_per_image_use_the_same_samples():
    # sample 1 has Y = 0 (drop undefined): left out of all three means, not only of the drop's
    other = torch.tensor([[0.0, 0.25], [0.5, 0.5]], dtype=torch.float64)  # complexity 31.25 %
    metric = _adcc([Y, 0.0], [O_, 0.3], torch.stack([MAP, other]), torch.stack([MAP, other]))
    summary = metric.summary()
    assert summary[""] == pytest.approx(60.0) and summary["per_image"] == pytest.approx(60.0)
    assert summary["complexity"] == pytest.approx(62.5)


def test_adcc_constant_map_keeps_the_authors_zero():
    constant = torch.full((2, 2), 0.5, dtype=torch.float64)  # complexity 50 %, Pearson undefined
    maps = torch.stack([MAP, constant])
    summary = _adcc([Y, Y], [O_, O_], maps, maps).summary()
    # means: drop 25, coherency (100 + 0) / 2 = 50, complexity (62.5 + 50) / 2 = 56.25
    assert summary[""] == pytest.approx(_hand_adcc(25, 50, 56.25))
    assert summary["per_image"] == pytest.approx((60.0 + 0.0) / 2)  # a 0 term makes the image's ADCC 0
    assert summary["n_invalid"] == 1
    assert _adcc([Y, Y], [O_, O_], maps, maps, coherency_nan_policy="omit").summary()[""] == pytest.approx(60.0)
    assert math.isnan(_adcc([Y, Y], [O_, O_], maps, maps, coherency_nan_policy="propagate").summary()[""])


@pytest.mark.parametrize("nan_policy, expected", [("zero", 50.0), ("omit", 100.0), ("propagate", float("nan"))])
def test_coherency_tells_a_constant_map_from_an_undefined_sample(nan_policy, expected):
    maps = torch.stack([MAP, torch.full((2, 2), 0.5, dtype=torch.float64), MAP])
    metric = Coherency(nan_policy=nan_policy)
    metric.update(maps, maps, torch.arange(3))
    metric.invalidate_last(torch.tensor([False, False, True]))
    summary = metric.summary()
    assert summary[""] == pytest.approx(expected, nan_ok=True)  # zero: (100 + 0) / 2, the third left out
    assert (summary["n"], summary["n_invalid"]) == (3, 2)


def test_coherency_refuses_ambiguous_rows_of_old_per_sample_files():
    old_rows = torch.tensor([100.0, float("nan")], dtype=torch.float64)
    with pytest.raises(ValueError, match="cannot be told"):
        Coherency().results_from(old_rows)
    assert Coherency(nan_policy="omit").results_from(old_rows)[""].item() == 100.0


def _recall(nan_policy="omit"):
    maps = torch.zeros(3, 2, 8, 8)
    maps[:, 0, 1, 1] = maps[:, 1, 6, 6] = 1.0
    near, far = torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([5.0, 5.0, 8.0, 8.0])
    # image 0: class 3 hit, class 7's box away from its argmax -> 1 of 2; images 1, 2: 2 of 2
    boxes = [torch.stack([near, near]), torch.stack([near, far]), torch.stack([near, far])]
    metric = PointingGameRecall(tolerance=1, top_k=2, nan_policy=nan_policy)
    metric.update(maps, torch.tensor([[3, 7]] * 3), boxes, [torch.tensor([3, 7])] * 3, indices=torch.arange(3))
    metric.invalidate_last(torch.tensor([False, False, True]))
    return metric.summary()


def test_pointing_game_recall_leaves_an_undefined_image_out():
    assert _recall()[""] == pytest.approx(100 * 3 / 4)  # (1 + 2) recalled of (2 + 2) classes
    assert math.isnan(_recall("propagate")[""])
    with pytest.raises(ValueError, match="'zero'"):
        PointingGameRecall(nan_policy="zero")


def test_fgsm_flip_rate_leaves_an_undefined_sample_out():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # logit_0 = sum(x), logit_1 = 0
    model[1].weight.data.copy_(torch.tensor([[1.0] * 4, [0.0] * 4]))
    model[1].bias.data.zero_()

    def explain(images, classes, indices=None):  # min-max of the image: x' = x - 0.25 gives the same map
        x = images[:, 0]
        low, high = x.amin((1, 2), keepdim=True), x.amax((1, 2), keepdim=True)
        return (x - low) / (high - low)

    flips, stays = torch.tensor([[0.0, 0.1], [0.2, 0.3]]), torch.tensor([[0.5, 0.6], [0.7, 0.8]])
    images = torch.stack([flips, stays, flips])[:, None]  # sums 0.6 -> -0.4 (flips), 2.6 -> 1.6, 0.6 -> -0.4
    metric = FGSMRobustness(epsilon=0.25, std=1.0)
    metric.update(model, images, explain(images, None), torch.zeros(3, dtype=torch.long), explain, torch.arange(3))
    metric.invalidate_last(torch.tensor([False, False, True]))
    summary = metric.summary()
    assert summary["flip_rate"] == pytest.approx(50.0) and summary[""] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return resnet18(num_classes=6)


def _same(a, b):
    return a == pytest.approx(b, rel=1e-12, abs=1e-12) or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("name", list_metrics())
def test_an_undefined_sample_is_as_if_absent(name, model):
    module = ExplainerModule(model, ["gradcam"], keep_maps=False, input_size=(3, 64, 64),
                             metrics={name: KWARGS.get(name, {})})
    module.predict_step(_batch(0), 0)
    indices, rows = module.metrics[f"gradcam/{name}"].sorted_values()
    defined = ~torch.isnan(rows.reshape(len(rows), -1)).any(dim=1)
    drop = int(defined.nonzero()[-1]) if defined.any() else len(rows) - 1  # a defined sample, when there is one
    marked, absent = create_metric(name, **KWARGS.get(name, {})), create_metric(name, **KWARGS.get(name, {}))
    marked.store(rows, indices)
    marked.invalidate_last(torch.arange(len(rows)) == drop)
    keep = torch.arange(len(rows)) != drop
    absent.store(rows[keep], indices[keep])
    got, want = marked.summary(sync=False), absent.summary(sync=False)
    assert got["n"] == want["n"] + 1 and got["n_invalid"] == want["n_invalid"] + 1
    assert set(got) == set(want)
    assert all(_same(got[key], want[key]) for key in want if key not in ("n", "n_invalid")), (got, want)


def test_a_compute_before_the_marking_is_not_served_from_the_cache():
    """torchmetrics caches compute(); invalidate_last changes the stored rows, so the next compute() must see it."""
    metric = create_metric("complexity")
    metric.update(MAP.expand(2, 2, 2).clone(), torch.tensor([0, 1]))
    assert metric.compute().item() == pytest.approx(62.5)
    metric.invalidate_last(torch.tensor([False, True]))
    assert metric.compute().item() == pytest.approx(62.5) and int(metric.n_invalid) == 1
    metric.update(torch.zeros(1, 2, 2, dtype=torch.float64), torch.tensor([2]))
    metric.compute()
    metric.invalidate_last(torch.tensor([True]))  # left out: the mean is the first sample's again
    assert metric.compute().item() == pytest.approx(62.5) and int(metric.n_invalid) == 2
