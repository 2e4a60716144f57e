"""Localization: connected components, boxes, IoU rules, MaxBoxAcc and the LocalizationError class.

References: ``scipy.ndimage.label`` (components and their numbering), ``torchvision.ops.box_iou``,
hand-computed maps and boxes, the ILSVRC size-aware rule by hand, and a loop re-implementation
of the Grad-CAM / wsolevaluation protocol on top of scipy + torchvision (not our code).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torchvision.ops import box_iou as tv_box_iou

from benchmark.metrics.base import MetricInputs
from benchmark.metrics.functional.localization import (
    box_iou,
    connected_components,
    localization_box,
    localization_hit,
    max_box_acc,
)
from benchmark.metrics.localization import LocalizationError, MaxBoxAcc

STRUCTURES = {4: ndimage.generate_binary_structure(2, 1), 8: np.ones((3, 3), dtype=bool)}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_box(saliency: torch.Tensor, threshold: float, connectivity: int = 4) -> list:
    """scipy: largest component of ``saliency > threshold * max`` (ties: lowest scipy label), xyxy or NaNs."""
    s = saliency.double().numpy()
    labels, n = ndimage.label(s > threshold * np.nanmax(s), structure=STRUCTURES[connectivity])
    if n == 0:
        return [float("nan")] * 4
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def reference_hit(pred: list, gt: torch.Tensor, iou_threshold: float = 0.5) -> float:
    """torchvision IoU >= threshold with any box; NaN box = miss; no box = NaN."""
    if len(gt) == 0:
        return float("nan")
    if np.isnan(pred).any():
        return 0.0
    return float((tv_box_iou(torch.tensor([pred], dtype=torch.float64), gt.double()) >= iou_threshold).any())


def smooth_maps(batch: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    """CAM-like maps: random 4x4 grids, bilinear upsampling, min-max to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.rand(batch, 1, 4, 4, generator=generator, dtype=torch.float64)
    up = F.interpolate(raw, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    low, high = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    return ((up - low) / (high - low)).float()


def jitter(boxes: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Move each coordinate by an integer in ``[-pixels, pixels]``, keeping ``x1 <= x2, y1 <= y2``."""
    moved = boxes + torch.randint(-pixels, pixels + 1, boxes.shape, generator=generator)
    return torch.cat([torch.minimum(moved[:, :2], moved[:, 2:]), torch.maximum(moved[:, :2], moved[:, 2:])], dim=1)


def random_boxes(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` integer xyxy boxes with width and height >= 1 inside a ``size`` image."""
    xy = torch.randint(0, size - 1, (count, 2), generator=generator)
    wh = torch.randint(1, size, (count, 2), generator=generator)
    return torch.cat([xy, (xy + wh).clamp(max=size)], dim=1).float()


# ----------------------------------------------------------------------------- components
@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("density", [0.0, 0.3, 0.5, 0.6, 0.8, 1.0])
@pytest.mark.parametrize("shape", [(3, 31, 23), (2, 1, 17), (2, 17, 1)])
def test_components_match_scipy(connectivity, density, shape):
    """Reference: scipy.ndimage.label, same partition and same numbering (raster order of first pixel)."""
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(int(density * 10))) < density
    ours = connected_components(mask, connectivity)
    for i in range(shape[0]):
        expected, _ = ndimage.label(mask[i].numpy(), structure=STRUCTURES[connectivity])
        np.testing.assert_array_equal(ours[i].numpy(), expected)


def test_components_spiral():
    """Reference: scipy on a one-pixel-wide spiral (the longest path a label must travel)."""
    mask = np.zeros((41, 41), dtype=bool)
    top, left, bottom, right = 0, 0, 40, 40
    while top <= bottom and left <= right:
        mask[top, left:right + 1] = mask[top:bottom + 1, right] = True
        mask[bottom, left:right + 1] = mask[top + 2:bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            mask[top, left - 1] = False
    expected, n = ndimage.label(mask, structure=STRUCTURES[4])
    np.testing.assert_array_equal(connected_components(torch.from_numpy(mask)[None])[0].numpy(), expected)


# ----------------------------------------------------------------------------- boxes
MAP = torch.tensor([[[0.0, 0.9, 0.8, 0.0],
                     [0.0, 0.7, 0.6, 0.0],
                     [0.0, 0.0, 0.0, 0.5],
                     [0.4, 0.0, 0.0, 0.5]]])


def test_box_hand_4x4():
    """By hand: the 2x2 block on columns 1-2, rows 0-1 is the largest 4-component; 8-connected it
    joins the column-3 pair through the corner (1, 2)-(2, 3)."""
    assert localization_box(MAP).tolist() == [[1.0, 0.0, 3.0, 2.0]]
    assert localization_box(MAP, connectivity=8).tolist() == [[1.0, 0.0, 4.0, 4.0]]
    assert localization_box(MAP, threshold=0.6).tolist() == [[1.0, 0.0, 3.0, 2.0]]  # 0.6*0.9 = 0.54
    assert localization_box(MAP, threshold=0.85).tolist() == [[1.0, 0.0, 3.0, 1.0]]  # > 0.765
    assert localization_box(MAP, threshold=0.95).tolist() == [[1.0, 0.0, 2.0, 1.0]]  # > 0.855


def test_box_threshold_is_strict():
    """cv2.THRESH_BINARY keeps ``value > thresh``: a pixel equal to 50 % of the max is background."""
    saliency = torch.tensor([[[1.0, 0.5, 0.5, 0.5], [0.0] * 4]])
    assert localization_box(saliency, threshold=0.5).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    assert localization_box(saliency, threshold=0.49).tolist() == [[0.0, 0.0, 4.0, 1.0]]


def test_box_ties_go_to_first_component_in_raster_order():
    """Two components of 2 pixels: the one whose first pixel comes first in raster order wins."""
    saliency = torch.zeros(1, 4, 4)
    saliency[0, 1, 0] = saliency[0, 2, 0] = 1.0  # first pixel index 4
    saliency[0, 0, 3] = saliency[0, 0, 2] = 1.0  # first pixel index 2
    assert localization_box(saliency).tolist() == [[2.0, 0.0, 4.0, 1.0]]


def test_box_undefined_maps():
    """All-zero, all-NaN and ``threshold = 1`` give NaN boxes; NaN pixels are background."""
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), torch.nan), MAP[0]])
    assert torch.isnan(localization_box(maps)[:2]).all()
    assert torch.isnan(localization_box(MAP, threshold=1.0)).all()
    holed = MAP.clone()
    holed[0, 0, 2] = torch.nan
    assert localization_box(holed).tolist() == [[1.0, 0.0, 3.0, 2.0]]


@pytest.mark.parametrize("connectivity", [4, 8])
def test_box_random_maps_match_scipy(connectivity):
    """Reference: scipy.ndimage.label + numpy box on CAM-like and on noisy maps."""
    maps = torch.cat([smooth_maps(6), torch.rand(6, 24, 24, generator=torch.Generator().manual_seed(3))])
    for threshold in (0.0, 0.15, 0.5, 0.8):
        ours = localization_box(maps, threshold, connectivity)
        expected = torch.tensor([reference_box(m, threshold, connectivity) for m in maps])
        torch.testing.assert_close(ours, expected, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_box_device_and_dtype(device):
    """The boxes come back on the maps' device; float64 maps give float64 boxes."""
    box = localization_box(MAP.double().to(device))
    assert box.device.type == device and box.dtype == torch.float64
    assert box.cpu().tolist() == [[1.0, 0.0, 3.0, 2.0]]


# ----------------------------------------------------------------------------- IoU and hits
def test_box_iou_matches_torchvision():
    """Reference: torchvision.ops.box_iou on random float boxes (incl. degenerate ones)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(40, 4, generator=generator, dtype=torch.float64) * 20
    b = torch.rand(30, 4, generator=generator, dtype=torch.float64) * 20
    a, b = torch.cat([a[:, :2], a[:, :2] + a[:, 2:] / 2], 1), torch.cat([b[:, :2], b[:, :2] + b[:, 2:] / 2], 1)
    b[0] = torch.tensor([1.0, 1.0, 1.0, 5.0])  # zero area
    torch.testing.assert_close(box_iou(a, b), tv_box_iou(a, b), rtol=0, atol=1e-12)


def test_hit_matches_torchvision_random():
    """Reference: ``torchvision.ops.box_iou(pred, gt).max() >= 0.5`` per sample."""
    generator = torch.Generator().manual_seed(1)
    gt = [random_boxes(int(n), 32, generator) for n in torch.randint(1, 4, (50,), generator=generator)]
    pred = jitter(torch.stack([g[0] for g in gt]), 4, generator)
    expected = torch.tensor([reference_hit(p.tolist(), g) for p, g in zip(pred, gt)], dtype=torch.float64)
    assert 5 < expected.sum() < 45
    torch.testing.assert_close(localization_hit(pred, gt, reduction="none"), expected)
    torch.testing.assert_close(localization_hit(pred, gt), expected.mean() * 100)


def test_size_aware_rule_by_hand():
    """ILSVRC detection rule: a 10x12 object needs IoU >= 120 / (20 * 22) = 0.2727 instead of 0.5."""
    gt = [torch.tensor([[0.0, 0.0, 10.0, 12.0]])] * 3
    pred = torch.tensor([[0.0, 0.0, 10.0, 40.0],   # IoU 120/400 = 0.30: size-aware hit, IoU miss
                         [0.0, 0.0, 10.0, 45.0],   # IoU 120/450 = 0.267: miss for both
                         [0.0, 0.0, 10.0, 24.0]])  # IoU 0.5: hit for both
    assert localization_hit(pred, gt, reduction="none").tolist() == [0.0, 0.0, 1.0]
    assert localization_hit(pred, gt, rule="size_aware", reduction="none").tolist() == [1.0, 0.0, 1.0]
    big = [torch.tensor([[0.0, 0.0, 100.0, 100.0]])]  # 10^4 / 110^2 = 0.83 > 0.5: the cap applies
    assert localization_hit(torch.tensor([[0.0, 0.0, 100.0, 210.0]]), big, rule="size_aware").item() == 0.0


def test_hit_undefined_and_nan_policy():
    """No ground-truth box: NaN, omitted / a miss / propagated; a NaN prediction is a miss."""
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [torch.nan] * 4])
    gt = [torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 2.0, 2.0]])]
    values = localization_hit(pred, gt, reduction="none")
    assert values[0] == 1 and torch.isnan(values[1]) and values[2] == 0
    assert localization_hit(pred, gt).item() == 50.0
    assert localization_hit(pred, gt, nan_policy="zero").item() == pytest.approx(100 / 3)
    assert torch.isnan(localization_hit(pred, gt, nan_policy="propagate"))


def test_hit_clips_boxes_to_the_image():
    """A ground-truth box reaching outside a 4x4 image is clipped before the IoU: 1/3 -> 1."""
    pred, gt = torch.tensor([[0.0, 0.0, 4.0, 4.0]]), [torch.tensor([[0.0, 0.0, 12.0, 4.0]])]
    assert localization_hit(pred, gt).item() == 0.0  # without the image size: clipped at 0 only
    assert localization_hit(pred, gt, image_size=(4, 4)).item() == 100.0
    assert localization_hit(pred, [torch.tensor([[-8.0, 0.0, 4.0, 4.0]])]).item() == 100.0


# ----------------------------------------------------------------------------- MaxBoxAcc
def reference_max_box_acc(maps: torch.Tensor, gt: list, thresholds) -> torch.Tensor:
    """Loop: scipy box at each threshold, torchvision IoU >= 0.5; ``(B, T)`` hits."""
    return torch.tensor([[reference_hit(reference_box(m, t), g) for t in thresholds] for m, g in zip(maps, gt)],
                        dtype=torch.float64)


def test_max_box_acc_matches_reference():
    """Reference: the loop above; MaxBoxAcc = 100 * max over thresholds of the column means."""
    maps = smooth_maps(8, seed=4)
    generator = torch.Generator().manual_seed(5)
    gt = [random_boxes(2, 24, generator) for _ in range(8)]
    thresholds = [0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.99]
    expected = reference_max_box_acc(maps, gt, thresholds)
    ours = max_box_acc(maps, gt, thresholds, reduction="none")
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(max_box_acc(maps, gt, thresholds), expected.mean(0).max() * 100)


def test_max_box_acc_default_sweep():
    """Default thresholds 0.00..0.99 (T = 100); a map equal to its box is found at every threshold."""
    saliency = torch.zeros(1, 16, 16)
    saliency[0, 3:9, 2:12] = 1.0
    hits = max_box_acc(saliency, [torch.tensor([[2.0, 3.0, 12.0, 9.0]])], reduction="none")
    assert hits.shape == (1, 100) and hits.sum() == 100


# ----------------------------------------------------------------------------- classes
def random_localization_data(n: int = 12, k: int = 5, size: int = 24, seed: int = 6):
    """Maps of the top-k classes, top-k classes (label in them or not), labels, boxes, box labels."""
    generator = torch.Generator().manual_seed(seed)
    maps = smooth_maps(n * k, size, seed).view(n, k, size, size)
    classes = torch.stack([torch.randperm(20, generator=generator)[:k] for _ in range(n)])
    labels = torch.where(torch.rand(n, generator=generator) < 0.8,
                         classes[torch.arange(n), torch.randint(0, k, (n,), generator=generator)], 19)
    position = (classes == labels[:, None]).int().argmax(1)
    boxes = [torch.cat([jitter(torch.tensor([reference_box(maps[i, position[i]], 0.15)]), 3, generator),
                        random_boxes(2, size, generator)]) for i in range(n)]
    box_labels = [torch.stack([labels[i], labels[i], (labels[i] + 1) % 20]) for i in range(n)]
    box_labels[0] = torch.tensor([30, 30, 30])  # no box of the label: undefined
    return maps, classes, labels, boxes, box_labels


def reference_localization_error(maps, classes, labels, boxes, box_labels, threshold=0.15):
    """Loop over the top-5 maps: Grad-CAM top-1 / top-5 correct per image (NaN without gt box)."""
    rows = []
    for i in range(len(labels)):
        gt = boxes[i][box_labels[i] == labels[i]]
        if len(gt) == 0:
            rows.append([float("nan")] * 2)
            continue
        correct = [classes[i, j] == labels[i] and reference_hit(reference_box(maps[i, j], threshold), gt) == 1
                   for j in range(5)]
        rows.append([float(correct[0]), float(any(correct))])
    return torch.tensor(rows, dtype=torch.float64)


def test_localization_error_hand_case():
    """Top-1 needs the right class first; top-5 only among the five; no box: left out and counted."""
    maps = torch.zeros(3, 5, 8, 8)
    maps[:, :, 2:6, 2:6] = 1.0
    maps[1, 0] = 0.0
    maps[1, 0, 0, 0] = 1.0  # class 3's map points elsewhere for image 1
    classes = torch.tensor([[3, 1, 2, 4, 5], [3, 1, 2, 4, 5], [1, 2, 4, 5, 3]])
    box = torch.tensor([[2.0, 2.0, 6.0, 6.0]])
    metric = LocalizationError()
    metric.update(maps, classes, torch.tensor([3, 3, 3]), [box] * 3, [torch.tensor([3])] * 3)
    metric.update(maps[:1], classes[:1], torch.tensor([3]), [box], [torch.tensor([7])], indices=torch.tensor([3]))
    result = metric.compute()
    assert result["top1"].item() == pytest.approx(100 * 2 / 3) and result["top5"].item() == pytest.approx(100 / 3)
    assert metric.n_invalid.item() == 1


def test_localization_error_class_in_shuffled_batches():
    """Class fed in 3 shuffled batches == the functional on the whole set == the loop reference."""
    maps, classes, labels, boxes, box_labels = random_localization_data()
    expected = reference_localization_error(maps, classes, labels, boxes, box_labels)
    metric = LocalizationError()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    for chunk in order.chunk(3):
        metric.update(maps[chunk], classes[chunk], labels[chunk], [boxes[i] for i in chunk],
                      [box_labels[i] for i in chunk], indices=chunk)
    result = metric.compute()
    torch.testing.assert_close(result["top1"], 100 * (1 - expected[:, 0].nanmean()))
    torch.testing.assert_close(result["top5"], 100 * (1 - expected[:, 1].nanmean()))
    assert 0 < result["top5"] < result["top1"] < 100 and metric.n_invalid.item() == 1
    # functional composition on the whole set, in index order
    position = (classes == labels[:, None]).int().argmax(1)
    pred = localization_box(maps[torch.arange(len(labels)), position])
    gt = [b[bl == lab] for b, bl, lab in zip(boxes, box_labels, labels)]
    hit = localization_hit(pred, gt, reduction="none", nan_policy="propagate")
    top1 = torch.where(torch.isnan(hit), torch.nan, ((position == 0) & (classes[:, 0] == labels) & (hit == 1)).double())
    assert result["top1"].item() == 100 * (1 - top1.nanmean().item())


def test_localization_error_update_from():
    """``update_from`` maps the module's inputs; ``needs`` asks for the top-k maps."""
    maps, classes, labels, boxes, box_labels = random_localization_data(n=4)
    inputs = MetricInputs(images=torch.zeros(4, 3, 24, 24), targets=labels, indices=torch.arange(4),
                          saliency=maps[:, 0], full_probs=torch.rand(4), probs=torch.rand(4, 20), labels=labels,
                          boxes=boxes, box_labels=box_labels, topk_classes=classes, topk_saliency=maps)
    direct, mapped = LocalizationError(), LocalizationError()
    direct.update(maps, classes, labels, boxes, box_labels, torch.arange(4))
    mapped.update_from(inputs)
    assert direct.compute() == mapped.compute() and LocalizationError.needs == frozenset({"topk", "boxes"})
    inputs.topk_saliency = None
    with pytest.raises(ValueError, match="topk_saliency"):
        mapped.update_from(inputs)


def test_max_box_acc_class_in_shuffled_batches():
    """Class fed in 3 shuffled batches == functional on the whole set; undefined samples counted."""
    maps = smooth_maps(10, seed=8)
    generator = torch.Generator().manual_seed(9)
    gt = [random_boxes(1, 24, generator) for _ in range(10)]
    gt[4] = torch.zeros(0, 4)
    thresholds = [0.1, 0.3, 0.5, 0.7]
    metric = MaxBoxAcc(thresholds=thresholds)
    for chunk in torch.randperm(10, generator=generator).chunk(3):
        metric.update(maps[chunk], [gt[i] for i in chunk], indices=chunk)
    assert metric.compute().item() == max_box_acc(maps, gt, thresholds).item()
    torch.testing.assert_close(metric.compute(), reference_max_box_acc(maps, gt, thresholds).nanmean(0).max() * 100)
    assert metric.n_invalid.item() == 1
    inputs = MetricInputs(images=torch.zeros(10, 3, 24, 24), targets=torch.zeros(10, dtype=torch.long),
                          indices=torch.arange(10), saliency=maps, full_probs=torch.rand(10),
                          probs=torch.rand(10, 3), target_boxes=gt)
    mapped = MaxBoxAcc(thresholds=thresholds)
    mapped.update_from(inputs)
    assert mapped.compute().item() == metric.compute().item()


def test_classes_count_clipped_boxes():
    """Boxes outside the image are clipped and counted in ``n_clipped``."""
    metric = MaxBoxAcc(thresholds=[0.5])
    metric.update(MAP, [torch.tensor([[1.0, 0.0, 3.0, 2.0], [-1.0, 0.0, 9.0, 2.0]])])
    assert metric.n_clipped.item() == 1 and metric.compute().item() == 100.0


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, message", [
    (lambda: connected_components(torch.ones(4, 4, dtype=torch.bool)), "(4, 4)"),
    (lambda: connected_components(torch.ones(1, 4, 4)), "torch.float32"),
    (lambda: connected_components(torch.ones(1, 4, 4, dtype=torch.bool), connectivity=6), "6"),
    (lambda: localization_box(torch.rand(4, 4)), "(4, 4)"),
    (lambda: localization_box(MAP * 2), "[0, 1.8]"),
    (lambda: localization_box(MAP, threshold=1.5), "1.5"),
    (lambda: localization_hit(torch.zeros(2, 3), [torch.zeros(1, 4)] * 2), "(2, 3)"),
    (lambda: localization_hit(torch.zeros(2, 4), [torch.zeros(1, 4)]), "list of 2"),
    (lambda: localization_hit(torch.tensor([[3.0, 0.0, 1.0, 2.0]]), [torch.zeros(1, 4)]), "[[3.0, 0.0, 1.0, 2.0]]"),
    (lambda: localization_hit(torch.zeros(1, 4), [torch.tensor([[0.0, 5.0, 2.0, 1.0]])]), "[[0.0, 5.0, 2.0, 1.0]]"),
    (lambda: localization_hit(torch.zeros(1, 4), [torch.zeros(1, 4)], rule="giou"), "giou"),
    (lambda: max_box_acc(MAP, [torch.zeros(1, 4)], thresholds=[0.5, 1.2]), "1.2"),
    (lambda: max_box_acc(MAP, [torch.zeros(1, 3)]), "(1, 3)"),
    (lambda: LocalizationError(top_k=(0, 5)), "(0, 5)"),
    (lambda: LocalizationError().update(torch.rand(2, 3, 4, 4), torch.zeros(2, 3), torch.zeros(2), [], []), "K >= 5"),
    (lambda: LocalizationError().update(torch.rand(2, 5, 4, 4), torch.zeros(2, 5), torch.zeros(3),
                                        [torch.zeros(0, 4)] * 2, [torch.zeros(0)] * 2), "batch size"),
    (lambda: LocalizationError().update(torch.rand(1, 5, 4, 4), torch.zeros(1, 5), torch.zeros(1),
                                        [torch.zeros(2, 4)], [torch.zeros(1)]), "box_labels[0]"),
])
def test_bad_input(call, message):
    """torchmetrics-style ValueError / TypeError naming the offending value."""
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        call()
