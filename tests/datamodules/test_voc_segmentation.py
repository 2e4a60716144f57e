"""VOC2007(segmentation=True): the segmentation split, per-object masks from SegmentationObject (void in none),
the SegmentationClass cross-check, missing files, the unchanged default, and a PxAP run through the CLI."""
import logging
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_data import voc_xml
from PIL import Image

from datamodules.base import AnnotationError, as_preprocessing
from datamodules.images import CorruptImageError
from datamodules.voc import VOC2007, VOC_CLASSES, VOC2007DataModule

SMALL = {"resize_size": 64, "crop_size": 56}  # 64-px short side: scale 1, then a 56-px centre crop
C = {name: i for i, name in enumerate(VOC_CLASSES)}
VOID = 255


def rect(shape, rows, cols):
    """A (H, W) bool region: rows/cols are inclusive 0-based pixel ranges."""
    region = np.zeros(shape, dtype=bool)
    region[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return region


def staircase(shape, top, left, height):
    """A right triangle: row top + i covers cols left .. left + i."""
    region = np.zeros(shape, dtype=bool)
    for i in range(height):
        region[top + i, left:left + i + 1] = True
    return region


def drawn(shape, region, cls, difficult=0):
    """(region, class, difficult, its VOC 1-based inclusive box)."""
    rows, cols = np.nonzero(region)
    return region, cls, difficult, (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1,
                                    int(rows.max()) + 1)


def build_images():
    """image id -> ((width, height), [drawn objects in XML order], extra void region or None)."""
    a, b = (64, 64), (64, 128)  # (H, W)
    return {
        "000010": ((64, 64), [drawn(a, rect(a, (10, 29), (8, 27)), "dog"),
                              drawn(a, staircase(a, 34, 30, 24), "person")], None),
        "000011": ((128, 64), [drawn(b, rect(b, (20, 40), (50, 90)), "cat")], None),
        "000012": ((64, 64), [drawn(a, rect(a, (5, 20), (5, 20)), "chair"),
                              drawn(a, rect(a, (40, 60), (40, 60)), "chair"),
                              drawn(a, rect(a, (5, 15), (40, 50)), "bottle", 1)], rect(a, (48, 55), (5, 12))),
    }


IMAGES = build_images()
SEG_ITEMS = ["000011.jpg#cat", "000010.jpg#dog", "000010.jpg#person", "000012.jpg#chair"]


def dilate(region):
    """4-neighbour dilation by one pixel."""
    out = region.copy()
    out[1:] |= region[:-1]
    out[:-1] |= region[1:]
    out[:, 1:] |= region[:, :-1]
    out[:, :-1] |= region[:, 1:]
    return out


def voc_palette():
    """The devkit's colour map (``VOClabelcolormap``): index 255 is the void colour (224, 224, 192)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def save_palette_png(array, path):
    image = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array, np.uint8).tobytes())
    image.putpalette(voc_palette())
    image.save(path)


def index_images(objects, extra_void):
    """(SegmentationObject, SegmentationClass) arrays: object k / class + 1, a 1-px void ring, extra void."""
    shape = objects[0][0].shape
    obj, cls = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    union = np.zeros(shape, dtype=bool)
    for k, (region, name, _, _) in enumerate(objects, start=1):
        obj[region], cls[region] = k, C[name] + 1
        union |= region
    void = dilate(union) & ~union
    if extra_void is not None:
        void |= extra_void & ~union
    obj[void] = cls[void] = VOID
    return obj, cls


@pytest.fixture
def voc(tmp_path):
    """A mini VOCdevkit with the segmentation subset (000013 is in Main only, without masks)."""
    base = tmp_path / "VOCdevkit" / "VOC2007"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationObject",
                   "SegmentationClass"):
        (base / folder).mkdir(parents=True)
    for k, (name, (size, objects, extra_void)) in enumerate(IMAGES.items()):
        Image.new("RGB", size, (40 * k, 100, 200)).save(base / "JPEGImages" / f"{name}.jpg", quality=90)
        (base / "Annotations" / f"{name}.xml").write_text(voc_xml(name, size, [o[1:] for o in objects]))
        obj, cls = index_images(objects, extra_void)
        save_palette_png(obj, base / "SegmentationObject" / f"{name}.png")
        save_palette_png(cls, base / "SegmentationClass" / f"{name}.png")
    Image.new("RGB", (64, 64)).save(base / "JPEGImages" / "000013.jpg")
    (base / "Annotations" / "000013.xml").write_text(voc_xml("000013", (64, 64), [("aeroplane", 0, (1, 1, 64, 64))]))
    (base / "ImageSets" / "Main" / "test.txt").write_text("000010\n000013\n")
    (base / "ImageSets" / "Segmentation" / "test.txt").write_text("000011\n000010\n000012\n")
    return tmp_path / "VOCdevkit"


def seg(voc, *parts):
    return voc.joinpath("VOC2007", *parts)


def crop(array, size):
    """The SMALL preprocessing's crop of an original-size (H, W) array (the resize is the identity)."""
    top, left = (array.shape[0] - 56) // 2, (array.shape[1] - 56) // 2
    assert min(array.shape) == 64 and size == (array.shape[1], array.shape[0])
    return torch.from_numpy(np.ascontiguousarray(array[top:top + 56, left:left + 56]))


def test_items_come_from_the_segmentation_split(voc):
    data = VOC2007(voc, preprocessing=SMALL, segmentation=True)
    assert [data.sample_id(i) for i in range(len(data))] == SEG_ITEMS  # the bottle is difficult only: no item
    assert [data[i]["label"] for i in range(len(data))] == [C["cat"], C["dog"], C["person"], C["chair"]]
    plain = VOC2007(voc, preprocessing=SMALL)
    assert [plain.sample_id(i) for i in range(len(plain))] == ["000010.jpg#dog", "000010.jpg#person",
                                                               "000013.jpg#aeroplane"]


def test_masks_follow_the_boxes_and_equal_the_drawn_regions(voc):
    data = VOC2007(voc, preprocessing=SMALL, segmentation=True, include_difficult=True)
    for i in range(len(data)):
        sample = data[i]
        size, objects, extra_void = IMAGES[sample["id"].split(".")[0]]
        masks = sample["masks"]
        assert masks.dtype == torch.bool and masks.shape == (len(objects), 56, 56)
        assert len(sample["boxes"]) == len(sample["box_labels"]) == len(masks)  # every box kept here
        assert sample["box_labels"].tolist() == [C[o[1]] for o in objects]
        for k, (region, _, _, _) in enumerate(objects):
            assert torch.equal(masks[k], crop(region, size)), (sample["id"], k + 1)
        obj, _ = index_images(objects, extra_void)
        void = crop(obj == VOID, size)
        assert void.sum() > 0 and not (masks.any(dim=0) & void).any()  # void is in no object's mask
        assert torch.equal(masks.any(dim=0), crop((obj > 0) & (obj != VOID), size))
    # the person: the staircase, not its box
    person = data[SEG_ITEMS.index("000010.jpg#person")]["masks"][1]
    assert person.sum() == sum(range(1, 25)) and person.sum() < 24 * 24


def test_boxes_and_image_unchanged_by_segmentation(voc):
    with_masks = VOC2007(voc, preprocessing=SMALL, segmentation=True)[1]
    plain = VOC2007(voc, preprocessing=SMALL)[0]  # both 000010.jpg#dog
    assert with_masks["id"] == plain["id"] == "000010.jpg#dog"
    assert set(with_masks) - set(plain) == {"masks"}
    for key in ("image", "boxes", "box_labels", "difficult"):
        assert torch.equal(with_masks[key], plain[key]), key
    assert with_masks["counts"] == plain["counts"]
    # XML (9, 11, 28, 30) 1-based inclusive -> edges (8, 10, 28, 30) -> crop offset 4
    assert with_masks["boxes"][0].tolist() == [4.0, 6.0, 24.0, 26.0]
    assert with_masks["masks"][0].nonzero().min(dim=0).values.tolist() == [6, 4]  # (row, col) of its corner


def test_masks_at_the_default_preprocessing(voc):
    sample = VOC2007(voc, segmentation=True)[1]  # 64x64 -> 256 (x4, nearest for masks) -> crop 224 at 16
    region = torch.from_numpy(IMAGES["000010"][1][0][0])
    expected = region.repeat_interleave(4, 0).repeat_interleave(4, 1)[16:240, 16:240]
    assert sample["image"].shape == (3, 224, 224) and sample["masks"].shape == (2, 224, 224)
    assert torch.equal(sample["masks"][0], expected)


def test_datamodule_provides_masks_and_collates_them(voc):
    dm = VOC2007DataModule(voc, preprocessing=SMALL, batch_size=4, segmentation=True)
    assert dm.provides() == {"boxes", "masks"} and VOC2007DataModule(voc).provides() == {"boxes"}
    assert VOC2007DataModule.PROVIDES == {"boxes"}
    dm.prepare_data()
    dm.setup("predict")
    (batch,) = list(dm.predict_dataloader())
    assert batch["id"] == SEG_ITEMS
    assert [tuple(m.shape) for m in batch["masks"]] == [(1, 56, 56), (2, 56, 56), (2, 56, 56), (3, 56, 56)]
    plain = VOC2007DataModule(voc, preprocessing=SMALL, batch_size=4)
    plain.setup("predict")
    assert "masks" not in next(iter(plain.predict_dataloader()))


@pytest.mark.parametrize("change, match", [
    ("class", r"000010.png'.*object 2 is 'person' in the XML but 'cat' \(300 of its 300 pixels\) in SegmentationClass"),
    ("order", r"000010.png'.*object 1 is 'person' in the XML but 'dog'"),
    ("extra", r"000010.png'.*object indices \[3\] in SegmentationObject, but the XML has 2 <object>s"),
    ("size", r"SegmentationClass.000010.png' is 32x32 but its image is 64x64"),
    ("rgb", r"SegmentationObject.000010.png': expected a palette \(mode P\) PNG"),
])
def test_bad_masks_raise_naming_the_file(voc, change, match):
    size, objects, extra_void = IMAGES["000010"]
    obj, cls = index_images(objects, extra_void)
    if change == "class":
        cls[cls == C["person"] + 1] = C["cat"] + 1
        save_palette_png(cls, seg(voc, "SegmentationClass", "000010.png"))
    elif change == "order":  # the XML lists the objects in another order than SegmentationObject's indices
        xml = voc_xml("000010", size, [o[1:] for o in objects[::-1]])
        seg(voc, "Annotations", "000010.xml").write_text(xml)
    elif change == "extra":
        obj[0, 0] = 3
        save_palette_png(obj, seg(voc, "SegmentationObject", "000010.png"))
    elif change == "size":
        save_palette_png(cls[:32, :32], seg(voc, "SegmentationClass", "000010.png"))
    else:
        Image.fromarray(np.stack([obj] * 3, axis=-1)).save(seg(voc, "SegmentationObject", "000010.png"))
    data = VOC2007(voc, preprocessing=SMALL, segmentation=True)  # the PNGs are read at load
    data[0]
    with pytest.raises(AnnotationError, match=match):
        data[1]
    skipped = VOC2007(voc, preprocessing=SMALL, segmentation=True, on_error="skip")[1]
    assert skipped["skipped"] and skipped["id"] == "000010.jpg#dog" and skipped["error"].startswith("AnnotationError")
    assert "masks" not in VOC2007(voc, preprocessing=SMALL)[0]  # without segmentation the PNGs are not read


def test_corrupt_mask_png(voc):
    path = seg(voc, "SegmentationObject", "000012.png")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(CorruptImageError, match=r"mask file .*000012.png"):
        VOC2007(voc, preprocessing=SMALL, segmentation=True)[3]


def test_missing_segmentation_files(voc, tmp_path, caplog):
    seg(voc, "SegmentationClass", "000012.png").unlink()
    missing = r"Segmented image '000012' has no mask file .*SegmentationClass.000012.png'"
    with pytest.raises(FileNotFoundError, match=missing):
        VOC2007(voc, preprocessing=SMALL, segmentation=True)
    data = VOC2007(voc, preprocessing=SMALL, segmentation=True, on_error="skip")
    assert [data.sample_id(i) for i in range(len(data))] == SEG_ITEMS[:3] + ["000012.jpg"]
    with caplog.at_level(logging.WARNING):
        assert data[3]["skipped"]
    seg(voc, "ImageSets", "Segmentation", "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)Missing split file .*Segmentation.test.txt'.*"
                                                r"VOCtrainval_06-Nov-2007.tar holds SegmentationObject/"):
        VOC2007(voc, segmentation=True)
    shutil.rmtree(seg(voc, "SegmentationObject"))
    for make in (lambda: VOC2007(voc, segmentation=True),
                 lambda: VOC2007DataModule(voc, segmentation=True).prepare_data()):
        with pytest.raises(FileNotFoundError, match=r"(?s)Missing folder .*SegmentationObject'.*"
                                                    r"ImageSets/Segmentation/test.txt.*VOCtest_06-Nov-2007.tar"):
            make()
    assert len(VOC2007(voc, preprocessing=SMALL)) == 3  # the detection layout alone still works without masks
    VOC2007DataModule(voc).prepare_data()


@pytest.mark.parametrize("cls", [VOC2007, VOC2007DataModule])
def test_bad_segmentation_argument(voc, cls):
    with pytest.raises(ValueError, match=r"`segmentation` to be one of \(False, True\)"):
        cls(voc, segmentation="yes")


def _run_args(voc, out, segmentation):
    data_args = f"{{root: '{voc}'" + (", segmentation: true}" if segmentation else "}")
    return ["run", "--data", "voc2007", "--data_args", data_args, "--backbones", "[resnet18]", "--num_classes", "20",
            "--weights", "null", "--explainers", "[center]", "--metrics", "[pxap]", "--bootstrap", "20",
            "--num_workers", "0", "--batch_size", "2", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--out", str(out)]


@pytest.mark.slow
def test_cli_run_gives_pxap_with_segmentation_and_refuses_it_without(voc, tmp_path, capsys):
    from benchmark.cli import console
    from benchmark.explainers import create_explainer
    from benchmark.metrics.functional import pxap

    out = tmp_path / "seg"
    assert console(_run_args(voc, out, True)) == 0
    results = pd.read_csv(out / "results.csv")
    row = results[(results["metric"] == "pxap") & (results["method"] == "center")].iloc[0]
    assert math.isfinite(row["value"]) and 0.0 <= row["value"] <= 100.0 and row["n"] == len(SEG_ITEMS)
    # the same value from the masks of the target class and the centre map, computed here
    data = VOC2007(voc, preprocessing=as_preprocessing(None), segmentation=True)
    samples = [data[i] for i in range(len(data))]
    masks = torch.stack([s["masks"][s["box_labels"] == s["label"]].any(dim=0) for s in samples])
    center = create_explainer("center", torch.nn.Identity())
    maps = center(torch.stack([s["image"] for s in samples]), torch.tensor([s["label"] for s in samples]))
    assert row["value"] == pytest.approx(pxap(maps, masks).item(), abs=1e-9)

    refused = tmp_path / "plain"
    assert console(_run_args(voc, refused, False)) == 2
    err = capsys.readouterr().err
    assert "Metrics ['pxap'] need masks, which the 'voc2007' data do not provide" in err
    assert not refused.exists()
