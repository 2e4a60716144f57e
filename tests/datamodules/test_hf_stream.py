"""HF streaming datamodule on local Parquet shards and an image folder (offline).

The source: 20 small images of several modes in 4 Parquet shards of 6, 5, 4 and 5 rows. All 4
shards over 2 ranks split by shards; the first 3 (15 rows) split by examples.
"""
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import datasets
import numpy as np
import pyarrow as pa
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torchvision.models import resnet18

from benchmark.runtime.module import ExplainerModule
from datamodules.base import as_preprocessing
from datamodules.hf_stream import HFStream, HFStreamDataModule, _generate
from datamodules.images import CorruptImageError, to_rgb

PREP = as_preprocessing({"resize_size": 64, "crop_size": 56})
SIZES = (6, 5, 4, 5)
MODES = ("RGB", "L", "RGBA", "P", "I;16")


def _image(k):
    rng = np.random.default_rng(k)
    height, width = (16, 16) if k % 3 == 0 else (12 + k % 5, 20 - k % 4)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    mode = MODES[k % len(MODES)]
    if mode == "I;16":
        return Image.fromarray(rgba[..., 0].astype(np.uint16) * 257)
    if mode == "P":
        return Image.fromarray(rgba[..., :3]).convert("P")
    return Image.fromarray(rgba if mode == "RGBA" else rgba[..., :3]).convert(mode)


def _encode(image, fmt="PNG"):
    data = io.BytesIO()
    image.save(data, fmt)
    return data.getvalue()


def _write(path, images, labels, names, paths):
    rows = {"image": [{"bytes": b, "path": p} for b, p in zip(images, paths)], "label": labels, "name": names}
    table = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    if str(path).endswith(".arrow"):  # Arrow IPC stream: a multi-file source without Parquet footers
        with pa.OSFile(str(path), "wb") as handle, pa.ipc.new_stream(handle, table.data.table.schema) as writer:
            writer.write_table(table.data.table)
    else:
        table.to_parquet(str(path))


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory, monkeypatch):
    """Builders' lock files go to a temporary cache, not ~/.cache/huggingface."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_cache")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("parquet")
    encoded = [_encode(_image(k), "JPEG" if k % 5 == 1 else "PNG") for k in range(sum(SIZES))]
    files, arrow_files, start = [], [], 0
    for shard, size in enumerate(SIZES):
        rows = range(start, start + size)
        files.append(str(root / f"val-{shard}.parquet"))
        arrow_files.append(str(root / f"val-{shard}.arrow"))
        for path in (files[-1], arrow_files[-1]):
            _write(path, [encoded[k] for k in rows], [k % 4 for k in rows], [f"name_{k}" for k in rows],
                   [f"img_{k:02d}.png" for k in rows])
        start += size
    return SimpleNamespace(files=files, arrow_files=arrow_files, encoded=encoded, root=root)


def _expected(data):
    return PREP.transform()(to_rgb(Image.open(io.BytesIO(data))))


def _collect(dm, rank=0, world_size=1):
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world_size)
    dm.setup("predict")
    loader = dm.predict_dataloader()
    assert loader.num_workers == dm.num_workers  # enough shards for every worker
    out = []
    for batch in loader:
        out += [(i, name, label, image) for i, name, label, image in
                zip(batch["index"].tolist(), batch["id"], batch["label"].tolist(), batch["image"])]
    return out


def test_stream_matches_source_and_plain_hf_order(source):
    stream = HFStream("parquet", "train", data_files=source.files, preprocessing=PREP)
    assert (stream.num_shards, stream.num_examples) == (4, 20)  # row counts read from the Parquet footers
    samples = list(stream)
    assert [s["index"] for s in samples] == list(range(20))
    assert [s["id"] for s in samples] == [f"img_{k:02d}.png" for k in range(20)]
    assert [s["label"] for s in samples] == [k % 4 for k in range(20)]
    for k, s in enumerate(samples):  # every mode (RGB, L, RGBA, P, I;16; PNG and JPEG) -> RGB
        assert s["image"].shape == (3, 56, 56)
        torch.testing.assert_close(s["image"], _expected(source.encoded[k]), rtol=0, atol=0)
    plain = datasets.load_dataset("parquet", data_files=source.files, split="train", streaming=True)
    plain = plain.cast_column("image", datasets.Image(decode=False))
    assert [e["image"]["path"] for e in plain] == [s["id"] for s in samples]


def test_rgba_keeps_colour_channels(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    _write(tmp_path / "a.parquet", [_encode(Image.fromarray(rgba))], [0], ["a"], ["a.png"])
    prep = as_preprocessing({"crop_size": 8, "mean": [0] * 3, "std": [1] * 3})
    (sample,) = HFStream("parquet", "train", data_files=str(tmp_path / "a.parquet"), preprocessing=prep)
    expected = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1) / 255  # alpha dropped, colours kept as stored
    torch.testing.assert_close(sample["image"].as_subclass(torch.Tensor), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_files", [4, 3], ids=["shards", "examples"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_global_index_over_ranks_and_workers(source, n_files, num_workers):
    files = source.files[:n_files]
    whole = _collect(HFStreamDataModule("parquet", "train", data_files=files, preprocessing=PREP))
    single = {i: (name, label) for i, name, label, _ in whole}
    parts = [_collect(HFStreamDataModule("parquet", "train", data_files=files, preprocessing=PREP, batch_size=3,
                                         num_workers=num_workers), rank, 2) for rank in (0, 1)]
    assert all(parts)
    if n_files == 4:  # whole shards: rank 0 reads shards 0 and 2 (rows 0-5, 11-14)
        assert sorted(i for i, *_ in parts[0]) == [*range(0, 6), *range(11, 15)]
    else:  # every rank reads all shards, keeps every 2nd example
        assert [len(part) for part in parts] == [8, 7]
    indices = sorted(i for part in parts for i, *_ in part)
    assert indices == list(range(sum(SIZES[:n_files]))) == sorted(single)  # each index once, none missing
    for i, name, label, image in parts[0] + parts[1]:
        assert (name, label) == single[i] == (f"img_{i:02d}.png", i % 4)
        torch.testing.assert_close(image, _expected(source.encoded[i]), rtol=0, atol=0)


def test_source_without_footers_is_one_counted_shard(source):
    """Arrow files: no row counts, so one logical shard; still global indices on every rank."""
    stream = HFStream("arrow", "train", data_files=source.arrow_files, preprocessing=PREP, limit=13)
    assert (stream.num_shards, stream.num_examples) == (1, None)
    assert [(s["index"], s["id"]) for s in stream] == [(k, f"img_{k:02d}.png") for k in range(13)]
    parts = [_collect(HFStreamDataModule("arrow", "train", data_files=source.arrow_files, preprocessing=PREP,
                                         batch_size=4), rank, 2) for rank in (0, 1)]
    assert [sorted(i for i, *_ in part) for part in parts] == [list(range(0, 20, 2)), list(range(1, 20, 2))]
    assert all(name == f"img_{i:02d}.png" for part in parts for i, name, *_ in part)


def test_footer_row_count_mismatch_raises(source):
    base = datasets.load_dataset("parquet", data_files=source.files[:1], split="train", streaming=True)
    assert len(list(_generate([(0, 0, 6)], base, None))) == 6
    with pytest.raises(RuntimeError, match="has 6 rows but its Parquet footer says 7"):
        list(_generate([(0, 0, 7)], base, None))


def test_workers_capped_at_shards(source, caplog):
    dm = HFStreamDataModule("parquet", "train", data_files=source.files[:1], preprocessing=PREP, num_workers=2)
    dm.setup("predict")
    with caplog.at_level(logging.WARNING, logger="datamodules.hf_stream"):
        assert dm.predict_dataloader().num_workers == 1
    assert "instead of 2" in caplog.text


@pytest.mark.parametrize("limit,expected", [(7, 7), (1, 1), (50, 20)])
def test_limit_is_global(source, limit, expected):
    single = [s["id"] for s in HFStream("parquet", "train", data_files=source.files, limit=limit, preprocessing=PREP)]
    assert single == [f"img_{k:02d}.png" for k in range(expected)]
    parts = [HFStream("parquet", "train", data_files=source.files, limit=limit, preprocessing=PREP, rank=r,
                      world_size=2) for r in (0, 1)]
    assert sorted(s["index"] for part in parts for s in part) == list(range(expected))


def test_annotations_join_and_transform_boxes(source):
    # img_00 and img_03 are 16 x 16: resize 64 (x4), centre-crop 56 (offset 4)
    table = {"img_00.png": ([[2, 3, 10, 12], [0, 0, 1, 1]], [7, 8]),
             "img_03": {"boxes": [[4, 4, 8, 20]], "box_labels": [1], "difficult": [True]}}
    stream = HFStream("parquet", "train", data_files=source.files, annotations=table, preprocessing=PREP, limit=4)
    samples = list(stream)
    assert samples[0]["boxes"].tolist() == [[4.0, 8.0, 36.0, 44.0]]  # the 1-px corner box is cropped away
    assert samples[0]["box_labels"].tolist() == [7] and samples[0]["counts"]["boxes_dropped"] == 1
    assert samples[3]["boxes"].tolist() == [[12.0, 12.0, 28.0, 56.0]]  # looked up without ".png", clipped
    assert samples[3]["counts"]["boxes_clipped"] == 1 and samples[3]["difficult"].tolist() == [True]
    assert samples[1]["boxes"].shape == (0, 4) and samples[1]["counts"]["images_without_boxes"] == 1
    lookup = {f"name_{k}": ([[0, 0, 16, 16]], [k]) for k in range(4)}.get
    by_name = list(HFStream("parquet", "train", data_files=source.files, id_column="name", annotations=lookup,
                            preprocessing=PREP, limit=4))
    assert [s["id"] for s in by_name] == [f"name_{k}" for k in range(4)]
    assert by_name[0]["boxes"].tolist() == [[0.0, 0.0, 56.0, 56.0]]
    assert [s["box_labels"].tolist() for s in by_name] == [[0], [1], [2], [3]]


def test_malformed_annotation_raise_or_skip(source):
    bad = {"img_01.png": ([[0, 0, 4]], [1])}
    with pytest.raises(ValueError, match=r"img_01\.png.*\(N, 4\) boxes"):
        list(HFStream("parquet", "train", data_files=source.files, annotations=bad, preprocessing=PREP, limit=3))
    samples = list(HFStream("parquet", "train", data_files=source.files, annotations=bad, preprocessing=PREP,
                            limit=3, on_error="skip"))
    assert samples[1]["skipped"] and samples[1]["index"] == 1 and "AnnotationError" in samples[1]["error"]


# ILSVRC-style source: image number -> ((width, height), [(synset, inclusive xmin ymin xmax ymax)]); 3 has no boxes
# (ImageNet val has one class per image: every box of an image is of its label's class)
ILSVRC = {1: ((16, 16), [("n01443537", (2, 3, 9, 11)), ("n01443537", (0, 0, 15, 15))]),
          2: ((20, 10), [("n01484850", (7, 2, 11, 7))]), 3: ((16, 16), [])}


@pytest.fixture
def ilsvrc(tmp_path):
    """Two Parquet shards of ILSVRC2012_val_0000000k.JPEG images, a Kaggle CSV, an XML directory and the mapping."""
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01440764 tench\nn01443537 goldfish\nn01484850 white shark\n")
    (tmp_path / "xml").mkdir()
    rows = ["ImageId,PredictionString"]
    for k, (_, objects) in ILSVRC.items():
        if objects:
            rows.append(f"ILSVRC2012_val_{k:08d}," + "".join(f"{s} {' '.join(map(str, b))} " for s, b in objects))
            xml = "".join(f"<object><name>{s}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}"
                          f"</xmax><ymax>{b[3]}</ymax></bndbox></object>" for s, b in objects)
            (tmp_path / "xml" / f"ILSVRC2012_val_{k:08d}.xml").write_text(f"<annotation>{xml}</annotation>")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    shards = [str(tmp_path / "val-0.parquet"), str(tmp_path / "val-1.parquet")]
    for shard, numbers in zip(shards, [(1, 2), (3,)]):
        images = [_encode(Image.new("RGB", ILSVRC[k][0], (k, 0, 0))) for k in numbers]
        _write(shard, images, [k % 3 for k in numbers], [str(k) for k in numbers],
               [f"ILSVRC2012_val_{k:08d}.JPEG" for k in numbers])
    return SimpleNamespace(shards=shards, csv=tmp_path / "LOC_val_solution.csv", xml=tmp_path / "xml",
                           mapping=str(tmp_path / "LOC_synset_mapping.txt"))


@pytest.mark.parametrize("fmt", ["csv", "xml"])
def test_imagenet_annotation_files_joined_by_image_id(ilsvrc, fmt):
    source = getattr(ilsvrc, fmt)
    samples = list(HFStream("parquet", "train", data_files=ilsvrc.shards, annotations=str(source),
                            synset_mapping=ilsvrc.mapping, preprocessing=PREP))
    assert [(s["index"], s["id"], s["label"]) for s in samples] == [
        (k - 1, f"ILSVRC2012_val_{k:08d}.JPEG", k % 3) for k in ILSVRC]
    # 16 x 16: resize 64 (x4), crop 56 at (4, 4); inclusive (2, 3, 9, 11) -> edges (2, 3, 10, 12); the full box clipped
    assert samples[0]["boxes"].tolist() == [[4.0, 8.0, 36.0, 44.0], [0.0, 0.0, 56.0, 56.0]]
    assert samples[0]["box_labels"].tolist() == [1, 1] and samples[0]["counts"]["boxes_clipped"] == 1
    # 20 x 10: resize to 128 x 64 (x6.4), crop 56 at (36, 4); (7, 2, 11, 7) -> edges (7, 2, 12, 8)
    torch.testing.assert_close(samples[1]["boxes"], torch.tensor([[8.8, 8.8, 40.8, 47.2]]), rtol=0, atol=1e-4)
    assert samples[1]["box_labels"].tolist() == [2]
    assert samples[2]["boxes"].shape == (0, 4) and samples[2]["counts"]["images_without_boxes"] == 1
    dm = HFStreamDataModule("parquet", "train", data_files=ilsvrc.shards, annotations=source,
                            synset_mapping=ilsvrc.mapping, preprocessing=PREP, batch_size=3)
    dm.prepare_data()
    dm.setup("predict")
    (batch,) = list(dm.predict_dataloader())
    assert dm.hparams.annotations == source and [b.tolist() for b in batch["box_labels"]] == [[1, 1], [2], []]


def test_imagenet_annotation_path_arguments(ilsvrc, tmp_path):
    kwargs = dict(data_files=ilsvrc.shards, preprocessing=PREP)
    with pytest.raises(ValueError, match=r"`annotations` is a path .*LOC_val_solution\.csv.*pass `synset_mapping`"):
        HFStream("parquet", "train", annotations=str(ilsvrc.csv), **kwargs)
    with pytest.raises(ValueError, match="pass `synset_mapping`"):
        HFStreamDataModule("parquet", "train", annotations=ilsvrc.xml, **kwargs)
    with pytest.raises(ValueError, match="`synset_mapping` is only used when `annotations` is a path"):
        HFStream("parquet", "train", annotations={}, synset_mapping=ilsvrc.mapping, **kwargs)
    dm = HFStreamDataModule("parquet", "train", annotations=tmp_path / "missing.csv", synset_mapping=ilsvrc.mapping,
                            **kwargs)
    with pytest.raises(FileNotFoundError, match=r"Annotations '.*missing\.csv' not found"):
        dm.prepare_data()


@pytest.fixture
def corrupt(tmp_path):
    good = _encode(_image(0))
    images = [good, b"not an image", good[: len(good) // 2], good]
    _write(tmp_path / "c.parquet", images, [0, 1, 2, 3], list("abcd"), [None] * 4)  # no paths: generated ids
    return str(tmp_path / "c.parquet")


def test_corrupt_images_raise_or_skip(corrupt):
    with pytest.raises(CorruptImageError, match="'train_00000001'.*on_error='skip'"):
        list(HFStream("parquet", "train", data_files=corrupt, preprocessing=PREP))
    dm = HFStreamDataModule("parquet", "train", data_files=corrupt, preprocessing=PREP, on_error="skip", batch_size=4)
    dm.setup("predict")
    (batch,) = list(dm.predict_dataloader())
    assert batch["index"].tolist() == [0, 3] and batch["id"] == ["train_00000000", "train_00000003"]
    assert [s["index"] for s in batch["skipped"]] == [1, 2] and batch["counts"]["images_skipped"] == 2
    assert all("CorruptImageError" in s["error"] for s in batch["skipped"])


def test_imagefolder(tmp_path):
    for k in range(5):
        folder = tmp_path / "train" / ("cat" if k < 3 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        _image(k).convert("RGB").save(folder / f"{k}.png")
    kwargs = dict(data_dir=str(tmp_path), preprocessing=PREP)
    samples = list(HFStream("imagefolder", "train", **kwargs))
    assert [(s["index"], s["id"], s["label"]) for s in samples] == [(k, f"{k}.png", int(k >= 3)) for k in range(5)]
    parts = [list(HFStream("imagefolder", "train", rank=r, world_size=2, **kwargs)) for r in (0, 1)]
    assert sorted((s["index"], s["id"]) for p in parts for s in p) == [(s["index"], s["id"]) for s in samples]
    assert [s["label"] for s in HFStream("imagefolder", "train", label_column=None, **kwargs)] == [-1] * 5


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No file matches data_files .*missing"):
        HFStream("parquet", "train", data_files=str(tmp_path / "missing-*.parquet"))
    with pytest.raises(FileNotFoundError, match="data_dir .* is not a directory"):
        HFStreamDataModule("imagefolder", "train", data_dir=str(tmp_path / "nope")).prepare_data()
    with pytest.raises(FileNotFoundError, match="needs data_files="):
        HFStream("parquet", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HFStream(str(tmp_path / "no_dir"), "train")


def test_unknown_column(source):
    with pytest.raises(ValueError, match=r"Unknown image_column 'img'.*\['image', 'label', 'name'\]"):
        HFStream("parquet", "train", data_files=source.files, image_column="img")
    with pytest.raises(ValueError, match=r"Unknown id_column 'file'"):
        HFStream("parquet", "train", data_files=source.files, id_column="file")


@pytest.mark.parametrize("kwargs,message", [
    ({"on_error": "ignore"}, r"one of \('raise', 'skip'\)"),
    ({"limit": 0}, "`limit` to be an int > 0"),
    ({"rank": 2, "world_size": 2}, r"`rank` in \[0, 2\)"),
    ({"annotations": 3}, "Expected `annotations`"),
])
def test_bad_arguments(source, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        HFStream("parquet", "train", data_files=source.files, **kwargs)


def test_lightning_predict_single_process(source):
    module = ExplainerModule(resnet18(num_classes=4), ["center"], input_size=(3, 56, 56))
    dm = HFStreamDataModule("parquet", "train", data_files=source.files, preprocessing=PREP, batch_size=8, limit=10)
    assert dm.hparams.limit == 10 and "annotations" not in dm.hparams
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False)
    records = [r for batch in trainer.predict(module, datamodule=dm) for r in batch]
    assert [r["index"] for r in records] == list(range(10))


DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch, pytorch_lightning as pl
    from torchvision.models import resnet18
    from benchmark.runtime.module import ExplainerModule
    from datamodules.hf_stream import HFStreamDataModule
    torch.manual_seed(0)
    out, files = sys.argv[1], json.loads(sys.argv[2])
    data = HFStreamDataModule("parquet", "train", data_files=files, preprocessing={"resize_size": 64, "crop_size": 56},
                              batch_size=4, num_workers=2)
    module = ExplainerModule(resnet18(num_classes=4), ["center"], input_size=(3, 56, 56))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=out)
    predictions = trainer.predict(module, datamodule=data, return_predictions=True)
    with open(f"{out}/rank{trainer.global_rank}.json", "w") as handle:
        json.dump([r["index"] for batch in predictions for r in batch], handle)
""")


@pytest.mark.slow
@pytest.mark.parametrize("n_files", [3])
def test_ddp_predict_each_index_once(source, tmp_path, n_files):
    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), json.dumps(source.files[:n_files])],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(ranks)
    indices = sorted(ranks[0] + ranks[1])
    assert indices == list(range(sum(SIZES[:n_files])))
