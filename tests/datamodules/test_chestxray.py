"""ChestX-ray14 datamodule on a mini release written in the official formats (tests/fixtures_chestxray.py)."""
import shutil

import pytest
import torch
import torchvision
from PIL import Image
from pytorch_lightning import Trainer
from torch.utils.data import DataLoader

from benchmark.runtime.module import ExplainerModule
from datamodules import create_datamodule, describe_datamodule, list_datamodules
from datamodules.base import IMAGENET_MEAN, IMAGENET_STD, AnnotationError, as_preprocessing
from datamodules.chestxray import CHESTXRAY14_CLASSES, ChestXray14, ChestXray14DataModule
from datamodules.sample import collate_samples
from tests.fixtures_chestxray import BOX_ROWS, FINDINGS, make_chestxray14

SMALL = as_preprocessing({"crop_size": 64})  # resize 64, crop 64: the whole image, ImageNet mean/std
C = {name: i for i, name in enumerate(CHESTXRAY14_CLASSES)}
ITEMS = [("00000001_000.png", "Atelectasis"), ("00000003_001.png", "Cardiomegaly"), ("00000003_001.png", "Effusion"),
         ("00000002_000.png", "Nodule"), ("00000004_000.png", "Infiltration"), ("00000005_000.png", "Mass")]
# Hand-computed: xyxy = (x, y, x + w, y + h) of BOX_ROWS (1024 pixels) times 224 / 1024 = 0.21875; the Mass box
# (900, 904, 1100, 1104) is clipped to the image (1024) first. Per image, all its boxes in file order.
AT_224 = {"00000001_000.png": [[56.0, 112.0, 84.0, 126.0]],
          "00000003_001.png": [[65.625, 87.5, 153.125, 153.125], [153.125, 131.25, 196.875, 175.0]],
          "00000002_000.png": [[21.875, 21.875, 32.375, 33.25], [131.25, 65.625, 148.75, 78.75]],
          "00000004_000.png": [[43.75, 43.75, 109.375, 109.375]], "00000005_000.png": [[196.875, 197.75, 224.0, 224.0]]}
LAYOUT = r"Expected NIH ChestX-ray14 laid out.*BBox_List_2017\.csv.*images/"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_chestxray14(tmp_path_factory.mktemp("chestxray14"))


@pytest.fixture
def copy(data, tmp_path):
    return shutil.copytree(data, tmp_path / "data")


def samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


def edit_line(root, number, text, name="BBox_List_2017.csv"):
    lines = (root / name).read_text().splitlines()
    lines[number - 1] = text
    (root / name).write_text("\n".join(lines) + "\n")


def test_items_order_labels_ids(data):
    ds = ChestXray14(data, preprocessing=SMALL)
    got = samples(ds)
    assert ds.images_dir == data / "images" and ds.data_entry == data / "Data_Entry_2017.csv"
    assert ds.items == ITEMS and [s["index"] for s in got] == list(range(6))
    assert [s["label"] for s in got] == [0, 1, 2, 5, 3, 4]
    assert [s["id"] for s in got] == [f"{image}#{cls}#{FINDINGS[image]}" for image, cls in ITEMS]
    # all boxes of the image: image 3 has a Cardiomegaly and an Effusion box, image 2 two Nodule boxes
    assert [s["box_labels"].tolist() for s in got] == [[0], [1, 2], [1, 2], [5, 5], [3], [4]]
    assert all(s["image"].shape == (3, 64, 64) and s["boxes"].dtype == torch.float32 for s in got)
    assert ds.multi_hot(0).tolist() == [float(c in ("Atelectasis", "Effusion")) for c in CHESTXRAY14_CLASSES]
    assert ds.multi_hot(4)[[C["Infiltration"], C["Mass"]]].tolist() == [1.0, 1.0] and ds.multi_hot(4).sum() == 2
    plain = ChestXray14(make_chestxray14(data.parent / "no_entry", data_entry=False), preprocessing=SMALL)
    assert plain.data_entry is None and plain.multi_hot(0) is None
    assert [plain.sample_id(i) for i in range(6)] == [f"{image}#{cls}" for image, cls in ITEMS]


def test_box_scaling_hand_computed(data, tmp_path):
    got = samples(ChestXray14(data))  # default: the whole 256 x 256 image resized to 224 x 224
    for s, (image, _) in zip(got, ITEMS):
        assert s["image"].shape == (3, 224, 224)
        torch.testing.assert_close(s["boxes"], torch.tensor(AT_224[image]), atol=1e-4, rtol=0)
    assert [s["counts"]["boxes_clipped"] for s in got] == [0, 0, 0, 0, 0, 1]
    # the real size: a box x=256, y=512, w=128, h=64 on a 1024 x 1024 image -> (56, 112, 84, 126) at 224
    real = make_chestxray14(tmp_path / "real", size=1024, rows=BOX_ROWS[:1], findings={}, data_entry=False)
    s = ChestXray14(real)[0]
    assert s["image"].shape == (3, 224, 224) and s["boxes"].tolist() == [[56.0, 112.0, 84.0, 126.0]]


def test_infiltrate_is_infiltration_and_classes_order(data):
    ds = ChestXray14(data, preprocessing=SMALL)
    assert "Infiltrate" in (data / "BBox_List_2017.csv").read_text()
    assert ds.items[4] == ("00000004_000.png", "Infiltration") and ds[4]["label"] == 3 == C["Infiltration"]
    order = list(reversed(CHESTXRAY14_CLASSES))
    rev = ChestXray14(data, classes=order, preprocessing=SMALL)
    assert [s["label"] for s in samples(rev)] == [13, 12, 11, 8, 10, 9]
    assert rev[1]["box_labels"].tolist() == [12, 11] and rev.multi_hot(0)[[13, 11]].tolist() == [1.0, 1.0]
    with pytest.raises(AnnotationError, match=r"BBox_List_2017\.csv, line 8: unknown Finding Label 'Mass'"):
        ChestXray14(data, classes=[c for c in CHESTXRAY14_CLASSES if c != "Mass"])


def test_grayscale_and_rgba_become_three_equal_channels(copy):
    gray = Image.open(copy / "images" / "00000002_000.png")
    assert gray.mode == "L"
    Image.merge("RGBA", (gray, gray, gray, Image.new("L", gray.size, 7))).save(copy / "images" / "00000002_000.png")
    ds = ChestXray14(copy, preprocessing=SMALL)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    for i in (0, 3):  # grayscale PNG, RGBA PNG
        pixels = ds[i]["image"] * std + mean
        assert pixels.std() > 0.01  # not constant (noise averaged by the 256 -> 64 resize)
        torch.testing.assert_close(pixels[0], pixels[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(pixels[0], pixels[2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("line, text, pattern", [
    (5, "00000003_001.png,Efusion,175.0,150.0,50.0,50.0,,,", r"line 5: unknown Finding Label 'Efusion'"),
    (4, "00000002_000.png,Nodule,abc,25.0,12.0,13.0,,,", r"line 4: field x is 'abc', not a finite number"),
    (7, "00000004_000.png,Infiltrate,50.0,50.0,0,75.0,,,", r"line 7: field w is 0\.0, expected > 0"),
    (8, "00000005_000.png,Mass,225.0,226.0,50.0,-5,,,", r"line 8: field h is -5\.0, expected > 0"),
    (2, "00000001_000.png,Atelectasis,64.0,128.0", r"line 2: expected 6 fields"),
])
def test_bad_rows_name_file_and_line(copy, line, text, pattern):
    edit_line(copy, line, text)
    with pytest.raises(AnnotationError, match=r"BBox_List_2017\.csv, " + pattern):
        ChestXray14(copy, preprocessing=SMALL)


def test_missing_image_and_data_entry_listing(copy):
    edit_line(copy, 6, "00000005_001.png,Mass,5,6,55,M,PA,2500,2048,0.143,0.143,", "Data_Entry_2017.csv")
    assert len(ChestXray14(copy, limit=5)) == 5  # the first 5 items are fine; image 5 is no longer listed
    with pytest.raises(AnnotationError, match=r"line 8: image '00000005_000\.png' is not listed in .*Data_Entry"):
        ChestXray14(copy)
    (copy / "images" / "00000004_000.png").unlink()
    with pytest.raises(AnnotationError, match=r"BBox_List_2017\.csv, line 7: image '00000004_000\.png' not found"):
        ChestXray14(copy)
    ds = ChestXray14(copy, on_error="skip", preprocessing=SMALL)
    assert [s.get("skipped", False) for s in samples(ds)] == [False, False, False, False, True, True]
    assert ds.sample_id(5) == "00000005_000.png#Mass" and ds.multi_hot(5) is None


def test_skip_reaches_the_batch_counted(copy):
    edit_line(copy, 5, "00000003_001.png,Efusion,175.0,150.0,50.0,50.0,,,")
    edit_line(copy, 4, "00000002_000.png,Nodule,abc,25.0,12.0,13.0,,,")
    (copy / "images" / "00000004_000.png").unlink()
    with pytest.raises(AnnotationError, match=r"line 5: unknown .*Pass on_error='skip'"):
        ChestXray14(copy, preprocessing=SMALL)
    ds = ChestXray14(copy, preprocessing=SMALL, on_error="skip")
    assert ds.items[2] == ("00000003_001.png", "Efusion") and len(ds) == 6
    batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=collate_samples)))
    assert batch["index"].tolist() == [0, 1, 5] and batch["counts"]["images_skipped"] == 3
    assert [s["index"] for s in batch["skipped"]] == [2, 3, 4]
    assert batch["skipped"][0]["id"] == "00000003_001.png#Efusion#Cardiomegaly|Effusion"
    assert batch["skipped"][0]["error"].startswith("AnnotationError: ") and "line 5" in batch["skipped"][0]["error"]
    assert "line 4" in batch["skipped"][1]["error"] and "not found" in batch["skipped"][2]["error"]
    assert batch["box_labels"][1].tolist() == [1]  # image 3 keeps its good Cardiomegaly box
    assert batch["counts"]["boxes_clipped"] == 1


def test_missing_files_show_the_layout(copy, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)ChestX-ray14 root .*nowhere.* does not exist.*" + LAYOUT):
        ChestXray14DataModule(tmp_path / "nowhere").prepare_data()
    with pytest.raises(FileNotFoundError, match=r"(?s)images_dir=.*pngs' does not exist.*" + LAYOUT):
        ChestXray14(copy, images_dir=tmp_path / "pngs")
    shutil.rmtree(copy / "images")
    with pytest.raises(FileNotFoundError, match=r"(?s)No image folder.*holds no PNG images.*" + LAYOUT):
        ChestXray14(copy)
    (copy / "BBox_List_2017.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)Missing box list .*BBox_List_2017\.csv'.*" + LAYOUT):
        ChestXray14(copy)


def test_wrong_headers(copy):
    edit_line(copy, 1, "Image Index,Finding Label,Bbox [x,y,w,h],,,".replace("Image Index", "Image"))
    with pytest.raises(AnnotationError, match=r"BBox_List_2017\.csv, line 1: expected the header to start with"):
        ChestXray14(copy)
    edit_line(copy, 1, "Image Index,Finding Label,Bbox [x,y,w,h],,,")
    edit_line(copy, 1, "Image Index,Labels", "Data_Entry_2017.csv")
    with pytest.raises(AnnotationError, match=r"Data_Entry_2017\.csv, line 1: .*'Image Index,Finding Labels'"):
        ChestXray14(copy)


def test_layouts_and_limit(data, tmp_path):
    flat = make_chestxray14(tmp_path / "flat", layout="flat")
    reference = samples(ChestXray14(data, preprocessing=SMALL))
    for ds in (ChestXray14(flat, preprocessing=SMALL), ChestXray14(tmp_path / "flat", images_dir=data / "images",
                                                                   preprocessing=SMALL)):
        for a, b in zip(samples(ds), reference):
            assert a["id"] == b["id"] and torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    limited = ChestXray14(data, limit=3, preprocessing=SMALL)
    assert limited.items == ITEMS[:3] and [s["index"] for s in samples(limited)] == [0, 1, 2]
    assert len(ChestXray14(data, limit=100)) == 6


def test_bad_arguments(data):
    with pytest.raises(TypeError, match="Expected `classes` to be a sequence of class names"):
        ChestXray14DataModule(data, classes="Mass")
    for classes in (["Mass", "Mass"], [], ["Mass", ""]):
        with pytest.raises(ValueError, match=r"Expected `classes` to be non-empty unique names, but got \["):
            ChestXray14(data, classes=classes)
    with pytest.raises(ValueError, match="Expected `limit` to be an int > 0, but got 0"):
        ChestXray14DataModule(data, limit=0)
    with pytest.raises(ValueError, match="on_error"):
        ChestXray14DataModule(data, on_error="ignore")
    with pytest.raises(TypeError, match="Expected `root` to be a path"):
        ChestXray14DataModule(3)


def test_registry_and_dataloader(data):
    assert "chestxray14" in list_datamodules() and "ChestX-ray14" in describe_datamodule("chestxray14")
    dm = create_datamodule("chestxray14", root=data, preprocessing={"crop_size": 64}, batch_size=4, limit=5)
    assert isinstance(dm, ChestXray14DataModule) and dm.hparams.limit == 5
    dm.prepare_data()
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3], [4]]
    assert batches[0]["image"].shape == (4, 3, 64, 64) and batches[0]["label"].tolist() == [0, 1, 2, 5]
    assert [len(b) for b in batches[0]["boxes"]] == [1, 2, 2, 2] and batches[0]["skipped"] == []


def test_trainer_predict_densenet121_localization(data, tmp_path):
    torch.manual_seed(0)
    dm = ChestXray14DataModule(data, preprocessing={"crop_size": 64}, batch_size=3)
    module = ExplainerModule(torchvision.models.densenet121(num_classes=14), ["gradcam"], input_size=(3, 64, 64),
                             metrics={"localization_error": {"threshold": 0.5}})
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                      enable_progress_bar=False, enable_model_summary=False)
    records = [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
    assert sorted(r["index"] for r in records) == list(range(6))
    assert [r["target"] for r in sorted(records, key=lambda r: r["index"])] == [0, 1, 2, 5, 3, 4]
    assert all(r["saliency"].shape == (64, 64) for r in records)
    assert module.metrics["gradcam/localization_error"].threshold == 0.5
    results = {r["metric"]: r for r in module.results}
    assert set(results) == {"localization_error_top1", "localization_error_top5"}
    assert all(r["n"] == 6 and r["n_invalid"] == 0 and 0 <= r["value"] <= 100 for r in results.values())
    assert module.data_report["counts"]["boxes_clipped"] == 1 and module.data_report["skipped"] == []
