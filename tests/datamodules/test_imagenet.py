"""ImageNet validation datamodule on a mini ILSVRC2012 written in the official formats."""
import shutil
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning import Trainer
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.models import resnet18
from torchvision.transforms import v2

from benchmark.runtime.module import ExplainerModule
from datamodules.base import AnnotationError
from datamodules.imagenet import ImageNetAnnotations, ImageNetVal, ImageNetValDataModule
from datamodules.images import CorruptImageError
from datamodules.sample import collate_samples

SYNSETS = [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
           ("n01484850", "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"),
           ("n01491361", "tiger shark, Galeocerdo cuvieri")]
# number -> ((width, height), synset, boxes as in the files: inclusive xmin ymin xmax ymax). No number 7.
IMAGES = {
    1: ((500, 375), "n01443537", [(100, 50, 299, 249)]),
    2: ((30, 20), "n01440764", [(0, 0, 29, 19)]),  # smaller than the crop
    3: ((64, 96), "n01484850", [(4, 10, 40, 90), (30, 0, 63, 30)]),  # portrait
    4: ((70, 70), "n01491361", [(5, 5, 60, 60), (50, 10, 20, 30), (60, 60, 90, 80)]),  # invalid, outside
    5: ((120, 40), "n01440764", [(0, 0, 15, 39), (50, 0, 69, 39)]),  # first one cropped away
    6: ((50, 50), "n01443537", [(10, 10, 39, 39)]),
    8: ((90, 60), "n01484850", [(0, 0, 89, 59), (20, 20, 40, 40), (70, 5, 80, 15)]),
}
SMALL = {"resize_size": 64, "crop_size": 56}
XML_DIR = "ILSVRC2012_bbox_val_v3/val"


def stem(number):
    return f"ILSVRC2012_val_{number:08d}"


def xml_text(number, size, synset, boxes):
    objects = "".join(
        f"\t<object>\n\t\t<name>{synset}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n" for b in boxes)
    return (f"<annotation>\n\t<folder>val</folder>\n\t<filename>{stem(number)}</filename>\n\t<source>\n"
            f"\t\t<database>ILSVRC_2012</database>\n\t</source>\n\t<size>\n\t\t<width>{size[0]}</width>\n"
            f"\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
            f"{objects}</annotation>\n")


def csv_row(number, synset, boxes):
    return f"{stem(number)}," + "".join(f"{synset} {' '.join(map(str, b))} " for b in boxes)


def make_data(base, layout="flat", images=IMAGES):
    """``base/val`` images, ``base/LOC_*`` files and ``base/ILSVRC2012_bbox_val_v3/val`` XML."""
    base = Path(base)
    (base / XML_DIR).mkdir(parents=True)
    (base / "LOC_synset_mapping.txt").write_text("".join(f"{s} {n}\n" for s, n in SYNSETS))
    rows = ["ImageId,PredictionString"] + [csv_row(k, v[1], v[2]) for k, v in sorted(images.items(), reverse=True)]
    (base / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    for number, (size, synset, boxes) in images.items():
        folder = base / "val" / (synset if layout == "folders" else "")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{stem(number)}.JPEG", quality=90)
        (base / XML_DIR / f"{stem(number)}.xml").write_text(xml_text(number, size, synset, boxes))
    return base


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("imagenet_folders"), layout="folders")


@pytest.fixture
def copy(data, tmp_path):
    return Path(shutil.copytree(data, tmp_path / "data"))


def samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def reference_boxes(size, boxes, resize, crop):
    """Independent reference: torchvision BoundingBoxes through Resize + CenterCrop, clamped, empties dropped."""
    edges = torch.tensor(boxes, dtype=torch.float64) + torch.tensor([0, 0, 1, 1])
    valid = (edges[:, 2] > edges[:, 0]) & (edges[:, 3] > edges[:, 1])
    bb = tv_tensors.BoundingBoxes(edges[valid], format="XYXY", canvas_size=(size[1], size[0]))
    bb = v2.CenterCrop(crop)(v2.Resize(resize)(v2.functional.clamp_bounding_boxes(bb)))
    out = v2.functional.clamp_bounding_boxes(bb).as_subclass(torch.Tensor)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])].float()


def test_labels_classes_and_index(data):
    ds = ImageNetVal(data / "val", preprocessing=SMALL)
    assert ds.classes == [s for s, _ in SYNSETS] and ds.class_names[0] == "tench, Tinca tinca"
    assert ds.layout == "flat" and ds.annotation_format == "csv"
    assert ds.annotations == data / "LOC_val_solution.csv" and len(ds) == len(IMAGES)
    got = samples(ds)
    assert [s["id"] for s in got] == [f"{stem(k)}.JPEG" for k in sorted(IMAGES)]
    assert [s["index"] for s in got] == [k - 1 for k in sorted(IMAGES)]  # number - 1: the gap at 7 is kept
    assert [s["label"] for s in got] == [ds.classes.index(IMAGES[k][1]) for k in sorted(IMAGES)]
    for s in got:
        assert s["image"].shape == (3, 56, 56) and s["image"].dtype == torch.float32
        assert set(s["box_labels"].tolist()) <= {s["label"]}


@pytest.mark.parametrize("fmt", ["csv", "xml"])
def test_boxes_match_torchvision_reference(data, fmt):
    annotations = data / ("LOC_val_solution.csv" if fmt == "csv" else XML_DIR)
    ds = ImageNetVal(data / "val", annotations=annotations, preprocessing=SMALL)
    assert ds.annotation_format == fmt
    counts = {}
    for s, number in zip(samples(ds), sorted(IMAGES)):
        size, _, boxes = IMAGES[number]
        torch.testing.assert_close(s["boxes"], reference_boxes(size, boxes, 64, 56), atol=1e-4, rtol=0)
        assert s["boxes"].dtype == torch.float32 and len(s["box_labels"]) == len(s["boxes"])
        for key, value in s["counts"].items():
            counts[key] = counts.get(key, 0) + value
    # image 4: one x2 < x1, one reaching outside; image 5: one cropped away; image 8: cut by the crop
    assert counts["boxes_invalid"] == 1 and counts["boxes_dropped"] == 1 and counts["images_without_boxes"] == 0
    assert counts["boxes_clipped"] >= 2


def test_default_preprocessing_hand_arithmetic(data):
    s = ImageNetVal(data / "val", limit=1)[0]  # 500x375 -> Resize(256): 341x256 -> CenterCrop(224) at (58, 16)
    assert s["image"].shape == (3, 224, 224)
    x1, y1, x2, y2 = 100, 50, 299 + 1, 249 + 1  # inclusive last pixel -> pixel edge
    sx, sy = 341 / 500, 256 / 375
    expected = torch.tensor([[x1 * sx - 58, y1 * sy - 16, x2 * sx - 58, y2 * sy - 16]])
    torch.testing.assert_close(s["boxes"], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(s["boxes"], reference_boxes((500, 375), IMAGES[1][2], 256, 224), atol=1e-4, rtol=0)
    edges = ImageNetVal(data / "val", limit=1, box_convention="edges")[0]["boxes"]
    torch.testing.assert_close(edges, torch.tensor([[x1 * sx - 58, y1 * sy - 16, 299 * sx - 58, 249 * sy - 16]]))


def test_formats_and_layouts_give_identical_samples(data, folders):
    csv_flat = samples(ImageNetVal(data / "val", preprocessing=SMALL))
    xml_flat = samples(ImageNetVal(data / "val", annotations=data / XML_DIR, preprocessing=SMALL))
    fold = ImageNetVal(folders / "val", preprocessing=SMALL)
    assert fold.layout == "folders"
    xml_fold = ImageNetVal(folders / "val", annotations=folders / XML_DIR, layout="folders", preprocessing=SMALL)
    for a, b, c, d in zip(csv_flat, xml_flat, samples(fold), samples(xml_fold)):
        assert_same(a, b)
        assert_same(a, c)
        assert_same(a, d)


def test_subsets(data, tmp_path):
    root = data / "val"
    assert [s["index"] for s in samples(ImageNetVal(root, limit=3, preprocessing=SMALL))] == [0, 1, 2]
    assert len(ImageNetVal(root, limit=100, preprocessing=SMALL)) == len(IMAGES)
    first = ImageNetVal(root, subset_size=4, subset_seed=3, preprocessing=SMALL)
    again = ImageNetVal(root, subset_size=4, subset_seed=3, preprocessing=SMALL)
    picked = [first.global_index(i) for i in range(4)]
    assert picked == sorted(picked) == [again.global_index(i) for i in range(4)]
    assert {first.global_index(i) for i in range(4)} <= {k - 1 for k in IMAGES}
    others = [tuple(ImageNetVal(root, subset_size=4, subset_seed=seed).positions) for seed in range(6)]
    assert len(set(others)) > 1
    ids = [stem(8), f"{stem(2)}.JPEG", stem(5)]
    by_list = ImageNetVal(root, ids=ids, preprocessing=SMALL)
    assert [by_list.sample_id(i) for i in range(3)] == [f"{stem(k)}.JPEG" for k in (2, 5, 8)]
    assert [s["index"] for s in samples(by_list)] == [1, 4, 7]  # the global index, whatever the subset
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n\n")
    assert ImageNetVal(root, ids=tmp_path / "ids.txt").positions == by_list.positions
    with pytest.raises(ValueError, match=r"2 of the 3 `ids`.*ILSVRC2012_val_00000007.*nope"):
        ImageNetVal(root, ids=[stem(1), stem(7), "nope"])
    with pytest.raises(ValueError, match="at most one of"):
        ImageNetVal(root, limit=2, ids=[stem(1)])
    with pytest.raises(ValueError, match="subset_size"):
        ImageNetVal(root, subset_size=50)
    with pytest.raises(FileNotFoundError, match="Id list"):
        ImageNetVal(root, ids=tmp_path / "missing.txt")


def test_index_without_official_names(copy):
    for name in ("b.JPEG", "a.JPEG"):
        shutil.copy(copy / "val" / f"{stem(1)}.JPEG", copy / "val" / name)
    rows = ["a,n01440764 1 1 5 5 ", "b,n01443537 1 1 5 5 "]
    with open(copy / "LOC_val_solution.csv", "a") as handle:
        handle.write("\n".join(rows) + "\n")
    ds = ImageNetVal(copy / "val", ids=["b", "a"], preprocessing=SMALL)
    assert [(s["id"], s["index"], s["label"]) for s in samples(ds)] == [("a.JPEG", 7, 0), ("b.JPEG", 8, 1)]


def test_dataloader_batch(data):
    dm = ImageNetValDataModule(data / "val", preprocessing=SMALL, batch_size=4)
    dm.prepare_data()
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 7]]
    first = batches[0]
    assert first["image"].shape == (4, 3, 56, 56) and first["label"].tolist() == [1, 0, 2, 3]
    assert [len(b) for b in first["boxes"]] == [1, 1, 2, 2] and first["skipped"] == []
    assert first["counts"]["boxes_invalid"] == 1 and dm.hparams.batch_size == 4


def test_image_modes_become_rgb(copy):
    modes = {11: Image.new("CMYK", (40, 30), (10, 20, 30, 40)), 12: Image.new("L", (40, 30), 90),
             13: Image.new("P", (40, 30), 3), 14: Image.new("RGBA", (40, 30), (1, 2, 3, 4)),
             15: Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16))}
    rows = []
    for number, image in modes.items():
        image.save(copy / "val" / f"{stem(number)}.JPEG", format="JPEG" if number < 13 else "PNG")
        rows.append(csv_row(number, "n01440764", [(1, 1, 20, 20)]))
    with open(copy / "LOC_val_solution.csv", "a") as handle:
        handle.write("\n".join(rows) + "\n")
    ds = ImageNetVal(copy / "val", ids=[stem(n) for n in modes], preprocessing=SMALL)
    for s in samples(ds):
        assert s["image"].shape == (3, 56, 56) and len(s["boxes"]) == 1


def test_corrupt_images_raise_or_skip(copy):
    jpeg = (copy / "val" / f"{stem(3)}.JPEG").read_bytes()
    (copy / "val" / f"{stem(3)}.JPEG").write_bytes(jpeg[: len(jpeg) // 2])
    (copy / "val" / f"{stem(4)}.JPEG").write_bytes(b"this is not an image")
    ds = ImageNetVal(copy / "val", preprocessing=SMALL)
    for i, number in ((2, 3), (3, 4)):
        with pytest.raises(CorruptImageError, match=stem(number)):
            ds[i]
    skipping = ImageNetVal(copy / "val", preprocessing=SMALL, on_error="skip")
    batch = next(iter(DataLoader(skipping, batch_size=len(IMAGES), collate_fn=collate_samples)))
    assert [s["index"] for s in batch["skipped"]] == [2, 3] and batch["counts"]["images_skipped"] == 2
    assert batch["skipped"][0]["error"].startswith("CorruptImageError") and batch["index"].tolist() == [0, 1, 4, 5, 7]


def test_malformed_xml(copy):
    xml = copy / XML_DIR
    (xml / f"{stem(1)}.xml").write_text("<annotation><size><width>500</width></size><object>")
    bad_number = xml_text(2, (30, 20), "n01440764", [(1, 2, 3, 4)]).replace("<ymin>2", "<ymin>x")
    (xml / f"{stem(2)}.xml").write_text(bad_number)
    (xml / f"{stem(3)}.xml").write_text(xml_text(3, (64, 96), "n01484850", [(1, 2, 3, 4)]).replace("ymax", "yMax"))
    (xml / f"{stem(4)}.xml").write_text(xml_text(4, (70, 70), "n09999999", [(1, 2, 3, 4)]))
    (xml / f"{stem(5)}.xml").write_text(xml_text(5, (121, 40), "n01440764", [(1, 2, 3, 4)]))
    (xml / f"{stem(6)}.xml").write_text(xml_text(6, (50, 50), "n01443537", [(1, 2, 3, 4)]).replace("name>", "nom>"))
    ds = ImageNetVal(copy / "val", annotations=xml, preprocessing=SMALL)
    expected = [rf"{stem(1)}\.xml: malformed XML", rf"{stem(2)}\.xml, <object> 1, <bndbox>: <ymin> is 'x'",
                rf"{stem(3)}\.xml, <object> 1, <bndbox>: <ymax> is missing",
                rf"{stem(4)}\.xml, <object> 1, <name>: unknown synset 'n09999999'",
                rf"{stem(5)}\.xml: <size> says 121x40 but .*{stem(5)}\.JPEG is 120x40",
                rf"{stem(6)}\.xml, <object> 1: <name> is missing"]
    for i, pattern in enumerate(expected):
        with pytest.raises(AnnotationError, match=pattern):
            ds[i]
    skipped = samples(ImageNetVal(copy / "val", annotations=xml, preprocessing=SMALL, on_error="skip"))
    assert [s.get("skipped", False) for s in skipped] == [True] * 6 + [False]


def test_malformed_csv(copy):
    path = copy / "LOC_val_solution.csv"
    lines = path.read_text().splitlines()  # line 2 is image 8, line 3 image 6, ... (reverse order)
    lines[1] = f"{stem(8)},n01484850 0 0 89"
    lines[2] = f"{stem(6)},n01443537 10 ten 39 39 "
    lines[3] = f"{stem(5)},n01440764 0 0 15 39 n09999999 50 0 69 39 "
    lines[4] = f"{stem(4)},n01491361 5 5 60 60,extra"
    del lines[-1]  # image 1 has no annotation
    path.write_text("\n".join(lines) + "\n")
    ds = ImageNetVal(copy / "val", preprocessing=SMALL)
    expected = {0: rf"{stem(1)}\.JPEG: no boxes in .*no ImageId '{stem(1)}'.*label is unknown",
                3: r"LOC_val_solution\.csv, line 5: expected 2 fields",
                4: r"line 4, box 2: unknown synset 'n09999999'",
                5: r"LOC_val_solution\.csv, line 3: field PredictionString, box 1: ymin 'ten' is not a number",
                6: r"LOC_val_solution\.csv, line 2: field PredictionString has 4 values"}
    for i, pattern in expected.items():
        with pytest.raises(AnnotationError, match=pattern):
            ds[i]
    assert [len(ds[i]["boxes"]) for i in (1, 2)] == [1, 2]
    path.write_text("\n".join(lines + [csv_row(2, "n01440764", [(1, 1, 5, 5)])]) + "\n")
    with pytest.raises(AnnotationError, match=r"LOC_val_solution\.csv, line 8: the ImageId appears a second time"):
        ImageNetVal(copy / "val", preprocessing=SMALL)[1]
    path.write_text("\n".join(lines + [",n01440764 1 1 5 5"]) + "\n")
    with pytest.raises(AnnotationError, match=r"LOC_val_solution\.csv, line 8: field ImageId is empty"):
        ImageNetVal(copy / "val")
    path.write_text("image,boxes\n")
    with pytest.raises(AnnotationError, match=r"LOC_val_solution\.csv, line 1: expected the header"):
        ImageNetVal(copy / "val")


def test_folder_layout_annotation_cases(folders, tmp_path):
    base = Path(shutil.copytree(folders, tmp_path / "data"))
    (base / XML_DIR / f"{stem(1)}.xml").unlink()  # no annotation: kept, no boxes
    shutil.move(base / "val" / "n01440764" / f"{stem(2)}.JPEG", base / "val" / "n01443537")  # wrong folder
    (base / "val" / "n09999999").mkdir()
    shutil.move(base / "val" / "n01440764" / f"{stem(5)}.JPEG", base / "val" / "n09999999")
    ds = ImageNetVal(base / "val", annotations=base / XML_DIR, preprocessing=SMALL)
    first = ds[0]
    assert first["label"] == 1 and first["boxes"].shape == (0, 4) and first["counts"]["images_without_boxes"] == 1
    with pytest.raises(AnnotationError, match="class folder n01443537 but .* says n01440764"):
        ds[1]
    with pytest.raises(AnnotationError, match="class folder 'n09999999' is not a synset"):
        ds[4]
    batch = collate_samples(samples(ImageNetVal(base / "val", annotations=base / XML_DIR, on_error="skip",
                                                preprocessing=SMALL)))
    assert [len(b) for b in batch["boxes"]][:1] == [0] and [s["index"] for s in batch["skipped"]] == [1, 4]


def test_folder_layout_refuses_a_second_box_of_another_class(folders, tmp_path):
    """ImageNet val has one class per image: a box of another class after one of the folder's class is refused
    too (before, only the first box was compared with the folder)."""
    base = Path(shutil.copytree(folders, tmp_path / "data"))
    xml = base / XML_DIR / f"{stem(1)}.xml"  # folder n01443537, one box of it
    text = xml.read_text()
    second = xml_text(1, (500, 375), "n01491361", [(0, 0, 9, 9)]).split("<segmented>0</segmented>\n")[1]
    xml.write_text(text.replace("</annotation>\n", second))
    ds = ImageNetVal(base / "val", annotations=base / XML_DIR, preprocessing=SMALL)
    with pytest.raises(AnnotationError, match="class folder n01443537 but .* says n01491361"):
        ds[0]


def test_missing_files_show_the_layout(copy):
    with pytest.raises(FileNotFoundError, match=r"(?s)root=.*nowhere.*LOC_synset_mapping\.txt.*\|-- "):
        ImageNetVal(copy / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"(?s)Annotations 'x\.csv'.*ILSVRC2012_bbox_val_v3/.*official boxes"):
        ImageNetVal(copy / "val", annotations="x.csv")
    (copy / "LOC_synset_mapping.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)Synset mapping \(LOC_synset_mapping\.txt\).*`-- val/"):
        ImageNetVal(copy / "val")
    dm = ImageNetValDataModule(copy / "val")
    with pytest.raises(FileNotFoundError, match="Synset mapping"):
        dm.prepare_data()
    (copy / "LOC_val_solution.csv").unlink()
    shutil.rmtree(copy / XML_DIR)
    with pytest.raises(FileNotFoundError, match=r"Annotations \(LOC_val_solution\.csv or an XML directory\)"):
        ImageNetVal(copy / "val", synset_mapping=copy / "nothing.txt")
    shutil.rmtree(copy / "val")
    (copy / "val").mkdir()
    (copy / "mapping.txt").write_text("n01440764 tench, Tinca tinca\n")
    with pytest.raises(FileNotFoundError, match="ILSVRC2012 validation images"):
        ImageNetVal(copy / "val", annotations=copy, synset_mapping=copy / "mapping.txt")


def test_bad_arguments(data):
    root = data / "val"
    with pytest.raises(ValueError, match=r"`layout` to be one of \('auto', 'flat', 'folders'\)"):
        ImageNetValDataModule(root, layout="tree")
    with pytest.raises(ValueError, match=r"`box_convention` to be one of \('inclusive', 'edges'\)"):
        ImageNetVal(root, box_convention="xywh")
    with pytest.raises(ValueError, match=r"`on_error` to be one of"):
        ImageNetValDataModule(root, on_error="ignore")
    with pytest.raises(TypeError, match="`limit` to be an int"):
        ImageNetValDataModule(root, limit="3")
    with pytest.raises(ValueError, match="`subset_size` to be an int > 0"):
        ImageNetVal(root, subset_size=0)
    with pytest.raises(TypeError, match="`root` to be a path"):
        ImageNetValDataModule(3)
    with pytest.raises(TypeError, match="`ids`"):
        ImageNetVal(root, ids=[1, 2])
    with pytest.raises(ValueError, match="is predict-only"):
        ImageNetValDataModule(root).setup("fit")


def test_synset_mapping_errors(copy):
    mapping = copy / "LOC_synset_mapping.txt"
    mapping.write_text("n01440764 tench, Tinca tinca\nImageId,PredictionString\n")
    with pytest.raises(AnnotationError, match=r"LOC_synset_mapping\.txt, line 2: expected 'n<8 digits>"):
        ImageNetVal(copy / "val")
    mapping.write_text("n01440764 tench\n\nn01440764 tench\n")
    with pytest.raises(AnnotationError, match=r"line 3: synset n01440764 is listed twice"):
        ImageNetVal(copy / "val")


def test_annotations_mapping(copy):
    mapping, edges = copy / "LOC_synset_mapping.txt", torch.tensor([0.0, 0, 1, 1], dtype=torch.float64)  # + 1: edges
    csv, xml = ImageNetAnnotations(copy / "LOC_val_solution.csv", mapping), ImageNetAnnotations(copy / XML_DIR, mapping)
    assert (csv.format, xml.format, xml.classes) == ("csv", "xml", [s for s, _ in SYNSETS])
    assert sorted(csv) == list(xml) == [stem(k) for k in sorted(IMAGES)] and len(csv) == len(xml) == len(IMAGES)
    for number, (_, synset, boxes) in IMAGES.items():
        for ann, key in product((csv, xml), (stem(number), f"{stem(number)}.JPEG")):  # CSV = XML, with/without .JPEG
            assert key in ann and ann[key][1] == [xml.classes.index(synset)] * len(boxes)
            assert ann[key][0].dtype == torch.float64 and torch.equal(ann[key][0], torch.tensor(boxes) + edges)
    for ann, missing in product((csv, xml), (stem(7), f"{stem(7)}.JPEG", 3)):
        assert missing not in ann and ann.get(missing) is None and pytest.raises(KeyError, ann.__getitem__, missing)
    assert ImageNetAnnotations(copy / XML_DIR, mapping, "edges")[stem(1)][0].tolist() == [[100, 50, 299, 249]]
    assert xml.read(stem(1)).size == (500, 375) and xml.read(stem(7)).where.endswith(f"{stem(7)}.xml (no such file)")
    (copy / XML_DIR / f"{stem(2)}.xml").write_text(xml_text(2, (30, 20), "n09999999", [(1, 2, 3, 4)]))
    with pytest.raises(AnnotationError, match=rf"{stem(2)}\.xml, <object> 1, <name>: unknown synset 'n09999999'"):
        xml.get(f"{stem(2)}.JPEG")
    with pytest.raises(FileNotFoundError, match="Synset mapping 'nothing.txt' not found"):
        ImageNetAnnotations(copy / XML_DIR, "nothing.txt")


def test_trainer_predict_every_index_once(data, tmp_path):
    dm = ImageNetValDataModule(data / "val", annotations=data / XML_DIR, preprocessing=SMALL, batch_size=3)
    module = ExplainerModule(resnet18(num_classes=4), ["gradcam"], input_size=(3, 56, 56))
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                      enable_progress_bar=False, enable_model_summary=False)
    records = [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
    assert sorted(r["index"] for r in records) == [k - 1 for k in sorted(IMAGES)]
    assert all(r["saliency"].shape == (56, 56) for r in records)
