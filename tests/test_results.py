"""Per-sample Parquet files -> results: the offline reduction equals the online metrics exactly."""
import math
import shutil

import pandas as pd
import pytest
import pytorch_lightning as pl

from benchmark.report.results import read_per_sample, reduce_per_sample, write_results_csv
from benchmark.runtime.backbones import create_backbone
from benchmark.runtime.module import ExplainerModule
from callbacks import PerSampleWriter
from datamodules import SyntheticShapesDataModule

METRICS = {"average_drop": {}, "average_increase": {}, "coherency": {}, "complexity": {}, "adcc": {},
           "deletion": {"steps": 8}, "insertion": {"steps": 8}, "pointing_game": {}, "energy_pointing_game": {},
           "max_box_acc": {"thresholds": [0.1, 0.3, 0.5]}, "localization_error": {"top_k": [1]},
           "pointing_game_recall": {"top_k": 2}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    model, prep = create_backbone("synthetic/res_cnn")
    module = ExplainerModule(model, ["gradcam", "center"], keep_maps=False, input_size=prep.input_size,
                             metrics=METRICS, top_k=2)
    dm = SyntheticShapesDataModule(size=20, preprocessing=prep, batch_size=6)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         callbacks=[PerSampleWriter(out, "synthetic", "synthetic/res_cnn")])
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return out, module


def test_one_row_per_index_and_method_with_every_metric(run):
    out, _ = run
    files = list((out / "per_sample" / "synthetic--res_cnn" / "gradcam").glob("rank0_batch_0_*.parquet"))
    assert len(files) == 4  # 20 images, batches of 6 (no shards: rank/batch names)
    frame = read_per_sample(out)
    assert len(frame) == 40 and frame["index"].tolist() == list(range(20)) * 2
    assert set(METRICS) <= set(frame.columns) and set(frame["method"]) == {"center", "gradcam"}
    assert len(frame.loc[0, "pointing_game"]) == 3 and len(frame.loc[0, "adcc"]) == 3
    assert isinstance(frame.loc[0, "average_drop"], float) and len(frame.loc[0, "localization_error"]) == 1


def test_offline_reduction_equals_the_online_metrics(run, tmp_path):
    out, module = run
    offline = reduce_per_sample(read_per_sample(out), METRICS)
    online = {(r["method"], r["metric"]): r for r in module.results}
    assert len(offline) == len(online)
    for row in offline:
        ref = online[(row["method"], row["metric"])]
        assert (row["n"], row["n_invalid"]) == (ref["n"], ref["n_invalid"])
        assert row["value"] == ref["value"] or (math.isnan(row["value"]) and math.isnan(ref["value"]))
    # results.csv round-trips float64 exactly
    back = pd.read_csv(write_results_csv(offline, tmp_path / "results.csv"))
    assert list(back.columns) == ["dataset", "backbone", "method", "metric", "value", "ci_low", "ci_high", "n",
                                  "n_invalid"]
    by_key = {(r["method"], r["metric"]): r["value"] for r in offline}
    for r in back.to_dict("records"):
        assert r["value"] == by_key[(r["method"], r["metric"])] or math.isnan(r["value"])


def test_duplicates_and_missing_files_are_refused(run, tmp_path):
    out, _ = run
    shutil.copytree(out / "per_sample", tmp_path / "a" / "per_sample")
    shutil.copytree(out / "per_sample", tmp_path / "b" / "per_sample")
    with pytest.raises(ValueError, match=r"Expected each \(dataset, backbone, method, index\) once"):
        read_per_sample([tmp_path / "a", tmp_path / "b"])  # two merged runs holding the same rows
    files = out / "per_sample" / "synthetic--res_cnn" / "gradcam"
    shutil.copytree(files, tmp_path / "per_sample" / "synthetic--res_cnn" / "gradcam")
    for f in (tmp_path / "per_sample" / "synthetic--res_cnn" / "gradcam").glob("*.parquet"):
        shutil.copy(f, f.with_name("copy_" + f.name))
    with pytest.raises(ValueError, match=r"Expected each \(dataset, backbone, method, index\) once"):
        read_per_sample(tmp_path)
    with pytest.raises(FileNotFoundError, match="PerSampleWriter"):
        read_per_sample(tmp_path / "empty")
