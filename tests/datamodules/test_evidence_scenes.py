"""SyntheticShapes(scene="evidence"): one object decides the class among class-neutral distractors of the same
vocabulary; its mask and box are the evidence; size, clutter and occlusion vary."""
from collections import Counter

import numpy as np
import pytest
import torch

from datamodules.evidence_scenes import _order_keeps_evidence, render_evidence_scene
from datamodules.shapes import CLASSES
from datamodules.synthetic import SyntheticShapes, SyntheticShapesDataModule


def test_scenes_are_a_pure_function_of_seed_split_index():
    a, b = render_evidence_scene(3, "val", 11), render_evidence_scene(3, "val", 11)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks) and a.distractors == b.distractors
    assert not np.array_equal(a.image, render_evidence_scene(3, "train", 11).image)
    assert not np.array_equal(a.image, render_evidence_scene(4, "val", 11).image)


@pytest.mark.parametrize("index", range(30))
def test_one_object_with_a_tight_box_and_disjoint_visible_masks(index):
    scene = render_evidence_scene(0, "val", index, size=96)
    assert len(scene.boxes) == 1 and scene.masks.shape == (1, 96, 96)  # exactly one object decides the class
    assert len(scene.distractors) == len(scene.distractor_masks)
    assert int((scene.masks.sum(0) + scene.distractor_masks.sum(0)).max()) == 1  # visible masks never overlap
    (x1, y1, x2, y2), mask = scene.boxes.astype(int)[0], scene.masks[0]
    inside = np.zeros_like(mask)
    inside[y1:y2, x1:x2] = True
    assert not (mask & ~inside).any()
    assert mask[y1].any() and mask[y2 - 1].any() and mask[:, x1].any() and mask[:, x2 - 1].any()
    assert mask.sum() >= 20  # the evidence is a visible object, not a sliver


def test_class_balance_distractor_counts_and_sizes():
    scenes = [render_evidence_scene(0, "val", i, size=64) for i in range(400)]
    labels = Counter(s.label for s in scenes)
    assert set(labels) == set(range(len(CLASSES))) and min(labels.values()) >= 30
    assert set(Counter(len(s.distractors) for s in scenes)) == {0, 1, 2, 3}  # clutter varies
    area = np.array([s.masks.sum() / 64 ** 2 for s in scenes])
    assert area.min() < 0.03 and area.max() > 0.3  # small and large objects (radius 14-35 % of the side)
    multi = [len(render_evidence_scene(0, "val", i, size=64, multi_instance=True).boxes) for i in range(100)]
    assert min(multi) >= 2 and max(multi) == 3


def test_distractors_are_class_neutral():
    """Each distractor pairs an outline with another class's texture, independently of the label: the share of
    distractors whose outline (or texture) is the label's is 1/8, as for any other class."""
    scenes = [render_evidence_scene(1, "train", i, size=32) for i in range(3000)]
    pairs = [(s.label, o, t) for s in scenes for o, t in s.distractors]
    assert len(pairs) > 3000 and all(o != t for _, o, t in pairs)
    for share in (np.mean([o == label for label, o, _ in pairs]), np.mean([t == label for label, _, t in pairs])):
        assert abs(share - 1 / len(CLASSES)) < 0.025


def test_a_distractor_hides_at_most_half_of_the_object():
    """Hand case of the drawing-order rule: an object (first) under a distractor covering 3 of its 4 pixels is
    refused; covering 2 of 4 is allowed; the distractor under the object is always fine."""
    obj = np.zeros((4, 4), dtype=bool)
    obj[0, :4] = True
    three, two = np.zeros_like(obj), np.zeros_like(obj)
    three[0, :3] = True
    two[0, :2] = True
    shapes = [(True, obj), (False, three), (False, two)]
    assert not _order_keeps_evidence(shapes, [0, 1])
    assert _order_keeps_evidence(shapes, [1, 0]) and _order_keeps_evidence(shapes, [0, 2])


def test_the_datamodule_serves_evidence_scenes_with_their_own_ids():
    data = SyntheticShapes(size=3, split="val", image_size=64, scene="evidence")
    s, scene = data[2], render_evidence_scene(0, "val", 2, size=64)
    assert s["id"] == "val_evidence_00000002" and s["label"] == scene.label
    assert torch.equal(s["masks"], torch.from_numpy(scene.masks)) and s["box_labels"].tolist() == [scene.label]
    dm = SyntheticShapesDataModule(size=2, image_size=32, batch_size=2, scene="evidence")
    dm.setup("predict")
    assert [len(b) for b in next(iter(dm.predict_dataloader()))["boxes"]] == [1, 1]
    with pytest.raises(ValueError, match="scene"):
        SyntheticShapes(size=1, scene="hard")
