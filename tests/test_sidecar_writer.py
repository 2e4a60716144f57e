"""PerSampleWriter's sidecars next to each kept image (:mod:`benchmark.report.figure_labels`): deterministic bytes,
the boxes and mask of the target's class, class names, and what a grid draws from them."""
import json
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from benchmark.report.figure_labels import caption_text, read_sidecar
from benchmark.report.figures import grid_size, saliency_grid
from callbacks.per_sample_writer import PerSampleWriter
from datamodules.synthetic import SyntheticShapesDataModule


def _writer_batch():
    """One batch of 2 synthetic scenes and the records of one method, with its maps kept."""
    data = SyntheticShapesDataModule(size=2, image_size=32, batch_size=2, num_classes=3)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    records = [{"index": int(i), "method": "gradcam", "target": int(t), "prediction": (int(t) + k) % 3,
                "probability": 0.123456, "saliency": torch.zeros(32, 32)}
               for k, (i, t) in enumerate(zip(batch["index"], batch["label"]))]
    return data, batch, records


def test_writer_keeps_a_deterministic_sidecar_next_to_each_kept_image(tmp_path):
    data, batch, records = _writer_batch()
    for out in (tmp_path / "a", tmp_path / "b"):
        PerSampleWriter(out, "synthetic", "synthetic/res_cnn")._save_maps(records, batch, SimpleNamespace(
            datamodule=data))
    images = tmp_path / "a" / "maps" / "synthetic--res_cnn" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["0.json", "0.mask.npy", "0.npy", "1.json", "1.mask.npy",
                                                        "1.npy", "classes.json"]
    for path in images.iterdir():  # byte-reproducible
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    assert json.loads((images / "classes.json").read_text()) == {"classes": ["circle", "square", "triangle"]}
    for row, rec in enumerate(records):
        info = read_sidecar(images, rec["index"])
        label = int(batch["label"][row])
        of_label = batch["box_labels"][row] == label
        assert (info.sample_id, info.target, info.prediction, info.label, info.probability) == (
            batch["id"][row], label, rec["prediction"], label, 0.1235)
        np.testing.assert_allclose(info.boxes, batch["boxes"][row][of_label].numpy(), atol=0.005)
        assert np.load(images / f"{rec['index']}.mask.npy").dtype == np.uint8
        np.testing.assert_array_equal(info.mask, batch["masks"][row][of_label].any(0).numpy())
        assert info.mask.any() and info.class_names == ("circle", "square", "triangle")
    assert read_sidecar(images, 1).wrong and not read_sidecar(images, 0).wrong
    path = saliency_grid(images.parent, ["gradcam"], [0, 1], tmp_path / "grid.png")
    with Image.open(path) as image:
        assert image.size == grid_size(2, 2, captions=True)


def test_writer_without_a_datamodule_or_annotations_writes_class_indices(tmp_path):
    _, batch, records = _writer_batch()
    for key in ("boxes", "box_labels", "masks"):
        batch.pop(key)
    PerSampleWriter(tmp_path, "synthetic", "synthetic/res_cnn")._save_maps(records, batch, None)
    images = tmp_path / "maps" / "synthetic--res_cnn" / "images"
    info = read_sidecar(images, 0)
    assert info.boxes is None and info.mask is None and info.class_names is None
    assert not (images / "classes.json").exists()
    assert caption_text(info).startswith(f"{batch['id'][0]} · target: {info.target} · pred: ")
