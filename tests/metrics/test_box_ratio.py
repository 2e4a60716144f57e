"""Box ratio (Nagy et al., Table 5): hand-counted pixels, undefined samples, batching, bad arguments."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.metrics import BoxRatio, create_metric
from benchmark.metrics.base import MetricInputs
from benchmark.metrics.functional import box_ratio

# 4 x 4 map; hot (> 0.85) pixels marked *:
#   0.90* 0.10  0.95* 0.00
#   0.86* 0.85  0.20  0.00
#   0.00  0.00  1.00* 0.00
#   0.99* 0.00  0.00  0.00
MAP = torch.tensor([[0.90, 0.10, 0.95, 0.00],
                    [0.86, 0.85, 0.20, 0.00],
                    [0.00, 0.00, 1.00, 0.00],
                    [0.99, 0.00, 0.00, 0.00]])


def test_hand_counted_4x4():
    # box (0.5, 0, 1.2, 2.0) covers columns floor(0.5)=0 .. ceil(1.2)-1=1 and rows 0..1: the top-left 2 x 2
    box = torch.tensor([[0.5, 0.0, 1.2, 2.0]])
    # 5 hot pixels; inside the 2 x 2: (0,0)=0.90 and (1,0)=0.86 -> 2 of 5; 0.85 itself is not hot (strict)
    assert box_ratio(MAP[None], [box], reduction="none").tolist() == [40.0]
    # a second box over the right half (columns 2..3, all rows) adds (0,2) and (2,2): 4 of 5
    two = torch.tensor([[0.5, 0.0, 1.2, 2.0], [2.0, 0.0, 4.0, 4.0]])
    assert box_ratio(MAP[None], [two], reduction="none").tolist() == [80.0]
    # threshold 0.96: only (2,2)=1.00 and (3,0)=0.99 are hot; the right-half box holds one of them
    assert box_ratio(MAP[None], [two[1:]], threshold=0.96).item() == 50.0
    # threshold 0: every positive pixel (8 of them); in the top-left 2 x 2: 0.90, 0.10, 0.86, 0.85
    assert box_ratio(MAP[None], [box], threshold=0.0).item() == 50.0


def test_matches_a_numpy_reference_on_random_maps():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 9, 7, generator=g)
    boxes = [torch.tensor([[1.0, 2.0, 5.0, 8.0]]), torch.tensor([[0.0, 0.0, 7.0, 9.0]]),
             torch.tensor([[3.2, 1.7, 4.1, 3.0], [0.0, 6.0, 2.0, 9.0]]), torch.tensor([[6.0, 0.0, 7.0, 1.0]]),
             torch.tensor([[2.0, 2.0, 6.0, 6.0]]), torch.tensor([[0.0, 4.0, 7.0, 5.0]])]
    ours = box_ratio(maps, boxes, threshold=0.6, reduction="none")
    for i, (s, b) in enumerate(zip(maps.numpy(), boxes)):
        mask = np.zeros_like(s, dtype=bool)
        for x1, y1, x2, y2 in b.tolist():
            mask[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = True
        hot = s > 0.6
        assert ours[i].item() == pytest.approx(100 * (hot & mask).sum() / hot.sum(), abs=1e-12)
    assert ours[1].item() == 100.0  # the box covers the whole image


def test_undefined_samples_and_nan_policy():
    maps = torch.stack([MAP, torch.zeros(4, 4), MAP, torch.full((4, 4), float("nan"))])
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    boxes = [box, box, torch.zeros(0, 4), box]  # no hot pixel; no box; a NaN map
    values = box_ratio(maps, boxes, reduction="none")
    assert values[0].item() == 40.0 and all(math.isnan(v) for v in values[1:].tolist())
    assert box_ratio(maps, boxes).item() == 40.0
    assert box_ratio(maps, boxes, nan_policy="zero").item() == 10.0
    assert math.isnan(box_ratio(maps, boxes, nan_policy="propagate").item())
    metric = BoxRatio()
    metric.update(maps, boxes, torch.arange(4))
    assert metric.compute().item() == 40.0 and int(metric.n_invalid) == 3
    assert metric.summary() == {"": 40.0, "n": 4, "n_invalid": 3}


def test_bool_masks_and_update_from():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[2:, :] = True  # hot pixels (2,2) and (3,0): 2 of 5
    assert box_ratio(MAP[None], [mask]).item() == 40.0
    metric = create_metric("box_ratio")
    inputs = MetricInputs(torch.zeros(1, 3, 4, 4), torch.tensor([0]), torch.tensor([7]), MAP[None],
                          torch.ones(1), torch.ones(1, 2), target_boxes=[torch.tensor([[0.0, 2.0, 4.0, 4.0]])])
    metric.update_from(inputs)
    assert metric.compute().item() == 40.0
    with pytest.raises(ValueError, match="needs `target_boxes`"):
        metric.update_from(MetricInputs(torch.zeros(1, 3, 4, 4), torch.tensor([0]), torch.tensor([8]), MAP[None],
                                        torch.ones(1), torch.ones(1, 2)))


def test_batching_does_not_change_the_result():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(10, 8, 8, generator=g)
    boxes = [torch.tensor([[float(i % 4), 1.0, float(i % 4) + 4, 7.0]]) for i in range(10)]
    whole, split = BoxRatio(threshold=0.7), BoxRatio(threshold=0.7)
    whole.update(maps, boxes, torch.arange(10))
    order = torch.tensor([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    for part in order.split(4):
        split.update(maps[part], [boxes[i] for i in part.tolist()], part)
    assert split.compute().item() == whole.compute().item()


@pytest.mark.parametrize("call, error, match", [
    (lambda: BoxRatio(threshold=1.5), ValueError, r"Expected `threshold` in \[0, 1\), but got 1.5."),
    (lambda: BoxRatio(threshold=-0.1), ValueError, r"but got -0.1"),
    (lambda: BoxRatio(threshold="0.5"), TypeError, r"`threshold` to be a float in \[0, 1\), but got str"),
    (lambda: box_ratio(MAP[None], [torch.tensor([[2.0, 0.0, 1.0, 1.0]])]), ValueError, "x2 >= x1"),
    (lambda: box_ratio(MAP[None], []), ValueError, "list of 1"),
    (lambda: box_ratio(MAP[None] * 2, [torch.zeros(0, 4)]), ValueError, r"values in \[0, 1\]"),
    (lambda: BoxRatio(nan_policy="skip"), ValueError, "'skip'"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
