"""SyntheticShapes: determinism, exact boxes/masks, splits, preprocessing geometry, loaders, bad arguments."""
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.base import imagenet_preprocessing
from datamodules.sample import collate_samples
from datamodules.shapes import CLASSES, render_scene
from datamodules.synthetic import SyntheticShapes, SyntheticShapesDataModule


def test_scenes_are_a_pure_function_of_seed_split_index():
    a, b = render_scene(3, "val", 11), render_scene(3, "val", 11)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks) and a.label == b.label
    assert not np.array_equal(a.image, render_scene(3, "train", 11).image)
    assert not np.array_equal(a.image, render_scene(4, "val", 11).image)


@pytest.mark.parametrize("index", range(40))
def test_boxes_are_the_tight_extents_of_disjoint_visible_masks(index):
    scene = render_scene(0, "val", index, size=96)
    assert 1 <= len(scene.boxes) <= 3 and scene.masks.shape == (len(scene.boxes), 96, 96)
    assert int(scene.masks.sum(0).max()) == 1  # visible masks never overlap
    for (x1, y1, x2, y2), mask in zip(scene.boxes.astype(int), scene.masks):
        inside = np.zeros_like(mask)
        inside[y1:y2, x1:x2] = True
        assert not (mask & ~inside).any()  # nothing outside the box
        # every edge row/column of the box touches the mask: the box is tight
        assert mask[y1].any() and mask[y2 - 1].any() and mask[:, x1].any() and mask[:, x2 - 1].any()
        assert mask.sum() >= 40  # an instance is a visible object, not a sliver


def test_class_balance_and_instance_counts():
    scenes = [render_scene(0, "val", i, size=64) for i in range(400)]
    labels = Counter(s.label for s in scenes)
    assert set(labels) == set(range(len(CLASSES))) and min(labels.values()) >= 30
    counts = Counter(len(s.boxes) for s in scenes)
    assert set(counts) == {1, 2, 3} and counts[1] > counts[2] > counts[3]
    multi = [len(render_scene(0, "val", i, size=64, multi_instance=True).boxes) for i in range(100)]
    assert min(multi) >= 2


def test_sample_contract():
    data = SyntheticShapes(size=5, split="val", image_size=64)
    s = data[4]
    scene = render_scene(0, "val", 4, size=64)
    assert s["index"] == 4 and s["id"] == "val_00000004" and s["label"] == scene.label
    assert s["boxes"].dtype == torch.float32 and torch.equal(s["boxes"], torch.from_numpy(scene.boxes))
    assert torch.equal(s["masks"], torch.from_numpy(scene.masks)) and s["box_labels"].tolist() == [scene.label] * len(
        scene.boxes)
    # mean = std = 0.5: the image is 2 * uint8 / 255 - 1
    expected = torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.allclose(s["image"], expected, atol=1e-6)
    assert s["counts"]["boxes_clipped"] == s["counts"]["boxes_dropped"] == 0


def test_imagenet_preprocessing_scales_and_crops_boxes_and_masks():
    prep = imagenet_preprocessing()  # 128 -> 256 (x2) -> centre crop 224 (offset 16)
    s = SyntheticShapes(size=8, split="val", image_size=128, preprocessing=prep)[7]
    scene = render_scene(0, "val", 7, size=128)
    expected = np.clip(scene.boxes * 2 - 16, 0, 224)
    keep = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
    assert s["image"].shape == (3, 224, 224)
    assert np.allclose(s["boxes"].numpy(), expected[keep])
    assert s["masks"].shape == (int(keep.sum()), 224, 224)
    # nearest-neighbour x2 upsampling of the mask, then the crop
    up = scene.masks.repeat(2, axis=1).repeat(2, axis=2)[:, 16:240, 16:240]
    assert (s["masks"].numpy() == up[keep]).mean() > 0.999


def test_dataloader_workers_give_the_same_batches():
    dm = SyntheticShapesDataModule(size=6, image_size=32, batch_size=4, num_workers=0)
    dm.setup("predict")
    serial = list(dm.predict_dataloader())
    parallel = list(DataLoader(dm.dataset, batch_size=4, num_workers=2, collate_fn=collate_samples))
    for a, b in zip(serial, parallel):
        assert torch.equal(a["image"], b["image"]) and a["index"].tolist() == b["index"].tolist()
        assert all(torch.equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "validation"}, r"`split` to be one of \('train', 'val', 'test'\)"),
    ({"num_classes": 9}, r"`num_classes` to be an int in \[2, 8\]"),
    ({"size": 0}, r"`size` to be an int > 0"),
    ({"on_error": "ignore"}, r"`on_error` to be one of \('raise', 'skip'\)"),
    ({"batch_size": -1}, r"`batch_size` to be an int > 0"),
])
def test_bad_arguments_list_the_valid_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticShapesDataModule(**kwargs)


def test_nothing_is_held_in_memory():
    data = SyntheticShapes(size=10_000, image_size=64)
    assert all(not isinstance(v, (np.ndarray, torch.Tensor, list)) for v in vars(data).values())
