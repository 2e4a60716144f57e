"""ExplainerModule in a real (tiny) Trainer.predict: records, targets, sampler policy."""
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.models import resnet18

from benchmark.runtime.module import ExplainerModule, merge_records
from callbacks import SaliencyWriter, read_records
from datamodules import RandomImages, RandomImagesDataModule

METHODS = ["gradcam", "fakecam", "random"]


def _trainer(tmp_path, **kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, default_root_dir=tmp_path, **kwargs)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return resnet18(num_classes=5)


def test_predict_records_each_index_once(model, tmp_path):
    module = ExplainerModule(model, METHODS, input_size=(3, 64, 64))
    data = RandomImagesDataModule(size=5, image_size=64, num_classes=5, batch_size=2)
    writer = SaliencyWriter(tmp_path / "records")
    out = _trainer(tmp_path, callbacks=[writer]).predict(module, datamodule=data)
    records = read_records(tmp_path / "records")
    assert [(r["index"], r["method"]) for r in records] == [(i, m) for i in range(5) for m in sorted(METHODS)]
    merged = merge_records(out)  # the in-memory return value joins to the same rows
    assert [(r["index"], r["method"]) for r in merged] == [(r["index"], r["method"]) for r in records]
    dataset = RandomImages(5, 64, 5)
    for rec in records:
        assert rec["target"] == dataset[rec["index"]]["label"]  # target="label"
        assert rec["saliency"].shape == (64, 64) and rec["saliency"].dtype == torch.float32
        assert 0 <= rec["probability"] <= 1 and rec["seconds"] >= 0
        assert rec["target_layer"] == ("input" if rec["method"] == "fakecam" else "layer4")


def test_prediction_target_matches_argmax_and_probability(model):
    module = ExplainerModule(model, ["gradcam"], target="prediction", keep_maps=False, input_size=(3, 64, 64))
    images = torch.randn(3, 3, 64, 64)
    probs = model.eval()(images).softmax(1)
    records = module.predict_step({"image": images, "index": torch.arange(3)}, 0)
    assert [r["target"] for r in records] == probs.argmax(1).tolist()
    assert [r["prediction"] for r in records] == probs.argmax(1).tolist()
    torch.testing.assert_close(torch.tensor([r["probability"] for r in records]), probs.max(1).values)
    assert all(r["saliency"] is None for r in records)


def test_label_target_needs_labels(model):
    module = ExplainerModule(model, ["fakecam"], input_size=(3, 64, 64))
    with pytest.raises(ValueError, match="target='label' needs a `label`"):
        module.predict_step({"image": torch.randn(1, 3, 64, 64), "index": torch.tensor([0])}, 0)
    with pytest.raises(ValueError, match="`image` and `index`"):
        module.predict_step({"pixels": torch.randn(1, 3, 64, 64)}, 0)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="'guess'"):
        ExplainerModule(model, ["gradcam"], target="guess")
    with pytest.raises(KeyError, match="gradcam"):
        ExplainerModule(model, ["gradcamm"])
    with pytest.raises(TypeError, match="'gradcam'"):
        ExplainerModule(model, "gradcam")


def test_explainer_options_pass_through(model):
    module = ExplainerModule(model, {"scorecam": {"chunk_size": 7}, "gradcam": {}}, target_layer="layer3",
                             input_size=(3, 64, 64))
    assert module.explainers["scorecam"].chunk_size == 7
    assert {e.target_layer for e in module.explainers.values()} == {"layer3"}


def test_user_distributed_sampler_is_refused(model, tmp_path):
    dataset = RandomImages(5, 32, 5)
    loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, num_replicas=2, rank=0))
    module = ExplainerModule(model, ["fakecam"], input_size=(3, 32, 32))
    with pytest.raises(ValueError, match="pads the dataset"):
        _trainer(tmp_path).predict(module, loader)


def test_merge_records_refuses_duplicates():
    with pytest.raises(ValueError, match=r"duplicates \[\(1, 'a'\)\]"):
        merge_records([[{"index": 1, "method": "a"}], [{"index": 1, "method": "a"}]])


def test_read_records_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="SaliencyWriter"):
        read_records(tmp_path)


def test_fakecam_shows_poppi_table2_pattern(tmp_path):
    """Fake-CAM through the whole module on random-init resnet18 (Poppi et al. Table 2's row)."""
    torch.manual_seed(0)
    module = ExplainerModule(resnet18(), ["fakecam"], keep_maps=False, input_size=(3, 64, 64),
                             metrics=["average_drop", "average_increase", "coherency", "complexity", "adcc"])
    data = RandomImagesDataModule(size=6, image_size=64, num_classes=1000, batch_size=3)
    _trainer(tmp_path).predict(module, datamodule=data, return_predictions=False)
    results = {r["metric"]: r for r in module.results}
    assert results["complexity"]["value"] >= 99 and results["coherency"]["value"] >= 99
    assert results["adcc"]["value"] <= 1 and results["average_drop"]["value"] <= 1
    assert {r["n"] for r in module.results} == {6} and {r["n_invalid"] for r in module.results} == {0}


def test_metrics_computed_once_per_need(model):
    """E, O and CAM(E) are computed once per explainer and batch, shared by the metrics."""
    calls = []
    module = ExplainerModule(model, ["gradcam"], input_size=(3, 32, 32),
                             metrics=["average_drop", "average_increase", "coherency", "adcc"])
    explainer = module.explainers["gradcam"]
    original = type(explainer).__call__
    type(explainer).__call__ = lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    try:
        module.predict_step({"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 1]),
                             "index": torch.tensor([0, 1])}, 0)
    finally:
        type(explainer).__call__ = original
    assert len(calls) == 2  # the map, and CAM(E) once for coherency + adcc


def test_box_metrics_without_boxes_raise(model):
    module = ExplainerModule(model, ["fakecam"], input_size=(3, 32, 32), metrics=["complexity"])
    module.metrics["fakecam/complexity"].needs = frozenset({"boxes"})
    with pytest.raises(ValueError, match="need `boxes`"):
        module.predict_step({"image": torch.randn(1, 3, 32, 32), "label": torch.tensor([0]),
                             "index": torch.tensor([0])}, 0)
    with pytest.raises(KeyError, match="complexity"):
        ExplainerModule(model, ["fakecam"], metrics=["complexty"])
