"""2-process DDP predict on CPU (gloo) against 1 process: each index once, the same maps.

Lightning's DDP launcher re-runs the calling script in each process, so the run is a script
executed in a subprocess (running it inside pytest would re-run pytest).
"""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from benchmark.report.results import read_per_sample, reduce_per_sample
from callbacks import read_records

SCRIPT = textwrap.dedent("""
    import json, sys, torch, pytorch_lightning as pl
    from torchvision.models import resnet18
    from benchmark.runtime.module import ExplainerModule
    from callbacks import SaliencyWriter
    from datamodules import RandomImagesDataModule
    torch.manual_seed(0)
    explainers, metrics = json.loads(sys.argv[4])
    module = ExplainerModule(resnet18(num_classes=5), explainers, input_size=(3, 64, 64), metrics=metrics)
    data = RandomImagesDataModule(size=11, image_size=64, num_classes=5, batch_size=3)
    trainer = pl.Trainer(accelerator="cpu", devices=int(sys.argv[2]), strategy=sys.argv[3], logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, default_root_dir=sys.argv[1],
                         callbacks=[SaliencyWriter(sys.argv[1])])
    trainer.predict(module, datamodule=data, return_predictions=False)
    with open(f"{sys.argv[1]}/results_rank{trainer.global_rank}.json", "w") as handle:
        json.dump(module.results, handle)
    if torch.distributed.is_initialized():  # before interpreter shutdown, where gloo's threads can abort (SIGABRT)
        torch.distributed.destroy_process_group()
""")


CAMS = ({"gradcam": {}, "gradcampp": {}, "random": {}, "smoothgradcampp": {"n_samples": 2}, "eigengradcam": {},
         "rise": {"n_masks": 8, "chunk_size": 4}, "sscam": {"n_samples": 1, "chunk_size": 64}},
        ["average_drop", "average_increase", "coherency", "complexity", "adcc"])
#: the reproduction study's seeded / perturbation explainers and metrics, at small budgets
STUDY = ({"gradcam": {}, "gradientshap": {"n_samples": 2}, "occlusion": {"patch_size": 15, "stride": 15}},
         {"fidelity": {}, "contrastivity": {"classes": 2}, "fgsm_robustness": {},
          "occlusion_correlation": {"patch_size": 15, "stride": 15}})

#: the seeded faithfulness and sanity metrics of 2022-2026 (ROAD noise, infidelity/sensitivity draws and MPRT's
#: randomized copies are seeded from the seed and the dataset index), at small budgets
FAITHFULNESS = ({"gradcam": {}},
                {"road_morf": {"percentiles": [30, 70]}, "road_lerf": {"percentiles": [30, 70]},
                 "infidelity_square": {"n_perturb_samples": 3, "square_size": 16},
                 "infidelity_gaussian": {"n_perturb_samples": 3}, "max_sensitivity": {"n_perturb_samples": 3},
                 "mprt": {"layers": ["fc", "layer4"]}})


def _run(tmp_path, name, devices, strategy, setup=CAMS):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / name
    proc = subprocess.run([sys.executable, str(script), str(out), str(devices), strategy, json.dumps(setup)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("setup", [CAMS, STUDY, FAITHFULNESS], ids=["cams", "study", "faithfulness"])
def test_ddp_two_processes_match_one(tmp_path, setup):
    single = read_records(_run(tmp_path, "single", 1, "auto", setup))
    double_dir = _run(tmp_path, "ddp", 2, "ddp", setup)
    assert sorted(p.name for p in double_dir.glob("rank*")) == ["rank0", "rank1"]
    double = read_records(double_dir)  # refuses duplicates
    assert [(r["index"], r["method"]) for r in double] == [(r["index"], r["method"]) for r in single]
    assert {r["index"] for r in double} == set(range(11))
    for a, b in zip(single, double):
        assert (a["target"], a["prediction"], a["target_layer"]) == (b["target"], b["prediction"], b["target_layer"])
        # Batches differ between 1 and 2 processes (3 vs 2 images per batch), which changes the
        # float rounding of the convolutions (~1e-7 relative); the maps agree far below any metric's
        # resolution. The seeded methods (random, smoothgradcampp) are seeded per dataset index.
        torch.testing.assert_close(a["saliency"], b["saliency"], rtol=0, atol=1e-4)
    # Metrics: every rank holds the same reduced results, equal to the single process's to 1e-12
    # relative (per-sample values reduced in dataset-index order; the maps differ by float rounding).
    single_results = json.loads((tmp_path / "single" / "results_rank0.json").read_text())
    ranks = [json.loads((double_dir / f"results_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert [(r["method"], r["metric"], r["n"], r["n_invalid"]) for r in ranks[0]] == \
        [(r["method"], r["metric"], r["n"], r["n_invalid"]) for r in single_results]
    assert {r["n"] for r in single_results} == {11}
    for a, b in zip(single_results, ranks[0]):
        assert b["value"] == pytest.approx(a["value"], rel=1e-5, abs=1e-6, nan_ok=True), (a, b)


@pytest.mark.slow
def test_ddp_metrics_exact_on_identical_maps(tmp_path):
    """Same per-sample inputs on 1 and 2 processes give results equal to <= 1e-12 relative."""
    script = tmp_path / "metrics.py"
    script.write_text(METRIC_SCRIPT)
    outputs = []
    for devices, strategy in ((1, "auto"), (2, "ddp")):
        out = tmp_path / f"m{devices}"
        proc = subprocess.run([sys.executable, str(script), str(out), str(devices), strategy],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(json.loads((out / "results_rank0.json").read_text()))
    assert outputs[0] == outputs[1]  # bitwise: the reduction runs in dataset-index order


METRIC_SCRIPT = textwrap.dedent("""
    import json, os, sys, torch, pytorch_lightning as pl
    from torch.utils.data import DataLoader, Dataset
    from benchmark.metrics import create_metric

    class Samples(Dataset):  # per-sample metric inputs generated from the index alone
        def __len__(self):
            return 37
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x1, y1 = torch.randint(0, 8, (2,), generator=g).tolist()
            return {"index": i, "y": torch.rand((), generator=g), "o": torch.rand((), generator=g),
                    "maps": torch.rand(12, 12, generator=g), "expl": torch.rand(12, 12, generator=g),
                    "box": torch.tensor([[x1, y1, x1 + 4.0, y1 + 3.0]]), "label": i % 3,
                    "topk_maps": torch.rand(2, 12, 12, generator=g), "topk": torch.tensor([i % 3, (i + 1) % 3])}

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            names = ["average_drop", "coherency", "adcc", "complexity", "pointing_game", "energy_pointing_game",
                     "max_box_acc", "localization_error"]
            self.metrics = torch.nn.ModuleDict({n: create_metric(n) for n in names[:-1]})
            self.metrics["localization_error"] = create_metric("localization_error", top_k=(1, 2))
        def predict_step(self, batch, batch_idx):
            m, i, boxes = self.metrics, batch["index"], list(batch["box"])
            m["average_drop"].update(batch["y"], batch["o"], i)
            m["coherency"].update(batch["maps"], batch["expl"], i)
            m["adcc"].update(batch["y"], batch["o"], batch["maps"], batch["expl"], i)
            m["complexity"].update(batch["maps"], i)
            m["pointing_game"].update(batch["maps"], boxes, batch["label"], indices=i)
            m["energy_pointing_game"].update(batch["maps"], boxes, indices=i)
            m["max_box_acc"].update(batch["maps"], boxes, indices=i)
            m["localization_error"].update(batch["topk_maps"], batch["topk"], batch["label"], boxes,
                                           [torch.tensor([lab]) for lab in batch["label"].tolist()], indices=i)
        def on_predict_epoch_end(self):
            self.results = {n: m.summary() for n, m in self.metrics.items()}

    module = Module()
    trainer = pl.Trainer(accelerator="cpu", devices=int(sys.argv[2]), strategy=sys.argv[3], logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, default_root_dir=sys.argv[1])
    trainer.predict(module, DataLoader(Samples(), batch_size=4), return_predictions=False)
    os.makedirs(sys.argv[1], exist_ok=True)
    with open(f"{sys.argv[1]}/results_rank{trainer.global_rank}.json", "w") as handle:
        json.dump(module.results, handle)
    if torch.distributed.is_initialized():  # before interpreter shutdown, where gloo's threads can abort (SIGABRT)
        torch.distributed.destroy_process_group()
""")


DATA_SCRIPT = textwrap.dedent("""
    import json, sys, torch, pytorch_lightning as pl
    from benchmark.runtime.backbones import create_backbone
    from benchmark.runtime.module import ExplainerModule
    from callbacks import PerSampleWriter
    from datamodules import CorruptImageError, SyntheticShapes, SyntheticShapesDataModule

    class Flaky(SyntheticShapes):  # two unreadable samples, skipped under on_error="skip"
        def load(self, i):
            if i in (3, 8):
                raise CorruptImageError(f"scene {i} is unreadable")
            return super().load(i)

    class FlakyModule(SyntheticShapesDataModule):
        def build_dataset(self):
            return Flaky(**self.options, preprocessing=self.preprocessing, on_error="skip")

    model, prep = create_backbone("synthetic/res_cnn")
    module = ExplainerModule(model, ["gradcam", "center"], keep_maps=False, input_size=prep.input_size,
                             metrics=["pointing_game", "energy_pointing_game", "average_drop", "max_box_acc"])
    data = FlakyModule(size=13, preprocessing=prep, batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", devices=int(sys.argv[2]), strategy=sys.argv[3], logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, default_root_dir=sys.argv[1],
                         callbacks=[PerSampleWriter(sys.argv[1], "synthetic", "synthetic/res_cnn")])
    trainer.predict(module, datamodule=data, return_predictions=False)
    with open(f"{sys.argv[1]}/results_rank{trainer.global_rank}.json", "w") as handle:
        json.dump({"results": module.results, "report": module.data_report}, handle)
    if torch.distributed.is_initialized():  # before interpreter shutdown, where gloo's threads can abort (SIGABRT)
        torch.distributed.destroy_process_group()
""")


@pytest.mark.slow
def test_ddp_synthetic_boxes_and_skips_match_one_process(tmp_path):
    outputs = {}
    for name, devices, strategy in (("single", 1, "auto"), ("ddp", 2, "ddp")):
        script, out = tmp_path / "data_run.py", tmp_path / name
        script.write_text(DATA_SCRIPT)
        out.mkdir()
        proc = subprocess.run([sys.executable, str(script), str(out), str(devices), strategy],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[name] = [json.loads(p.read_text()) for p in sorted(out.glob("results_rank*.json"))]
    single, (rank0, rank1) = outputs["single"][0], outputs["ddp"]
    # the per-sample files of both ranks reduce offline to exactly the online (gathered) results
    offline = {(r["method"], r["metric"]): r["value"] for r in reduce_per_sample(read_per_sample(tmp_path / "ddp"))}
    online = {(r["method"], r["metric"]): r["value"] for r in rank0["results"]}
    assert offline.keys() == online.keys()
    assert all(offline[k] == online[k] or (offline[k] != offline[k] and online[k] != online[k]) for k in online)
    assert rank0 == rank1  # every rank holds the gathered report and the reduced results
    report = rank0["report"]
    assert report == single["report"]
    assert [(s["index"], s["id"]) for s in report["skipped"]] == [(3, "val_00000003"), (8, "val_00000008")]
    assert report["counts"]["images_skipped"] == 2
    by_key = {(r["method"], r["metric"]): r for r in single["results"]}
    for row in rank0["results"]:
        ref = by_key[(row["method"], row["metric"])]
        assert row["n"] == ref["n"] == 11 and row["n_invalid"] == ref["n_invalid"]
        # the maps differ by conv rounding between batchings (~1e-7, see above), hence not bitwise
        assert row["value"] == pytest.approx(ref["value"], rel=1e-6, abs=1e-6, nan_ok=True)
