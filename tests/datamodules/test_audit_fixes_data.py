"""Audit fixes on the dataset side, each checked against an independent reference.

1. HFStream + ILSVRC XML: an image whose size is not the XML ``<size>``, or whose label is not its boxes'
   class, is refused as :class:`~datamodules.imagenet.ImageNetVal` (the peer reader) refuses it.
2. Hub ``imagenet-1k`` names (``ILSVRC2012_val_00000001_n01751748.JPEG``, the loading script's
   "<IMAGE_FILENAME>_<SYNSET_ID>.JPEG") find their ``LOC_val_solution.csv`` boxes; boxes hand-computed.
3. ChestX-ray14: CHESTXRAY14_CLASSES is CheXNet's order (arnoweng/CheXNet ``CLASS_NAMES``), not
   torchxrayvision's (``xrv.datasets.default_pathologies``, 18 names), and the docs say so.
4. 32-bit integer images: values in [0, 65535] are 16-bit data (hand: v * 255 / 65535); others are refused.
"""
import io
import logging
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

import datamodules.chestxray as chestxray
from datamodules.chestxray import CHESTXRAY14_CLASSES, ChestXray14
from datamodules.errors import AnnotationError
from datamodules.hf_stream import HFStream
from datamodules.imagenet import ImageNetVal
from datamodules.imagenet_annotations import ImageNetAnnotations
from datamodules.images import CorruptImageError, load_image, to_rgb
from datamodules.sample import collate_samples

DOCS = Path(__file__).resolve().parents[2] / "docs" / "datamodules.md"
# 32 x 32 images, resize 32 / crop 32: the transform leaves the geometry as it is (boxes unchanged)
SAME = {"resize_size": 32, "crop_size": 32}
MAPPING = "n01440764 tench\nn01751748 sea snake\n"


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory, monkeypatch):
    """Builders' lock files go to a temporary cache, not ~/.cache/huggingface."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_cache")


def _parquet(path, images, names, labels):
    rows = []
    for image, name in zip(images, names):
        data = io.BytesIO()
        image.save(data, "PNG")
        rows.append({"bytes": data.getvalue(), "path": name})
    table = datasets.Dataset.from_dict({"image": rows, "label": labels}).cast_column("image", datasets.Image())
    table.to_parquet(str(path))
    return str(path)


def _xml(folder, number, size, synset, box):
    xml = (f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size><object>"
           f"<name>{synset}</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax>"
           f"<ymax>{box[3]}</ymax></bndbox></object></annotation>")
    folder.mkdir(exist_ok=True)
    (folder / f"ILSVRC2012_val_{number:08d}.xml").write_text(xml)


@pytest.fixture
def ilsvrc(tmp_path):
    (tmp_path / "LOC_synset_mapping.txt").write_text(MAPPING)
    _xml(tmp_path / "xml", 1, (32, 32), "n01751748", (2, 3, 9, 11))   # the streamed copy is 16 x 16
    _xml(tmp_path / "xml", 2, (32, 32), "n01751748", (4, 4, 19, 27))  # full size: accepted
    return tmp_path


def _stream(root, data, **kwargs):
    return HFStream("parquet", "train", data_files=data, annotations=str(root / kwargs.pop("ann", "xml")),
                    synset_mapping=str(root / "LOC_synset_mapping.txt"), preprocessing=SAME, **kwargs)


# --- 1. XML <size> and the row's label, as ImageNetVal checks them ---------------------------------------------

def test_resized_copy_refused_like_imagenet_val(ilsvrc):
    images = [Image.new("RGB", (16, 16), 90), Image.new("RGB", (32, 32), 90)]
    names = ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    data = _parquet(ilsvrc / "v.parquet", images, names, [1, 1])
    # the peer reader refuses the same resized copy
    (ilsvrc / "flat").mkdir()
    images[0].save(ilsvrc / "flat" / names[0], "PNG")
    with pytest.raises(AnnotationError, match="boxes of resized copies are not supported"):
        ImageNetVal(ilsvrc / "flat", ilsvrc / "xml", ilsvrc / "LOC_synset_mapping.txt")[0]
    with pytest.raises(AnnotationError, match=r"<size> says 32x32 but image 'ILSVRC2012_val_00000001\.JPEG' is "
                                              r"16x16; boxes of resized copies are not supported"):
        list(_stream(ilsvrc, data))
    skipped, kept = list(_stream(ilsvrc, data, on_error="skip"))
    assert skipped["skipped"] and skipped["index"] == 0 and "resized copies" in skipped["error"]
    assert collate_samples([skipped, kept])["counts"]["images_skipped"] == 1
    # full size: inclusive (4, 4, 19, 27) -> pixel edges (4, 4, 20, 28), geometry unchanged
    assert kept["boxes"].tolist() == [[4.0, 4.0, 20.0, 28.0]] and kept["box_labels"].tolist() == [1]


def test_label_disagreeing_with_box_class_refused_like_imagenet_val(ilsvrc):
    image = Image.new("RGB", (32, 32), 90)
    name = "ILSVRC2012_val_00000002.JPEG"
    data = _parquet(ilsvrc / "v.parquet", [image], [name], [0])  # label 0 = tench; the XML says sea snake
    (ilsvrc / "folders" / "n01440764").mkdir(parents=True)
    image.save(ilsvrc / "folders" / "n01440764" / name, "PNG")
    with pytest.raises(AnnotationError, match="class folder n01440764 but .* says n01751748"):
        ImageNetVal(ilsvrc / "folders", ilsvrc / "xml", ilsvrc / "LOC_synset_mapping.txt")[0]
    with pytest.raises(AnnotationError, match=r"label 0 \(n01440764\) but .*ILSVRC2012_val_00000002\.xml has boxes "
                                              r"of n01751748.*pass the synset_mapping whose line order"):
        list(_stream(ilsvrc, data))
    (skipped,) = list(_stream(ilsvrc, data, on_error="skip"))
    assert skipped["skipped"] and "has boxes of n01751748" in skipped["error"]
    (unlabelled,) = list(_stream(ilsvrc, data, label_column=None))  # no label: nothing to compare
    assert unlabelled["label"] == -1 and unlabelled["box_labels"].tolist() == [1]


# --- 2. hub imagenet-1k file names ---------------------------------------------------------------------------------

@pytest.fixture
def kaggle(ilsvrc):
    (ilsvrc / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n"
                                                 "ILSVRC2012_val_00000001,n01751748 2 3 9 11 \n"
                                                 "ILSVRC2012_val_00000002,n01440764 0 0 31 31 \n")
    return ilsvrc


def test_hub_names_find_their_boxes(kaggle, caplog):
    names = ["ILSVRC2012_val_00000001_n01751748.JPEG", "ILSVRC2012_val_00000002_n01440764.JPEG",
             "ILSVRC2012_val_00000003_n01440764.JPEG", "ILSVRC2012_val_00000004_n01440764.JPEG"]
    data = _parquet(kaggle / "v.parquet", [Image.new("RGB", (32, 32), 90)] * 4, names, [1, 0, 0, 0])
    with caplog.at_level(logging.WARNING, logger="datamodules.hf_stream"):
        samples = list(_stream(kaggle, data, ann="LOC_val_solution.csv"))
    # hand: inclusive (2, 3, 9, 11) -> (2, 3, 10, 12); (0, 0, 31, 31) -> the whole 32 x 32 image
    assert samples[0]["boxes"].tolist() == [[2.0, 3.0, 10.0, 12.0]] and samples[0]["box_labels"].tolist() == [1]
    assert samples[1]["boxes"].tolist() == [[0.0, 0.0, 32.0, 32.0]] and samples[1]["box_labels"].tolist() == [0]
    assert [s["counts"]["images_without_boxes"] for s in samples] == [0, 0, 1, 1]
    misses = [r for r in caplog.records if "No annotation entry" in r.getMessage()]
    assert len(misses) == 1 and "ILSVRC2012_val_00000003_n01440764.JPEG" in misses[0].getMessage()
    # a plain mapping keyed by ImageId is found the same way
    table = {"ILSVRC2012_val_00000001": ([[1, 1, 5, 5]], [7])}
    (sample,) = list(HFStream("parquet", "train", data_files=data, annotations=table, preprocessing=SAME, limit=1))
    assert sample["boxes"].tolist() == [[1.0, 1.0, 5.0, 5.0]] and sample["box_labels"].tolist() == [7]


def test_hub_name_synset_must_match_the_boxes(kaggle):
    ann = ImageNetAnnotations(kaggle / "LOC_val_solution.csv", kaggle / "LOC_synset_mapping.txt")
    assert ann["ILSVRC2012_val_00000001_n01751748.JPEG"][1] == [1]
    with pytest.raises(AnnotationError, match=r"names synset n01440764 but .*line 2 has boxes of n01751748"):
        ann["ILSVRC2012_val_00000001_n01440764.JPEG"]
    with pytest.raises(AnnotationError, match=r"unknown synset 'n09999999'"):
        ann["ILSVRC2012_val_00000001_n09999999.JPEG"]
    data = _parquet(kaggle / "v.parquet", [Image.new("RGB", (32, 32))], ["ILSVRC2012_val_00000001_n01440764.JPEG"],
                    [-1])
    (skipped,) = list(_stream(kaggle, data, ann="LOC_val_solution.csv", on_error="skip"))
    assert skipped["skipped"] and "names synset n01440764" in skipped["error"]


def test_docs_name_the_hub_file_names():
    text = DOCS.read_text()
    assert "ILSVRC2012_val_00000001_n01751748.JPEG" in text
    import datamodules.hf_stream as hf_stream
    assert "ILSVRC2012_val_00000001_n01751748.JPEG" in hf_stream.__doc__
    assert "stored path (``ILSVRC2012_val_00000001.JPEG``)" not in hf_stream.__doc__


# --- 3. ChestX-ray14 class order -----------------------------------------------------------------------------------

# arnoweng/CheXNet model.py, CLASS_NAMES (copied by hand)
CHEXNET = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
           "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
# mlmed/torchxrayvision datasets.py, default_pathologies (copied by hand): the models' 18 outputs
XRV_DEFAULT = ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
               "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
               "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum"]


def test_chestxray_order_is_chexnet_and_docs_say_so():
    assert list(CHESTXRAY14_CLASSES) == CHEXNET
    assert list(CHESTXRAY14_CLASSES) not in (XRV_DEFAULT[:14], sorted(XRV_DEFAULT[:14]))
    claim = re.compile(r"CheXNet\s*/\s*torchxrayvision", re.I)
    source = Path(chestxray.__file__).read_text()
    docs = DOCS.read_text()
    assert not claim.search(source) and not claim.search(docs)
    for text in (chestxray.__doc__, docs):
        assert "default_pathologies" in text and "18 outputs" in text and "classes=" in text


def test_torchxrayvision_head_via_classes(tmp_path):
    rows = ["Image Index,Finding Label,Bbox [x,y,w,h],,,", "00000001_000.png,Cardiomegaly,4,4,8,8,,,",
            "00000001_000.png,Effusion,2,2,4,4,,,"]
    (tmp_path / "BBox_List_2017.csv").write_text("\n".join(rows) + "\n")
    Image.new("L", (32, 32), 90).save(tmp_path / "00000001_000.png")
    chexnet = ChestXray14(tmp_path, preprocessing=SAME)
    xrv = ChestXray14(tmp_path, classes=XRV_DEFAULT, preprocessing=SAME)
    assert [chexnet[i]["label"] for i in range(2)] == [1, 2]  # CheXNet: Cardiomegaly 1, Effusion 2
    assert [xrv[i]["label"] for i in range(2)] == [10, 7]  # positions in default_pathologies


# --- 4. 32-bit integer images ----------------------------------------------------------------------------------------

def test_mode_i_within_16_bits_is_scaled_as_16_bit():
    raw = np.array([[0, 257, 30000, 32896, 60000, 65535]], dtype=np.int32)
    image = Image.fromarray(raw)
    assert image.mode == "I"
    expected = np.rint(raw * 255 / 65535).astype(int).tolist()  # hand: 30000 -> 116.7 -> 117
    assert expected == [[0, 1, 117, 128, 233, 255]]
    assert np.asarray(to_rgb(image))[..., 0].tolist() == expected
    as_16 = Image.fromarray(raw.astype(np.uint16))
    assert np.array_equal(np.asarray(to_rgb(image)), np.asarray(to_rgb(as_16)))


@pytest.mark.parametrize("values", [[0, 70000, 140000], [-5, 10, 20]])
def test_mode_i_outside_16_bits_is_refused(tmp_path, values):
    image = Image.fromarray(np.array([values], dtype=np.int32))
    with pytest.raises(CorruptImageError, match=r"PIL mode 'I'\) values in .*no fixed scale|Convert it"):
        to_rgb(image)
    image.save(tmp_path / "deep.tif")
    with pytest.raises(CorruptImageError, match=r"'.*deep\.tif'.*PIL mode 'I'.*on_error='skip'"):
        load_image(tmp_path / "deep.tif")


def test_mode_i_outside_16_bits_skipped_and_counted(tmp_path):
    tiff = io.BytesIO()
    Image.fromarray(np.full((8, 8), 140000, dtype=np.int32)).save(tiff, "TIFF")
    png = io.BytesIO()
    Image.new("L", (8, 8), 3).save(png, "PNG")
    rows = {"image": [{"bytes": tiff.getvalue(), "path": "deep.tif"}, {"bytes": png.getvalue(), "path": "ok.png"}],
            "label": [0, 1]}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "v.parquet"))
    stream = HFStream("parquet", "train", data_files=str(tmp_path / "v.parquet"), preprocessing={"crop_size": 8})
    with pytest.raises(CorruptImageError, match=r"'deep\.tif'.*PIL mode 'I'"):
        list(stream)
    skipped, kept = list(HFStream("parquet", "train", data_files=str(tmp_path / "v.parquet"),
                                  preprocessing={"crop_size": 8}, on_error="skip"))
    assert skipped["skipped"] and skipped["id"] == "deep.tif" and "PIL mode 'I'" in skipped["error"]
    assert collate_samples([skipped, kept])["counts"]["images_skipped"] == 1
    assert not kept.get("skipped") and kept["id"] == "ok.png"
