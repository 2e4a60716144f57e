"""VOC2007 datamodule: items, boxes, subsets, bad input, and one Trainer.predict pointing game."""
import logging
import math
import os
import shutil

import pytest
import torch
from fixtures_data import voc_xml
from PIL import Image
from torch.utils.data import DataLoader

from datamodules.base import AnnotationError, as_preprocessing
from datamodules.images import CorruptImageError
from datamodules.sample import collate_samples
from datamodules.voc import VOC2007, VOC_CLASSES, VOC2007DataModule, find_voc2007, parse_annotation

SMALL = as_preprocessing({"resize_size": 64, "crop_size": 56})
C = {name: i for i, name in enumerate(VOC_CLASSES)}

# image id -> ((width, height), [(class, difficult, (xmin, ymin, xmax, ymax)) in VOC 1-based inclusive pixels])
IMAGES = {
    "000001": ((128, 64), [("dog", 0, (11, 5, 40, 60)), ("person", 0, (81, 11, 120, 58))]),
    "000002": ((64, 64), [("chair", 0, (5, 9, 24, 40)), ("chair", 0, (35, 21, 60, 56)),
                          ("bottle", 1, (41, 5, 50, 20))]),
    "000003": ((64, 96), [("person", 0, (11, 21, 50, 80)), ("person", 1, (1, 61, 20, 96)),
                          ("car", 0, (41, 31, 80, 60)), ("car", 0, (70, 10, 90, 20))]),  # partly / wholly outside
    "000004": ((64, 64), [("cat", 0, (17, 17, 48, 48)), ("horse", 0, (30, 5, 20, 9))]),  # horse: x2 <= x1
    "000005": ((64, 64), [("aeroplane", 0, (1, 1, 64, 64))]),
}
# (id, label) of the default items (include_difficult=False): images in split order, classes ascending
ITEMS = [("000001.jpg#dog", C["dog"]), ("000001.jpg#person", C["person"]), ("000002.jpg#chair", C["chair"]),
         ("000003.jpg#car", C["car"]), ("000003.jpg#person", C["person"]), ("000004.jpg#cat", C["cat"]),
         ("000004.jpg#horse", C["horse"]), ("000005.jpg#aeroplane", C["aeroplane"])]


@pytest.fixture
def voc(tmp_path):
    """A mini ``VOCdevkit`` (returns its path; VOC2007 inside)."""
    base = tmp_path / "VOCdevkit" / "VOC2007"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / folder).mkdir(parents=True)
    for k, (name, (size, objects)) in enumerate(IMAGES.items()):
        Image.new("RGB", size, (40 * k, 100, 200)).save(base / "JPEGImages" / f"{name}.jpg", quality=90)
        (base / "Annotations" / f"{name}.xml").write_text(voc_xml(name, size, objects))
    (base / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{name}\n" for name in IMAGES))
    (base / "ImageSets" / "Main" / "train.txt").write_text("000005\n000002\n")
    return tmp_path / "VOCdevkit"


def ann(voc, name):
    return voc / "VOC2007" / "Annotations" / f"{name}.xml"


def test_items_order_ids_labels_and_index(voc):
    data = VOC2007(voc, preprocessing=SMALL)
    assert len(data) == len(ITEMS)
    assert [(data.sample_id(i), data.items[i][1]) for i in range(len(data))] == ITEMS
    sample = data[4]
    assert (sample["id"], sample["label"], sample["index"]) == ("000003.jpg#person", C["person"], 4)
    assert [data[i]["index"] for i in range(len(data))] == list(range(len(ITEMS)))
    train = VOC2007(voc, split="train", preprocessing=SMALL)  # split-file order, not sorted
    assert [train.sample_id(i) for i in range(len(train))] == ["000005.jpg#aeroplane", "000002.jpg#chair"]


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2007"])
def test_root_may_be_any_level(voc, sub):
    root = voc.parent / sub if sub else voc.parent
    assert find_voc2007(root) == str(voc / "VOC2007")
    assert len(VOC2007(root, preprocessing=SMALL)) == len(ITEMS)


def test_boxes_after_transform_and_counts(voc):
    data = VOC2007(voc, preprocessing=SMALL)
    # 128x64 -> resize 64 (scale 1) -> crop 56 at left 36, top 4; VOC (11, 5, 40, 60) -> edges (10, 4, 40, 60)
    s = data[0]
    assert s["image"].shape == (3, 56, 56)
    assert s["boxes"].tolist() == [[0.0, 0.0, 4.0, 56.0], [44.0, 6.0, 56.0, 54.0]]
    assert s["box_labels"].tolist() == [C["dog"], C["person"]] and s["difficult"].tolist() == [False, False]
    assert s["counts"]["boxes_clipped"] == 2
    # 64x64: scale 1, crop offset 4; every box of the image travels with the chair item, the bottle flagged
    s = data[2]
    assert s["boxes"].tolist() == [[0.0, 4.0, 20.0, 36.0], [30.0, 16.0, 56.0, 52.0], [36.0, 0.0, 46.0, 16.0]]
    assert s["box_labels"].tolist() == [C["chair"], C["chair"], C["bottle"]]
    assert s["difficult"].tolist() == [False, False, True]
    # 64x96 -> (W 64, H 96), crop at left 4, top 20; car 1 clipped to the image, car 2 outside: dropped
    s = data[3]
    assert s["boxes"].tolist() == [[6.0, 0.0, 46.0, 56.0], [0.0, 40.0, 16.0, 56.0], [36.0, 10.0, 56.0, 40.0]]
    assert s["box_labels"].tolist() == [C["person"], C["person"], C["car"]]
    assert s["difficult"].tolist() == [False, True, False]
    assert (s["counts"]["boxes_clipped"], s["counts"]["boxes_dropped"]) == (3, 1)
    s = data[6]  # the horse box has x2 <= x1: dropped as invalid, the item stays (no target box)
    assert s["boxes"].tolist() == [[12.0, 12.0, 44.0, 44.0]] and s["counts"]["boxes_invalid"] == 1


def test_boxes_at_default_preprocessing(voc):
    s = VOC2007(voc)[2]  # 64x64 -> 256 (x4) -> crop 224 at offset 16
    assert s["image"].shape == (3, 224, 224)
    assert s["boxes"].tolist() == [[0.0, 16.0, 80.0, 144.0], [120.0, 64.0, 224.0, 208.0], [144.0, 0.0, 184.0, 64.0]]


def test_include_difficult_policy(voc):
    ids = [VOC2007(voc, preprocessing=SMALL, include_difficult=True).sample_id(i) for i in range(len(ITEMS) + 1)]
    assert ids == [i for i, _ in ITEMS[:2]] + ["000002.jpg#bottle"] + [i for i, _ in ITEMS[2:]]
    default = VOC2007(voc, preprocessing=SMALL)  # TorchRay: bottle is present only as a difficult object
    assert "000002.jpg#bottle" not in [default.sample_id(i) for i in range(len(default))]
    assert default[2]["difficult"].tolist() == [False, False, True]  # its box still travels, flagged


def test_difficult_subset_file(voc, tmp_path):
    flags = ["1" if c == C["person"] else "0" for c in range(20)]
    path = tmp_path / "difficult.txt"
    path.write_text("000001\t" + "\t".join(flags) + "\n000003\n\n")
    data = VOC2007(voc, preprocessing=SMALL, difficult_subset=path)
    assert [data.sample_id(i) for i in range(len(data))] == [data.sample_id(i) for i in range(len(ITEMS))]
    flagged = [data.sample_id(i) for i in range(len(data)) if data[i]["difficult_item"]]
    assert flagged == ["000001.jpg#person", "000003.jpg#car", "000003.jpg#person"]
    assert "difficult_item" not in VOC2007(voc, preprocessing=SMALL)[0]
    batch = collate_samples([data[i] for i in range(3)])
    assert batch["difficult_item"].dtype == torch.bool and batch["difficult_item"].shape == (3,)
    path.write_text("000001\t1\t0\n")
    with pytest.raises(AnnotationError, match=r"difficult.txt'?, line 1: expected an image id alone or followed by 20"):
        VOC2007(voc, difficult_subset=path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        VOC2007DataModule(voc, difficult_subset=tmp_path / "missing.txt").prepare_data()


def test_multi_instance_subset(voc):
    data = VOC2007(voc, preprocessing=SMALL, multi_instance=True)
    assert [data.sample_id(i) for i in range(len(data))] == ["000002.jpg#chair", "000003.jpg#car",
                                                             "000003.jpg#person"]


def test_limit_stops_parsing(voc):
    ann(voc, "000005").write_text("<annotation><object>")  # never parsed: the limit is reached before
    data = VOC2007(voc, preprocessing=SMALL, limit=3)
    assert [data.sample_id(i) for i in range(len(data))] == [i for i, _ in ITEMS[:3]]
    with pytest.raises(IndexError):
        data[3]


def test_dataloader_batch(voc):
    dm = VOC2007DataModule(voc, preprocessing={"resize_size": 64, "crop_size": 56}, batch_size=4)
    assert dm.hparams.root == voc and dm.hparams.split == "test"
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    batch = batches[0]
    assert batch["image"].shape == (4, 3, 56, 56)
    assert batch["label"].tolist() == [label for _, label in ITEMS[:4]]
    assert batch["index"].tolist() == [0, 1, 2, 3] and batch["id"] == [i for i, _ in ITEMS[:4]]
    assert [len(b) for b in batch["boxes"]] == [2, 2, 3, 3] and len(batch["difficult"]) == 4
    assert batch["counts"]["boxes_clipped"] == 2 + 2 + 0 + 3 and batch["skipped"] == []
    assert sum(len(b["index"]) for b in batches) == len(ITEMS)


@pytest.mark.parametrize("content, match", [
    ("<annotation><object><name>dog</name>", r"000002.xml'?: malformed XML"),
    ("<annotation><object><name>unicorn</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
     "</bndbox></object></annotation>", r"000002.xml'?, <object> 1: unknown class <name> 'unicorn'"),
    ("<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>"
     "</annotation>", r"000002.xml'?, <object> 1: missing or empty <bndbox/ymax>"),
    ("<annotation><object><name>dog</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
     "</bndbox></object></annotation>", r"<bndbox/xmin> is 'a', not a number"),
    ("<annotation><object><name>dog</name><difficult>2</difficult></object></annotation>",
     r"<object> 1: <difficult> is '2', expected 0 or 1"),
    ("<annotations></annotations>", "expected the root element <annotation>"),
])
def test_malformed_annotation(voc, content, match):
    ann(voc, "000002").write_text(content)
    with pytest.raises(AnnotationError, match=match):
        VOC2007(voc, preprocessing=SMALL)


def test_unreadable_annotation_skipped_as_one_item(voc, caplog):
    ann(voc, "000004").unlink()
    with pytest.raises(FileNotFoundError, match=r"Image '000004' of split 'test' has no annotation .*000004.xml"):
        VOC2007(voc, preprocessing=SMALL)
    ann(voc, "000002").write_text("<annotation><object>")
    data = VOC2007(voc, preprocessing=SMALL, on_error="skip")
    ids = [data.sample_id(i) for i in range(len(data))]
    good = [i for i, _ in ITEMS]
    assert ids == good[:2] + ["000002.jpg"] + good[3:5] + ["000004.jpg", good[-1]]
    with caplog.at_level(logging.WARNING):
        batch = collate_samples([data[i] for i in range(len(data))])
    assert batch["index"].tolist() == [0, 1, 3, 4, 6] and batch["counts"]["images_skipped"] == 2
    assert [(s["index"], s["id"]) for s in batch["skipped"]] == [(2, "000002.jpg"), (5, "000004.jpg")]
    assert batch["skipped"][0]["error"].startswith("AnnotationError: ") and "000002.xml" in caplog.text


def test_missing_image_file(voc):
    (voc / "VOC2007" / "JPEGImages" / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"Image '000003' .* has no image file .*000003.jpg"):
        VOC2007(voc, preprocessing=SMALL)
    data = VOC2007(voc, preprocessing=SMALL, on_error="skip")
    assert data.sample_id(3) == "000003.jpg" and data[3]["skipped"]


def test_corrupt_jpeg(voc):
    path = voc / "VOC2007" / "JPEGImages" / "000002.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    data = VOC2007(voc, preprocessing=SMALL)  # parsing at setup does not read images
    data[1]
    with pytest.raises(CorruptImageError, match="000002.jpg"):
        data[2]
    sample = VOC2007(voc, preprocessing=SMALL, on_error="skip")[2]
    assert sample["skipped"] and (sample["index"], sample["id"]) == (2, "000002.jpg#chair")
    assert sample["error"].startswith("CorruptImageError")


def test_size_mismatch(voc):
    Image.new("RGB", (32, 32)).save(voc / "VOC2007" / "JPEGImages" / "000004.jpg")
    with pytest.raises(AnnotationError, match=r"<size> says 64x64 but .*000004.jpg' is 32x32"):
        VOC2007(voc, preprocessing=SMALL)[5]


def test_missing_layout(voc, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*VOCdevkit/\n  `-- VOC2007/"):
        VOC2007(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No VOC2007 folder .* found"):
        VOC2007DataModule(tmp_path / "empty").prepare_data()
    with pytest.raises(FileNotFoundError, match=r"Missing split file .*val.txt'"):
        VOC2007(voc, split="val")
    shutil.rmtree(voc / "VOC2007" / "Annotations")
    with pytest.raises(FileNotFoundError, match=r"(?s)Missing folder .*Annotations'.*JPEGImages/000005.jpg"):
        VOC2007DataModule(voc).setup("predict")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"split": "testing"}, ValueError, r"`split` to be one of \('train', 'val', 'trainval', 'test'\)"),
    ({"include_difficult": "yes"}, ValueError, r"`include_difficult` to be one of \(False, True\)"),
    ({"multi_instance": 1}, ValueError, r"`multi_instance` to be one of \(False, True\)"),
    ({"limit": 0}, ValueError, r"`limit` to be an int > 0"),
    ({"on_error": "ignore"}, ValueError, r"`on_error` to be one of \('raise', 'skip'\)"),
    ({"difficult_subset": 3}, TypeError, r"`difficult_subset` to be a path"),
    ({"root": None}, TypeError, r"`root` to be a path"),
])
def test_bad_arguments(voc, kwargs, error, match):
    kwargs = {"root": voc, **kwargs}
    with pytest.raises(error, match=match):
        VOC2007DataModule(**kwargs)
    with pytest.raises(error, match=match):
        VOC2007(**kwargs)


def test_parse_annotation_converts_one_based_boxes(voc):
    objects = parse_annotation(ann(voc, "000002"))
    assert objects.boxes[0] == (4.0, 8.0, 24.0, 40.0) and objects.size == (64, 64)
    assert objects.labels == (C["chair"], C["chair"], C["bottle"]) and objects.difficult == (False, False, True)


def test_end_to_end_pointing_game(voc, tmp_path):
    import pytorch_lightning as pl
    from torchvision.models import resnet18

    from benchmark.runtime.module import ExplainerModule

    torch.manual_seed(0)
    dm = VOC2007DataModule(voc, preprocessing=SMALL, batch_size=4)
    dm.setup("predict")
    loader = DataLoader(dm.dataset, batch_size=4, collate_fn=collate_samples)
    module = ExplainerModule(resnet18(num_classes=20), ["gradcam", "center"], metrics=["pointing_game"],
                             input_size=(3, 56, 56))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False)
    records = [r for batch in trainer.predict(module, dataloaders=loader) for r in batch]
    assert sorted({(r["index"], r["method"]) for r in records}) == [(i, m) for i in range(len(ITEMS))
                                                                    for m in ("center", "gradcam")]
    assert {r["index"]: r["target"] for r in records} == {i: label for i, (_, label) in enumerate(ITEMS)}
    rows = {(r["method"], r["metric"]): r for r in module.results}
    assert {m for m, _ in rows} == {"gradcam", "center"}
    assert {"pointing_game_accuracy", "pointing_game_overall"} <= {k for _, k in rows}
    # centre of a 56x56 map: the first of the 4 tied centre pixels, (row 27, col 27); hit if an object pixel
    # is closer than 15 px. dog: cols 0..3 -> miss; 000001 person: cols 44..55 -> miss; chair (cols 0..19),
    # car (cols 36..55), 000003 person, cat, aeroplane: hit; horse: no box left -> undefined (omitted).
    hits = {"dog": [0], "person": [0, 1], "chair": [1], "car": [1], "cat": [1], "aeroplane": [1]}
    per_class = [sum(h) / len(h) for h in hits.values()]
    center = rows[("center", "pointing_game_accuracy")]
    assert center["value"] == pytest.approx(100 * sum(per_class) / len(per_class))  # 75.0
    assert center["value"] == pytest.approx(75.0) and center["n_invalid"] == 1
    assert rows[("center", "pointing_game_overall")]["value"] == pytest.approx(100 * 5 / 7)
    assert math.isfinite(rows[("gradcam", "pointing_game_accuracy")]["value"])


def test_skipped_image_reaches_module_report(voc, tmp_path, caplog):
    import pytorch_lightning as pl
    from torchvision.models import resnet18

    from benchmark.runtime.module import ExplainerModule

    ann(voc, "000004").write_text("<annotation><object><name>cat</name>")
    dataset = VOC2007(voc, preprocessing=SMALL, on_error="skip")
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate_samples)  # the marker alone in a batch
    module = ExplainerModule(resnet18(num_classes=20), ["center"], metrics=["pointing_game"], input_size=(3, 56, 56))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False)
    with caplog.at_level(logging.WARNING):
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    report = module.data_report
    assert [(s["index"], s["id"]) for s in report["skipped"]] == [(5, "000004.jpg")]
    assert "000004.xml" in report["skipped"][0]["error"] and report["counts"]["images_skipped"] == 1
    rows = {r["metric"]: r for r in module.results}
    assert rows["pointing_game_accuracy"]["n"] == 6  # dog, person x2, chair, car, aeroplane


def test_module_gets_the_difficult_subset_flags(voc, tmp_path):
    import pytorch_lightning as pl
    from torchvision.models import resnet18

    from benchmark.runtime.module import ExplainerModule

    path = tmp_path / "difficult.txt"
    path.write_text("000001\t" + "\t".join("1" if c == C["person"] else "0" for c in range(20)) + "\n000003\n")
    loader = DataLoader(VOC2007(voc, preprocessing=SMALL, difficult_subset=path), batch_size=3,
                        collate_fn=collate_samples)
    module = ExplainerModule(resnet18(num_classes=20), ["center"], metrics=["pointing_game"], input_size=(3, 56, 56))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    rows = {r["metric"]: r["value"] for r in module.results}
    # flagged: 000001 person (centre misses), 000003 car and person (hits) -> class mean (0.5 + 1) / 2
    assert rows["pointing_game_difficult_accuracy"] == pytest.approx(75.0)
    assert rows["pointing_game_accuracy"] == pytest.approx(75.0)


def test_no_images_in_memory(voc):
    data = VOC2007(voc, preprocessing=SMALL)
    assert all(not isinstance(v, (Image.Image, torch.Tensor)) for v in vars(data).values())
    assert os.path.isdir(data.root)
