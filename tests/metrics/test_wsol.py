"""MaxBoxAccV2 and PxAP (Choe et al., CVPR 2020; wsolevaluation).

References: hand-computed maps, a per-threshold re-implementation of MaxBoxAccV2 on
``scipy.ndimage.label`` (all components) + ``box_iou``, ``sklearn.metrics.average_precision_score``
(scikit-learn comes with the test extra through grad-cam), and wsolevaluation's ``MaskEvaluator``
histogram arithmetic transcribed in numpy.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from benchmark.metrics import MaxBoxAccV2, MetricInputs, PxAP, create_metric
from benchmark.metrics.functional import max_box_acc, max_box_acc_v2, pxap
from benchmark.metrics.functional.localization import box_iou

average_precision_score = pytest.importorskip("sklearn.metrics").average_precision_score

STRUCTURES = {4: ndimage.generate_binary_structure(2, 1), 8: np.ones((3, 3), dtype=bool)}
DELTAS = (0.3, 0.5, 0.7)
TWO_BLOBS = torch.tensor([[[1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
                           [1.0, 1.0, 1.0, 0.0, 0.8, 0.8],
                           [0.0, 0.0, 0.0, 0.0, 0.8, 0.8],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]])


def smooth_maps(batch: int, size: int = 24, grid: int = 5, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """CAM-like maps: random grids, bilinear upsampling, min-max to [0, 1]."""
    raw = torch.rand(batch, 1, grid, grid, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    up = F.interpolate(raw, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    low, high = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    return ((up - low) / (high - low)).to(dtype)


def random_boxes(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.randint(0, size - 1, (count, 2), generator=generator)
    wh = torch.randint(1, size, (count, 2), generator=generator)
    return torch.cat([xy, (xy + wh).clamp(max=size)], dim=1).double()


def reference_v2(saliency, boxes, thresholds, connectivity=4, deltas=DELTAS) -> torch.Tensor:
    """Per image and threshold: scipy labels of ``saliency > t * max`` (all components), each component's
    box, a hit when one of them has IoU >= delta with a box; ``(B, D, T)``, NaN without boxes / NaN map."""
    out = torch.full((len(saliency), len(deltas), len(thresholds)), torch.nan, dtype=torch.float64)
    for i, (s, gt) in enumerate(zip(saliency, boxes)):
        if len(gt) == 0 or torch.isnan(s).any():
            continue
        for k, t in enumerate(thresholds):
            mask = (s > torch.tensor(t, dtype=torch.float64).to(s.dtype) * s.max()).numpy()
            labels, n = ndimage.label(mask, structure=STRUCTURES[connectivity])
            found = [[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop] for sl in ndimage.find_objects(labels)]
            iou = box_iou(torch.tensor(found, dtype=torch.float64).reshape(-1, 4), gt)
            out[i, :, k] = torch.tensor([float((iou >= d).any()) for d in deltas])
    return out


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0))


# ----------------------------------------------------------------------------- MaxBoxAccV2
def test_v2_finds_the_small_blob_that_v1_misses():
    """By hand: at t = 0.5 the foreground holds a 2x3 blob (the largest) and a 2x2 blob on the object;
    V1's box (the largest) has IoU 0, V2's box of the small blob IoU 1; at t = 0.9 only the large one."""
    box = [torch.tensor([[4.0, 1.0, 6.0, 3.0]])]
    assert max_box_acc(TWO_BLOBS, box, thresholds=[0.5, 0.9]).item() == 0.0
    assert max_box_acc_v2(TWO_BLOBS, box, thresholds=[0.5, 0.9], reduction="none").tolist() == [[[1, 0]] * 3]
    assert max_box_acc_v2(TWO_BLOBS, box, thresholds=[0.5, 0.9]).item() == 100.0


def test_v2_iou_thresholds_by_hand():
    """The small blob's box (area 4) inside a 2x3 box: IoU 4/6 -> hit at 30 and 50 %, miss at 70 %."""
    box = [torch.tensor([[4.0, 1.0, 6.0, 4.0]])]
    assert max_box_acc_v2(TWO_BLOBS, box, thresholds=[0.5], reduction="none")[0, :, 0].tolist() == [1, 1, 0]
    assert max_box_acc_v2(TWO_BLOBS, box, thresholds=[0.5]).item() == pytest.approx(200 / 3)
    # a box exactly at 0.5: the 2x3 blob's box (area 6) inside a 3x4 box (area 12)
    half = [torch.tensor([[0.0, 0.0, 3.0, 4.0]])]
    assert max_box_acc_v2(TWO_BLOBS, half, thresholds=[0.9], reduction="none")[0, :, 0].tolist() == [1, 1, 0]


def test_v2_threshold_is_strict_and_components_are_4_or_8_connected():
    """Two diagonal pixels against the whole 2x2 image: a one-pixel box has IoU 1/4; 8-connected above 0.4 they
    are one component whose box is the image (IoU 1), at 0.5 the second pixel (= 0.5 * max) is background."""
    diagonal = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])
    whole = [torch.tensor([[0.0, 0.0, 2.0, 2.0]])]
    for connectivity, at_04 in ((4, [0, 0, 0]), (8, [1, 1, 1])):
        hits = max_box_acc_v2(diagonal, whole, thresholds=[0.5, 0.4], connectivity=connectivity, reduction="none")
        assert hits[0].T.tolist() == [[0, 0, 0], at_04]


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_v2_equals_scipy_per_threshold(connectivity, dtype):
    """All 100 default thresholds, 3 IoU thresholds, random smooth and noisy maps, 0-3 boxes per image."""
    generator = torch.Generator().manual_seed(3)
    maps = torch.cat([smooth_maps(10, size=20, grid=4, seed=1, dtype=dtype),
                      smooth_maps(6, size=20, grid=12, seed=2, dtype=dtype),
                      torch.rand(4, 20, 20, generator=generator, dtype=torch.float64).to(dtype)])
    maps[3] = torch.nan  # undefined
    maps[5] = 0.0  # all zero: scored, a miss
    boxes = [random_boxes(i % 4, 20, generator) for i in range(len(maps))]
    thresholds = (torch.arange(100, dtype=torch.float64) / 100).tolist()
    ours = max_box_acc_v2(maps, boxes, connectivity=connectivity, reduction="none")
    expected = reference_v2(maps, boxes, thresholds, connectivity)
    assert same(ours, expected)
    assert ours[4:].nansum() > 0 and torch.isnan(ours[3]).all() and not ours[5].nansum()


def test_v2_any_threshold_order_and_chunks(monkeypatch):
    """Unsorted and repeated thresholds come back in the caller's order; chunking changes nothing."""
    import benchmark.metrics.functional.wsol as wsol

    generator = torch.Generator().manual_seed(5)
    maps = smooth_maps(5, size=16, grid=6, seed=4)
    boxes = [random_boxes(2, 16, generator) for _ in range(5)]
    thresholds = [0.7, 0.1, 0.45, 0.1, 0.0, 1.0]
    ours = max_box_acc_v2(maps, boxes, thresholds, reduction="none")
    assert same(ours, reference_v2(maps, boxes, thresholds))
    monkeypatch.setattr(wsol, "_CHUNK_PIXELS", 16 * 16 * 2)
    assert same(max_box_acc_v2(maps, boxes, thresholds, reduction="none"), ours)


def test_v2_metric_accumulates_like_one_batch():
    """Two shuffled batches == one batch == the functional value; per-IoU extras; undefined counted."""
    generator = torch.Generator().manual_seed(6)
    maps = smooth_maps(12, size=16, grid=4, seed=7)
    boxes = [random_boxes(1 + i % 2, 16, generator) for i in range(12)]
    boxes[2] = torch.zeros(0, 4)
    one, two = MaxBoxAccV2(), MaxBoxAccV2()
    one.update(maps, boxes, indices=torch.arange(12))
    for part in torch.randperm(12, generator=generator).chunk(2):
        two.update(maps[part], [boxes[i] for i in part], indices=part)
    assert one.compute().item() == two.compute().item() == max_box_acc_v2(maps, boxes).item()
    per_iou = max_box_acc_v2(maps, boxes, reduction="none").nanmean(0).amax(-1) * 100
    assert [two.extra_values()[f"iou{d}"].item() for d in (30, 50, 70)] == per_iou.tolist()
    assert int(two.n_invalid) == 1 and two.summary(sync=False)["n"] == 12
    assert MaxBoxAccV2.in_default_run is False and "boxes" in MaxBoxAccV2.needs


# ----------------------------------------------------------------------------- PxAP
def test_pxap_by_hand():
    """Scores (1, .5 | .5, 0), mask the left column: t = 1: precision 1, recall 1/2; t = .5: precision 2/3,
    recall 1; t = 0: recall unchanged. AP = 1/2 * 1 + 1/2 * 2/3 = 5/6."""
    saliency = torch.tensor([[[1.0, 0.5], [0.5, 0.0]]])
    mask = torch.tensor([[[True, False], [True, False]]])
    assert pxap(saliency, mask).item() == pytest.approx(500 / 6)
    assert pxap(saliency * 0.5 + 0.25, mask).item() == pytest.approx(500 / 6)  # min-max normalised first


def test_pxap_pools_pixels_over_images():
    """Image A ranks its object pixel first, B its background pixel: pooled, t = 1 has precision 1/2 and
    recall 1/2, t = 0 precision 1/2 and recall 1 -> AP 1/2 (the mean of per-image APs would be 3/4)."""
    saliency = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    masks = torch.tensor([[[True, False]], [[False, True]]])
    assert pxap(saliency, masks).item() == 50.0
    assert pxap(saliency[:1], masks[:1]).item() == 100.0 and pxap(saliency[1:], masks[1:]).item() == 50.0


def _random_masks(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """Masks correlated with the maps (so AP is neither 0 nor 1), one image without mask pixels."""
    noise = torch.rand(maps.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    masks = (maps.double() + noise) > 1.1
    masks[2] = False
    return masks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pxap_equals_sklearn_on_grid_scores(dtype):
    """Scores on the 0.01 grid: the histogram thresholds are sklearn's distinct scores -> the same AP."""
    maps = (torch.rand(6, 17, 13, generator=torch.Generator().manual_seed(8)) * 100).floor().double() / 100
    maps[:, 0, 0], maps[:, 0, 1] = 0.0, 1.0  # min 0, max 1: the min-max normalisation changes nothing
    maps = maps.to(dtype)
    masks = _random_masks(maps, 9)
    keep = masks.flatten(1).any(dim=1)
    expected = average_precision_score(masks[keep].flatten().numpy(), maps[keep].flatten().double().numpy())
    assert abs(pxap(maps, masks).item() / 100 - expected) < 1e-6


def test_pxap_histogram_versus_sklearn_on_raw_scores():
    """Continuous scores: the histogram AP equals sklearn's AP of the scores floored to the grid (1e-6),
    and differs from the exact AP by no more than the precision spread inside each bin (the docstring's
    bound: bin b with p mask / n background pixels below c pixels, a of them mask)."""
    maps = smooth_maps(8, size=32, grid=6, seed=10, dtype=torch.float64)
    masks = _random_masks(maps, 11)
    keep = masks.flatten(1).any(dim=1)
    labels, scores = masks[keep].flatten().numpy(), maps[keep].flatten().numpy()
    ours = pxap(maps, masks).item() / 100
    assert abs(ours - average_precision_score(labels, np.floor(scores * 100) / 100)) < 1e-6
    counts = pxap(maps, masks, reduction="none")[keep].sum(dim=0)
    steps = (len(counts) - 2) // 2
    tp = torch.cat([counts[2:2 + steps], torch.zeros(1, dtype=torch.float64)])  # >= t, ascending, then none
    fp = torch.cat([counts[2 + steps:], torch.zeros(1, dtype=torch.float64)])
    p, n, a, c = tp[:-1] - tp[1:], fp[:-1] - fp[1:], tp[1:], tp[1:] + fp[1:]
    spread = torch.where(p > 0, (a + p) / (c + p).clamp(min=1) - (a + 1) / (c + 1 + n), 0.0)
    bound = (p / counts[0] * spread).sum().item()
    exact = average_precision_score(labels, scores)
    assert 0 < abs(ours - exact) <= bound + 1e-12 and bound < 0.05


def test_pxap_reproduces_wsolevaluation_mask_evaluator():
    """wsolevaluation's arithmetic: np.histogram over np.arange(0, 1, 0.01) + [1, 2, 3], reversed cumsums,
    ``(precision[1:] * diff(recall))[tp + fp != 0].sum()``."""
    maps = smooth_maps(5, size=20, grid=5, seed=12, dtype=torch.float64)
    masks = _random_masks(maps, 13)
    edges = np.append(np.arange(0, 1, 0.01), [1.0, 2.0, 3.0])
    true_hist, false_hist = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
    for s, m in zip(maps.numpy(), masks.numpy()):
        if m.any():
            true_hist += np.histogram(s[m], bins=edges)[0]
            false_hist += np.histogram(s[~m], bins=edges)[0]
    tp, fp = true_hist[::-1].cumsum(), false_hist[::-1].cumsum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = tp / (tp + fp), tp / true_hist.sum()
    expected = (precision[1:] * np.diff(recall))[((tp + fp) != 0)[1:]].sum() * 100
    assert pxap(maps, masks).item() == pytest.approx(expected, abs=1e-9)


def test_pxap_metric_accumulates_like_one_batch():
    maps = smooth_maps(9, size=12, grid=3, seed=14)
    masks = _random_masks(maps, 15)
    one, two = PxAP(), PxAP()
    one.update(maps, masks, indices=torch.arange(9))
    for part in (torch.tensor([7, 0, 3, 8]), torch.tensor([5, 1, 2, 6, 4])):
        two.update(maps[part], masks[part], indices=part)
    assert one.compute().item() == two.compute().item() == pxap(maps, masks).item()
    assert int(two.n_invalid) == 1 and PxAP.in_default_run is False and PxAP.needs == frozenset({"masks"})


def test_pxap_takes_the_target_class_masks_from_the_module_inputs():
    saliency = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])
    instances = [torch.tensor([[[True, False], [False, False]], [[False, False], [False, True]]])]
    inputs = MetricInputs(torch.zeros(1, 3, 2, 2), torch.tensor([4]), torch.tensor([0]), saliency, torch.ones(1),
                          torch.ones(1, 5), box_labels=[torch.tensor([4, 1])], extra={"masks": instances})
    metric = PxAP()
    metric.update_from(inputs)
    assert metric.compute().item() == pxap(saliency, instances[0][:1]).item()
    with pytest.raises(ValueError, match=r"needs the ground-truth `masks`.*synthetic"):
        PxAP().update_from(dataclasses.replace(inputs, extra={}))


def test_both_through_the_module_on_synthetic_shapes(tmp_path):
    """A real Trainer.predict on SyntheticShapes (boxes and instance masks): the module's values equal the
    functional ones on the kept maps with the target class's boxes and the union of its masks."""
    import pytorch_lightning as pl
    from torchvision.models import resnet18

    from benchmark.runtime.module import ExplainerModule, merge_records
    from datamodules import SyntheticShapes, SyntheticShapesDataModule

    torch.manual_seed(0)
    metrics = {"max_box_acc_v2": {"thresholds": [0.1, 0.3, 0.5, 0.7]}, "pxap": {}}
    module = ExplainerModule(resnet18(num_classes=4), ["gradcam", "center"], input_size=(3, 48, 48), metrics=metrics)
    data = SyntheticShapesDataModule(size=5, image_size=48, num_classes=4, batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    records = merge_records(trainer.predict(module, datamodule=data))
    samples = [SyntheticShapes(size=5, image_size=48, num_classes=4)[i] for i in range(5)]
    results = {(r["method"], r["metric"]): r for r in module.results}
    for method in ("gradcam", "center"):
        maps = torch.stack([r["saliency"] for r in records if r["method"] == method])
        v2 = max_box_acc_v2(maps, [s["boxes"] for s in samples], metrics["max_box_acc_v2"]["thresholds"])
        assert results[(method, "max_box_acc_v2")]["value"] == v2.item()
        masks = torch.stack([s["masks"].any(dim=0) for s in samples])
        assert results[(method, "pxap")]["value"] == pxap(maps, masks).item()
        assert results[(method, "pxap")]["n"] == 5 and results[(method, "max_box_acc_v2_iou50")]["n"] == 5


# ----------------------------------------------------------------------------- invalid maps, refusal
def test_nan_maps_are_invalid_and_all_zero_maps_are_scored():
    """The module's policy (tests/test_invalid_maps.py): a NaN map is undefined for every metric (a NaN row,
    ``n_invalid``, left out); a constant map -- all zero after normalisation -- is scored as the formula
    gives (no box: a miss; PxAP: all its pixels tie at score 0) and the leaderboard does not rank a method
    whose maps are constant on most images."""
    maps = smooth_maps(4, size=8, grid=3, seed=16)
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0]])] * 4
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:, :4, :4] = True
    bad = maps.clone()
    bad[1] = torch.nan
    bad[2, 3, 3] = torch.nan
    bad[3] = 0.0
    for metric, target, functional in ((MaxBoxAccV2(), boxes, max_box_acc_v2), (PxAP(), masks, pxap)):
        metric.update(bad, target, indices=torch.arange(4))
        assert int(metric.n_invalid) == 2
        assert torch.isnan(metric.values[-1][1:3]).all() and not torch.isnan(metric.values[-1][[0, 3]]).any()
        keep = [0, 3]
        kept = [target[i] for i in keep] if isinstance(target, list) else target[keep]
        assert metric.compute().item() == functional(bad[keep], kept).item()
    zero = max_box_acc_v2(torch.zeros(1, 8, 8), boxes[:1], reduction="none")
    assert zero.sum() == 0 and not torch.isnan(zero).any()
    assert pxap(torch.zeros(1, 8, 8), masks[:1], reduction="none")[0, 2:].tolist() == [16.0] + [0.0] * 100 + \
        [48.0] + [0.0] * 100


def test_pxap_without_masks_is_refused_before_any_model(tmp_path, capsys, monkeypatch):
    import benchmark.runner.run as run
    from benchmark.cli import console

    monkeypatch.setattr(run, "create_backbone", lambda *a, **k: pytest.fail("a model was built"))
    out = tmp_path / "random"
    args = ["run", "--data", "random", "--data_args", "{size: 4, num_classes: 10}", "--backbones", "[resnet18]",
            "--num_classes", "10", "--explainers", "[center]", "--metrics", "[complexity, pxap]", "--out", str(out)]
    assert console(args) == 2
    err = capsys.readouterr().err
    assert "Metrics ['pxap'] need masks, which the 'random' data do not provide; pass --metrics \"[complexity]\", " \
           "or use a datamodule with masks: synthetic, voc2007 with --data_args.segmentation true." in err
    assert not out.exists()


def test_registered_opt_in_with_leaderboard_columns():
    from benchmark.metrics import default_metrics
    from benchmark.report.leaderboard import COLUMNS

    assert {"max_box_acc_v2", "pxap"}.isdisjoint(default_metrics())
    assert type(create_metric("max_box_acc_v2", thresholds=[0.5])) is MaxBoxAccV2
    assert {c[0]: c[1:] for c in COLUMNS}["pxap"] == ("PxAP ↑", True, 2)
