"""Pointing game, its top-k recall variant and the energy pointing game.

References: TorchRay's ``PointingGame.evaluate`` / ``class_accuracies`` (re-written here in
numpy: meshgrid acceptance region, strict ``< tolerance**2``, per-class hits / (hits + misses)),
VOC-style box masks by slicing, hand-computed distances (sqrt(221) = 14.87 px vs sqrt(229) =
15.13 px) and energies, and a per-pixel overlap test for the box discretisation.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from benchmark.metrics.base import MetricInputs
from benchmark.metrics.functional.pointing import (
    boxes_to_mask,
    energy_pointing_game,
    pointing_game,
    pointing_game_recall,
)
from benchmark.metrics.pointing import EnergyPointingGame, PointingGame, PointingGameRecall

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BOX = torch.tensor([[0.0, 0.0, 11.0, 15.0]])  # pixels: columns 0..10, rows 0..14


def peak_at(points, size: int = 32) -> torch.Tensor:
    """``(B, size, size)`` maps, 0 everywhere but 1 at each ``(row, col)``."""
    maps = torch.zeros(len(points), size, size)
    for i, (row, col) in enumerate(points):
        maps[i, row, col] = 1.0
    return maps


def reference_mask(boxes: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Pixel (i, j) is in a box when its unit square overlaps the box with positive length."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes.tolist():
        for i in range(height):
            for j in range(width):
                mask[i, j] |= (j + 1 > x1 and j < x2) and (i + 1 > y1 and i < y2)
    return mask


def torchray_hit(saliency: torch.Tensor, mask: np.ndarray, tolerance: float) -> float:
    """TorchRay ``PointingGame.evaluate`` in numpy, the point being the first argmax; NaN without object."""
    if not mask.any():
        return float("nan")
    row, col = np.unravel_index(np.argmax(saliency.numpy()), mask.shape)
    v, u = np.meshgrid((np.arange(mask.shape[0]) - row) ** 2, (np.arange(mask.shape[1]) - col) ** 2, indexing="ij")
    return float((mask & ((v + u) < tolerance ** 2)).any())


def torchray_accuracy(hits, classes) -> float:
    """TorchRay ``accuracy``: mean over the classes present of hits / (hits + misses)."""
    rates = [np.mean([h for h, c in zip(hits, classes) if c == k]) for k in sorted(set(classes))]
    return 100 * float(np.mean(rates))


def random_data(n: int = 15, size: int = 40, seed: int = 0):
    """Random maps with random ties, 1-3 integer boxes per sample (some empty), classes, difficult flags."""
    generator = torch.Generator().manual_seed(seed)
    maps = (torch.rand(n, size, size, generator=generator) * 8).round() / 8  # ties in the argmax
    boxes = []
    for count in torch.randint(0, 4, (n,), generator=generator).tolist():
        xy = torch.randint(0, size - 2, (count, 2), generator=generator)
        wh = torch.randint(1, size // 3, (count, 2), generator=generator)
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=size)], 1).float())
    classes = torch.randint(0, 4, (n,), generator=generator)
    difficult = torch.rand(n, generator=generator) < 0.4
    return maps, boxes, classes, difficult


# ----------------------------------------------------------------------------- pointing game
def test_distance_hand_cases():
    """From the nearest box pixel (14, 10): 14.87 px hits, 15.13 px misses, exactly 15 px misses."""
    maps = peak_at([(24, 21), (16, 25), (14, 25), (14, 24), (3, 3)])
    assert math.isclose(math.hypot(10, 11), 14.866, abs_tol=1e-3)
    assert math.isclose(math.hypot(2, 15), 15.133, abs_tol=1e-3)
    hits = pointing_game(maps, [BOX] * 5, reduction="none")
    assert hits.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert pointing_game(maps, [BOX] * 5).item() == 60.0


def test_box_discretisation():
    """A box covers columns floor(x1)..ceil(x2)-1: (2.5, 1.2, 4.0, 3.0) -> columns 2-3, rows 1-2."""
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:3, 2:4] = True
    box = torch.tensor([[2.5, 1.2, 4.0, 3.0]])
    np.testing.assert_array_equal(boxes_to_mask([box], 5, 6)[0].numpy(), expected)
    np.testing.assert_array_equal(reference_mask(box, 5, 6), expected)
    maps = peak_at([(1, 2), (0, 2), (2, 4)], size=6)[:, :5]
    assert pointing_game(maps, [box] * 3, tolerance=0.5, reduction="none").tolist() == [1.0, 0.0, 0.0]


def test_box_discretisation_random_boxes():
    """Reference: the per-pixel overlap test on random float boxes (clipped to the image)."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        xy = torch.rand(3, 2, generator=generator, dtype=torch.float64) * 14 - 2
        box = torch.cat([xy, xy + torch.rand(3, 2, generator=generator, dtype=torch.float64) * 8], 1)
        np.testing.assert_array_equal(boxes_to_mask([box], 11, 13)[0].numpy(),
                                      reference_mask(box.clamp(min=0), 11, 13))


def test_argmax_ties_first_in_raster_order():
    """Two equal maxima: the first in raster order, (0, 31), is the point -- far from the box."""
    maps = peak_at([(0, 31)])
    maps[0, 31, 0] = 1.0
    box = torch.tensor([[0.0, 28.0, 4.0, 32.0]])
    assert pointing_game(maps, [box]).item() == 0.0
    assert pointing_game(maps, [torch.tensor([[28.0, 0.0, 32.0, 4.0]])]).item() == 100.0
    nan_map = maps.clone()
    nan_map[0, 0, 0] = torch.nan  # NaN never wins the argmax
    assert pointing_game(nan_map, [torch.tensor([[30.0, 0.0, 32.0, 2.0]])]).item() == 100.0


def test_masks_equal_boxes():
    """(H, W) bool masks, as a list or one (B, H, W) tensor, give the boxes' result."""
    maps, boxes, _, _ = random_data()
    masks = torch.stack([torch.from_numpy(reference_mask(b, 40, 40)) for b in boxes])
    by_boxes = pointing_game(maps, boxes, reduction="none")
    torch.testing.assert_close(pointing_game(maps, masks, reduction="none"), by_boxes, equal_nan=True)
    torch.testing.assert_close(pointing_game(maps, list(masks), reduction="none"), by_boxes, equal_nan=True)


@pytest.mark.parametrize("tolerance", [15, 5, 2.5])
def test_pointing_matches_torchray(tolerance):
    """Reference: TorchRay's evaluate on VOC-style sliced masks, random maps with ties."""
    maps, boxes, _, _ = random_data(seed=2)
    expected = [torchray_hit(m, reference_mask(b, 40, 40), tolerance) for m, b in zip(maps, boxes)]
    ours = pointing_game(maps, boxes, tolerance, reduction="none")
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), equal_nan=True)
    if tolerance >= 5:  # both outcomes occur
        assert 0 < np.nansum(expected) < np.sum(~np.isnan(expected))


def test_no_object_nan_policy():
    """No object pixel: NaN, omitted (default) / a miss / propagated."""
    maps, boxes = peak_at([(1, 1), (1, 1)]), [BOX, torch.zeros(0, 4)]
    values = pointing_game(maps, boxes, reduction="none")
    assert values[0] == 1 and torch.isnan(values[1])
    assert pointing_game(maps, boxes).item() == 100.0
    assert pointing_game(maps, boxes, nan_policy="zero").item() == 50.0
    assert torch.isnan(pointing_game(maps, boxes, nan_policy="propagate"))


@pytest.mark.parametrize("device", DEVICES)
def test_device(device):
    """Runs on the maps' device."""
    maps, boxes, _, _ = random_data(seed=3)
    ours = pointing_game(maps.to(device), [b.to(device) for b in boxes], reduction="none")
    assert ours.device.type == device
    torch.testing.assert_close(ours.cpu(), pointing_game(maps, boxes, reduction="none"), equal_nan=True)
    energy = energy_pointing_game(maps.to(device), [b.to(device) for b in boxes], reduction="none")
    torch.testing.assert_close(energy.cpu(), energy_pointing_game(maps, boxes, reduction="none"), equal_nan=True)


# ----------------------------------------------------------------------------- energy
def test_energy_hand_case():
    """Inside the box 0.9 + 0.6 + 0.3 (+ 0 for NaN), total 3.0: 60 %; a zero map is undefined."""
    saliency = torch.tensor([[[0.9, 0.6, 0.2], [0.3, torch.nan, 0.5], [0.0, 0.5, 0.0]], [[0.0] * 3] * 3])
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    values = energy_pointing_game(saliency, [box, box], reduction="none")
    assert values[0].item() == pytest.approx(60.0) and torch.isnan(values[1])
    assert energy_pointing_game(saliency, [box, box], nan_policy="zero").item() == pytest.approx(30.0)


def test_energy_matches_reference():
    """Reference: numpy sums over the union of sliced boxes."""
    maps, boxes, _, _ = random_data(seed=4)
    expected = []
    for m, b in zip(maps.double().numpy(), boxes):
        mask = reference_mask(b, 40, 40)
        expected.append(100 * m[mask].sum() / m.sum() if mask.any() else float("nan"))
    torch.testing.assert_close(energy_pointing_game(maps, boxes, reduction="none"),
                               torch.tensor(expected, dtype=torch.float64), equal_nan=True)


# ----------------------------------------------------------------------------- classes
def test_class_mean_vs_overall_hand_case():
    """Class 0: 3 of 3 hits, class 1: 0 of 1: accuracy (mean over classes) 50 %, overall 75 %."""
    maps = peak_at([(1, 1), (1, 1), (1, 1), (30, 30)])
    metric = PointingGame()
    metric.update(maps, [BOX] * 4, classes=torch.tensor([0, 0, 0, 1]), difficult=torch.tensor([1, 0, 0, 1]).bool())
    result = metric.compute()
    assert result["accuracy"].item() == 50.0 and result["overall"].item() == 75.0
    assert result["accuracy"].item() == torchray_accuracy([1, 1, 1, 0], [0, 0, 0, 1])
    assert result["difficult_accuracy"].item() == 50.0  # class 0: 1/1, class 1: 0/1
    metric.reset()
    metric.update(maps, [BOX] * 4, classes=torch.tensor([0, 0, 0, 1]))
    assert torch.isnan(metric.compute()["difficult_accuracy"])


def test_pointing_class_in_shuffled_batches():
    """Class fed in 3 shuffled batches == functional on the whole set == TorchRay's per-class mean."""
    maps, boxes, classes, difficult = random_data(n=24, seed=5)
    hits = pointing_game(maps, boxes, reduction="none")
    defined = ~torch.isnan(hits)
    metric = PointingGame()
    for chunk in torch.randperm(24, generator=torch.Generator().manual_seed(0)).chunk(3):
        metric.update(maps[chunk], [boxes[i] for i in chunk], classes[chunk], difficult[chunk], indices=chunk)
    result = metric.compute()
    assert result["overall"].item() == pointing_game(maps, boxes).item()
    assert result["accuracy"].item() == pytest.approx(torchray_accuracy(hits[defined].tolist(),
                                                                        classes[defined].tolist()), abs=1e-12)
    hard = defined & difficult
    assert result["difficult_accuracy"].item() == pytest.approx(
        torchray_accuracy(hits[hard].tolist(), classes[hard].tolist()), abs=1e-12)
    assert metric.n_invalid.item() == int((~defined).sum()) > 0


def test_pointing_class_nan_policy_and_update_from():
    """``zero`` scores the undefined sample a miss, ``propagate`` gives NaN; update_from == update."""
    maps, boxes = peak_at([(1, 1), (1, 1)]), [BOX, torch.zeros(0, 4)]
    inputs = MetricInputs(images=torch.zeros(2, 3, 32, 32), targets=torch.tensor([0, 0]), indices=torch.arange(2),
                          saliency=maps, full_probs=torch.rand(2), probs=torch.rand(2, 3), target_boxes=boxes,
                          difficult=torch.tensor([False, True]))
    results = {}
    for policy in ("omit", "zero", "propagate"):
        metric = PointingGame(nan_policy=policy)
        metric.update_from(inputs)
        results[policy] = metric.compute()
    assert results["omit"]["accuracy"].item() == 100.0 and results["zero"]["accuracy"].item() == 50.0
    assert torch.isnan(results["omit"]["difficult_accuracy"]) and results["zero"]["difficult_accuracy"] == 0
    assert all(torch.isnan(v) for v in results["propagate"].values())
    masks = PointingGame()
    masks.update_from(MetricInputs(**{**inputs.__dict__, "target_boxes": None,
                                      "extra": {"target_masks": boxes_to_mask(boxes, 32, 32)}}))
    assert masks.compute()["accuracy"] == results["omit"]["accuracy"] and masks.n_clipped == 0


def reference_recall(maps, classes, boxes, box_labels, raw_max, tolerance=15, threshold=0.5, top_k=5):
    """Loop: per ground-truth class, recalled if among the non-rejected top-k and its map's point hits."""
    recalled = total = 0
    for i in range(len(maps)):
        for c in sorted(set(box_labels[i].tolist())):
            total += 1
            top = classes[i, :top_k].tolist()
            if c not in top:
                continue
            j = top.index(c)
            if raw_max is not None and raw_max[i, j] < threshold:
                continue
            recalled += torchray_hit(maps[i, j], reference_mask(boxes[i][box_labels[i] == c], 40, 40), tolerance)
    return 100 * recalled / total


def test_recall_matches_reference():
    """Reference: the loop above, with and without the raw maxima; fed in shuffled batches."""
    generator = torch.Generator().manual_seed(6)
    maps, boxes, _, _ = random_data(n=12, seed=6)
    boxes = [b if len(b) else torch.tensor([[0.0, 0.0, 40.0, 40.0]]) for b in boxes]
    topk_maps = torch.stack([maps.roll(k, 0) for k in range(6)], 1)
    classes = torch.stack([torch.randperm(8, generator=generator)[:6] for _ in range(12)])
    box_labels = [torch.randint(0, 8, (len(b),), generator=generator) for b in boxes]
    raw_max = torch.rand(12, 6, generator=generator)
    for raw in (None, raw_max):
        expected = reference_recall(topk_maps, classes, boxes, box_labels, raw)
        assert pointing_game_recall(topk_maps, classes, boxes, box_labels, raw).item() == pytest.approx(expected)
        metric = PointingGameRecall()
        for chunk in torch.randperm(12, generator=generator).chunk(3):
            metric.update(topk_maps[chunk], classes[chunk], [boxes[i] for i in chunk], [box_labels[i] for i in chunk],
                          None if raw is None else raw[chunk], indices=chunk)
        assert metric.compute().item() == pytest.approx(expected)
        assert metric.n_without_raw_max.item() == (12 if raw is None else 0)
    assert 0 < reference_recall(topk_maps, classes, boxes, box_labels, raw_max) < reference_recall(
        topk_maps, classes, boxes, box_labels, None)
    inputs = MetricInputs(images=torch.zeros(12, 3, 40, 40), targets=classes[:, 0], indices=torch.arange(12),
                          saliency=maps, full_probs=torch.rand(12), probs=torch.rand(12, 8), boxes=boxes,
                          box_labels=box_labels, topk_classes=classes, topk_saliency=topk_maps,
                          extra={"topk_raw_max": raw_max})
    metric = PointingGameRecall()
    metric.update_from(inputs)
    assert metric.compute().item() == pytest.approx(reference_recall(topk_maps, classes, boxes, box_labels, raw_max))


def test_energy_class_in_shuffled_batches():
    """Class in 3 shuffled batches == functional on the whole set; undefined samples counted."""
    maps, boxes, _, _ = random_data(n=18, seed=7)
    metric = EnergyPointingGame()
    for chunk in torch.randperm(18, generator=torch.Generator().manual_seed(1)).chunk(3):
        metric.update(maps[chunk], [boxes[i] for i in chunk], indices=chunk)
    assert metric.compute().item() == energy_pointing_game(maps, boxes).item()
    assert metric.n_invalid.item() == sum(len(b) == 0 for b in boxes) > 0
    inputs = MetricInputs(images=torch.zeros(18, 3, 40, 40), targets=torch.zeros(18, dtype=torch.long),
                          indices=torch.arange(18), saliency=maps, full_probs=torch.rand(18), probs=torch.rand(18, 2),
                          target_boxes=boxes)
    mapped = EnergyPointingGame()
    mapped.update_from(inputs)
    assert mapped.compute().item() == metric.compute().item()


def test_classes_clip_and_count_boxes():
    """A box reaching outside the image is clipped (same result as the clipped box) and counted."""
    maps = peak_at([(31, 31)])
    metric = PointingGame(tolerance=1)
    metric.update(maps, [torch.tensor([[31.0, 31.0, 40.0, 40.0]])], torch.tensor([0]))
    assert metric.compute()["overall"].item() == 100.0 and metric.n_clipped.item() == 1


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, message", [
    (lambda: pointing_game(torch.rand(32, 32), [BOX]), "(32, 32)"),
    (lambda: pointing_game(torch.rand(2, 32, 32), [BOX]), "list of 2"),
    (lambda: pointing_game(torch.rand(1, 32, 32), [torch.tensor([[5.0, 0.0, 2.0, 3.0]])]), "[[5.0, 0.0, 2.0, 3.0]]"),
    (lambda: pointing_game(torch.rand(1, 32, 32), [BOX], tolerance=0), "0"),
    (lambda: pointing_game(torch.rand(1, 32, 32), torch.ones(1, 16, 16, dtype=torch.bool)), "(1, 16, 16)"),
    (lambda: pointing_game(torch.rand(1, 32, 32), [torch.ones(16, 16, dtype=torch.bool)]), "(16, 16)"),
    (lambda: pointing_game(torch.rand(1, 32, 32), [BOX], reduction="sum"), "sum"),
    (lambda: energy_pointing_game(torch.rand(1, 32, 32) + 1, [BOX]), "values in [0, 1]"),
    (lambda: PointingGame().update(torch.rand(2, 32, 32), [BOX] * 2, torch.zeros(3)), "(3,)"),
    (lambda: PointingGame().update(torch.rand(2, 32, 32), [BOX] * 2, torch.zeros(2), torch.zeros(1)), "(1,)"),
    (lambda: pointing_game_recall(torch.rand(2, 3, 8, 8), torch.zeros(2, 3), [BOX] * 2, [torch.zeros(1)] * 2),
     "[1, 3]"),
    (lambda: pointing_game_recall(torch.rand(2, 5, 8, 8), torch.zeros(2, 4), [BOX] * 2, [torch.zeros(1)] * 2),
     "(2, 5)"),
    (lambda: pointing_game_recall(torch.rand(1, 5, 8, 8), torch.zeros(1, 5), [BOX], [torch.zeros(2)]),
     "box_labels[0]"),
    (lambda: pointing_game_recall(torch.rand(1, 5, 8, 8), torch.zeros(1, 5), [BOX], [torch.zeros(1)],
                                  raw_max=torch.zeros(5)), "(5,)"),
])
def test_bad_input(call, message):
    """torchmetrics-style ValueError / TypeError naming the offending value."""
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        call()
