"""The threshold sweep of MaxBoxAcc (V1): one sort and a union-find forest give, at every threshold, the box of the
largest component that labelling the thresholded map gives (scipy.ndimage.label, ties to the lowest label)."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from torchvision.ops import box_iou

from benchmark.metrics.functional import max_box_acc
from benchmark.metrics.functional._components import largest_component_boxes

STRUCTURES = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}


def scipy_box(mask: np.ndarray, connectivity: int) -> list:
    labels, n = ndimage.label(mask, structure=STRUCTURES[connectivity])
    if n == 0:
        return [float("nan")] * 4
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:])))
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("shape, steps, seed", [((3, 19, 23), 6, 0), ((2, 1, 17), 4, 1), ((2, 17, 1), 4, 2),
                                                ((4, 12, 12), 12, 3)])
def test_sweep_boxes_equal_labelling_each_threshold(connectivity, shape, steps, seed):
    """Random levels (many equal-size components: the tie rule matters) against scipy at every threshold."""
    levels = torch.randint(0, steps + 1, shape, generator=torch.Generator().manual_seed(seed))
    ours = largest_component_boxes(levels, steps, connectivity)
    for b in range(shape[0]):
        for k in range(steps):
            expected = scipy_box((levels[b] > k).numpy(), connectivity)
            assert ours[b, k].tolist() == pytest.approx(expected, nan_ok=True), (b, k)


def test_max_box_acc_with_unsorted_repeated_thresholds_nan_pixels_and_empty_maps():
    """The caller's threshold order is kept, NaN pixels are never foreground, an all-zero map has no box."""
    generator = torch.Generator().manual_seed(7)
    maps = (torch.rand(4, 16, 20, generator=generator) * 8).round() / 8  # plateaus
    maps[1, 3, 4] = float("nan")
    maps[2] = 0.0
    gt = [torch.tensor([[2.0, 2.0, 12.0, 10.0]])] * 4
    thresholds = [0.5, 0.0, 0.25, 0.5, 0.9, 0.125]
    ours = max_box_acc(maps, gt, thresholds, reduction="none")
    for b in range(4):
        s = maps[b].nan_to_num(0.0)
        for j, t in enumerate(thresholds):
            box = scipy_box((maps[b] > torch.tensor(t, dtype=torch.float32) * s.amax()).numpy(), 4)
            hit = 0.0 if np.isnan(box).any() else float(box_iou(torch.tensor([box]), gt[b])[0, 0] >= 0.5)
            assert ours[b, j].item() == hit, (b, t)
