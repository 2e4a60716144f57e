"""The threshold sweep of MaxBoxAcc (V1 and V2): one pass of a union-find forest gives, at every threshold, the box of
the largest component that labelling the thresholded map gives (scipy.ndimage.label, ties to the lowest label), and
the boxes of all its components."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from torchvision.ops import box_iou

from benchmark.metrics.functional import max_box_acc
from benchmark.metrics.functional._components import component_events, largest_component_boxes

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


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("shape, steps, seed", [((3, 19, 23), 6, 0), ((2, 1, 17), 4, 1), ((4, 12, 12), 12, 3)])
def test_events_replay_to_every_components_boxes(connectivity, shape, steps, seed):
    """Replaying the events and merges from the top threshold down gives, at each threshold, the set of boxes of
    the components scipy labels there."""
    levels = torch.randint(0, steps + 1, shape, generator=torch.Generator().manual_seed(seed))
    events, deaths = component_events(levels, steps, connectivity)
    for b in range(shape[0]):
        live = {}
        for level in range(steps, 0, -1):
            for _, _, root in deaths[(deaths[:, 1] == b) & (deaths[:, 0] == level)].tolist():
                del live[root]
            for row in events[(events[:, 1] == b) & (events[:, 0] == level)].tolist():
                live[row[2]] = tuple(row[3:])
            labels, _ = ndimage.label((levels[b] > level - 1).numpy(), structure=STRUCTURES[connectivity])
            expected = sorted((s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels))
            assert sorted(live.values()) == expected, (b, level)


def test_connectivity_other_than_4_or_8_is_refused():
    with pytest.raises(ValueError, match="4 or 8"):
        largest_component_boxes(torch.zeros(1, 2, 2, dtype=torch.long), 1, connectivity=6)


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
