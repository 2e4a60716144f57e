"""``Preprocessing.resize_mode="squash"``: the image, its boxes and masks warp to a square as the peers do.

References: transformers' image processors and timm's ``create_transform`` run on the same non-square image;
torchvision's v2 transforms on ``tv_tensors.BoundingBoxes`` / ``tv_tensors.Mask``.
"""
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import timm
import torch
import transformers as tf
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from benchmark.runner.folder import SettingsDiffer, check_backbone
from benchmark.runtime.backbones import create_backbone
from benchmark.runtime.hf_backbone import hf_preprocessing
from benchmark.runtime.preprocessing import Preprocessing, imagenet_preprocessing
from datamodules.base import as_preprocessing
from datamodules.boxes import resized_size, transform_boxes
from datamodules.sample import make_sample


def _smooth_image(height: int, width: int) -> Image.Image:
    """A smooth RGB image: resampling filters agree closely, geometry does not."""
    yy, xx = np.mgrid[0:height, 0:width] / 300.0
    arr = np.stack([np.sin(6 * xx) + np.cos(4 * yy), np.sin(15 * yy * xx), xx * yy], -1)
    return Image.fromarray(((arr - arr.min()) / (arr.max() - arr.min()) * 255).astype(np.uint8))


WIDE, TALL = _smooth_image(300, 450), _smooth_image(450, 300)


def _squash(resize: int, crop: int) -> Preprocessing:
    return Preprocessing((3, crop, crop), resize, crop, (0.5,) * 3, (0.5,) * 3, "bilinear", "squash")


def test_default_is_shorter_and_bad_values_are_refused_with_the_choices():
    assert imagenet_preprocessing().resize_mode == "shorter"
    assert Preprocessing((3, 4, 4), 4, 4, (0.5,) * 3, (0.5,) * 3, "bilinear").resize_mode == "shorter"
    with pytest.raises(ValueError, match=r"`resize_mode` to be one of \['shorter', 'squash'\].*'warp'"):
        Preprocessing((3, 4, 4), 4, 4, (0.5,) * 3, (0.5,) * 3, "bilinear", "warp")
    with pytest.raises(ValueError, match="one of"):
        resized_size(10, 20, 8, "warp")


def test_as_preprocessing_accepts_resize_mode_in_a_dict():
    prep = as_preprocessing({"resize_size": 64, "crop_size": 56, "resize_mode": "squash"})
    assert (prep.resize_size, prep.crop_size, prep.resize_mode) == (64, 56, "squash")
    assert as_preprocessing({"crop_size": 56}).resize_mode == "shorter"
    with pytest.raises(ValueError, match="resize_mode"):
        as_preprocessing({"crop_size": 56, "resize_mode": "stretch"})


def test_squash_transform_is_a_warp_by_hand():
    """A 2 x 4 image (rows 0 and 255) warped to 4 x 4 with nearest: each row twice (hand computation)."""
    image = torch.zeros(3, 2, 4, dtype=torch.uint8)
    image[:, 1] = 255
    prep = Preprocessing((3, 4, 4), 4, 4, (0.0,) * 3, (1.0,) * 3, "nearest", "squash")
    out = prep.transform()(image)
    assert out.shape == (3, 4, 4)
    assert out[0].tolist() == [[0.0] * 4, [0.0] * 4, [1.0] * 4, [1.0] * 4]


def _reference_boxes(size, boxes, resize, crop):
    """torchvision BoundingBoxes through Resize((s, s)) + CenterCrop, clamped, empties dropped."""
    bb = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size)
    bb = v2.CenterCrop(crop)(v2.Resize((resize, resize))(v2.functional.clamp_bounding_boxes(bb)))
    out = v2.functional.clamp_bounding_boxes(bb).as_subclass(torch.Tensor)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])].float()


@pytest.mark.parametrize("size", [(300, 450), (450, 300), (37, 211), (500, 120)])
@pytest.mark.parametrize("resize, crop", [(256, 224), (64, 64), (100, 37)])
def test_boxes_match_torchvision_squash_reference(size, resize, crop):
    gen = torch.Generator().manual_seed(sum(size) + resize)
    h, w = size
    corners = torch.rand(40, 4, generator=gen, dtype=torch.float64) * torch.tensor([w, h, w, h])
    boxes = torch.cat([corners[:, :2].minimum(corners[:, 2:]), corners[:, :2].maximum(corners[:, 2:])], 1)
    boxes = boxes + torch.tensor([0, 0, 1, 1])  # no zero-width box
    out, keep, counts = transform_boxes(boxes, size, _squash(resize, crop))
    reference = _reference_boxes(size, boxes, resize, crop)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)
    assert len(keep) == len(reference) and counts["boxes_dropped"] == len(boxes) - len(reference)
    assert resized_size(h, w, resize, "squash") == (resize, resize)


def test_masks_follow_the_squash_geometry_like_torchvision():
    h, w = 30, 60
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 5:20, 3:40] = True
    masks[1, 10:28, 45:58] = True
    boxes = torch.tensor([[3.0, 5.0, 40.0, 20.0], [45.0, 10.0, 58.0, 28.0]])
    prep = _squash(24, 20)
    image = Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8))
    sample = make_sample(image, prep, prep.transform(), label=0, index=0, sample_id="a", boxes=boxes,
                         box_labels=[1, 2], masks=masks)
    reference = v2.CenterCrop(20)(v2.Resize((24, 24))(tv_tensors.Mask(masks))).as_subclass(torch.Tensor)
    assert torch.equal(sample["masks"], reference[:len(sample["masks"])])
    torch.testing.assert_close(sample["boxes"], _reference_boxes((h, w), boxes.double(), 24, 20), atol=1e-4, rtol=0)


@pytest.mark.parametrize("make", [
    lambda: tf.ViTImageProcessor(),  # {height, width} 224
    lambda: tf.DeiTImageProcessor(),  # {height, width} 256, crop 224
    lambda: tf.BeitImageProcessor(),
    lambda: tf.SiglipImageProcessor(),
    lambda: tf.EfficientNetImageProcessor(),  # 346 -> no crop step by default
    lambda: tf.CLIPImageProcessor(size={"height": 224, "width": 224}),
    lambda: tf.BitImageProcessor(size={"height": 256, "width": 256}),
    lambda: tf.LevitImageProcessor(size={"height": 240, "width": 240}),
    lambda: tf.PoolFormerImageProcessor(size={"height": 224, "width": 224}, crop_pct=None),
    lambda: tf.ConvNextImageProcessor(size={"shortest_edge": 384}),  # warps at >= 384
])
@pytest.mark.parametrize("image", [WIDE, TALL], ids=["wide", "tall"])
def test_hf_square_size_processors_squash_like_their_own_output(make, image):
    processor = make()
    prep = hf_preprocessing(processor)
    assert prep.resize_mode == "squash"
    theirs = processor(images=image, return_tensors="pt")["pixel_values"][0].float()
    torch.testing.assert_close(prep.transform()(image), theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("make", [
    lambda: tf.PoolFormerImageProcessor(size={"height": 224, "width": 224}),  # crop_pct: shortest edge
    lambda: tf.ConvNextImageProcessor(size={"shortest_edge": 224}),
    lambda: tf.CLIPImageProcessor(),
])
def test_hf_shortest_edge_processors_keep_the_aspect_ratio(make):
    processor = make()
    prep = hf_preprocessing(processor)
    assert prep.resize_mode == "shorter"
    theirs = processor(images=WIDE, return_tensors="pt")["pixel_values"][0].float()
    torch.testing.assert_close(prep.transform()(WIDE), theirs, atol=1e-4, rtol=0)


def test_timm_squash_tag_matches_timms_own_transform():
    name = "dm_nfnet_f0.dm_in1k"  # crop_mode 'squash', input 192, crop_pct 0.9: scale_size 213
    model, prep = create_backbone(f"timm/{name}", num_classes=3)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["crop_mode"] == "squash"
    assert (prep.resize_mode, prep.resize_size, prep.crop_size) == ("squash", math.floor(192 / 0.9), 192)
    for image in (WIDE, TALL):  # tolerance of the centre-crop test: PIL vs tensor bicubic
        torch.testing.assert_close(prep.transform()(image), timm.data.create_transform(**cfg)(image),
                                   atol=0.02, rtol=0)


def test_timm_border_crop_mode_is_still_refused(monkeypatch):
    real = timm.data.resolve_data_config
    monkeypatch.setattr(timm.data, "resolve_data_config", lambda *a, **k: {**real(*a, **k), "crop_mode": "border"})
    with pytest.raises(ValueError, match="crop_mode 'center' or 'squash'.*'border'.*pads"):
        create_backbone("timm/resnet18.a1_in1k", num_classes=3)


def _record(tmp_path, preprocessing):
    (tmp_path / "run.json").write_text(json.dumps({"backbones": {"b": {"preprocessing": preprocessing}}}))


def test_a_recorded_preprocessing_without_resize_mode_reads_as_shorter(tmp_path):
    old = {k: v for k, v in asdict(imagenet_preprocessing()).items() if k != "resize_mode"}  # an older run.json
    _record(tmp_path, json.loads(json.dumps(old)))
    check_backbone(tmp_path, "b", {}, "w", asdict(imagenet_preprocessing()))  # same settings: no refusal
    squash = Preprocessing(**{**asdict(imagenet_preprocessing()), "resize_mode": "squash"})
    with pytest.raises(SettingsDiffer, match="resize_mode: 'shorter' -> 'squash'"):
        check_backbone(tmp_path, "b", {}, "w", asdict(squash))


def test_a_merge_reads_an_old_record_as_shorter_and_refuses_a_squash_one(tmp_path):
    """run.json files recorded before resize_mode merge with new ones that resize the shorter side; a backbone
    recorded with squash is another preprocessing (refused, naming the field)."""
    from pathlib import Path

    from benchmark.report.leaderboard import load_runs
    from benchmark.report.results import RunsDiffer

    committed = json.loads((Path(__file__).parents[1] / "leaderboards" / "synthetic" / "run.json").read_text())
    assert all("resize_mode" not in b["preprocessing"] for b in committed["backbones"].values())  # an old record
    runs = {}
    for name, mode in (("old", None), ("new", "shorter"), ("squash", "squash")):
        meta = json.loads(json.dumps(committed))
        for backbone in meta["backbones"].values():
            if mode:
                backbone["preprocessing"]["resize_mode"] = mode
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(meta))
        runs[name] = tmp_path / name
    assert len(load_runs([runs["old"], runs["new"]])) == 2
    with pytest.raises(RunsDiffer, match=r"backbones\.synthetic/\w+\.preprocessing"):
        load_runs([runs["old"], runs["squash"]])


def test_a_shortest_edge_processor_without_a_crop_is_refused():
    """transformers keeps such images non-square (checked on the processor itself); a square crop would differ."""
    processor = tf.ViTImageProcessor(size={"shortest_edge": 32}, do_center_crop=False)
    out = processor(Image.new("RGB", (60, 40)), return_tensors="pt")["pixel_values"]
    assert tuple(out.shape[-2:]) == (32, 48)
    with pytest.raises(ValueError, match="resizes the shortest edge to 32 without a centre crop"):
        hf_preprocessing(processor)
