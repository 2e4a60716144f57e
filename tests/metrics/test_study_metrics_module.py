"""The Grad-CAM study's metrics through ExplainerModule in a real tiny Trainer.predict: every named result, the
same numbers for two batchings, and the per-sample rows reducing offline to the online results."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmark.metrics import create_metric
from benchmark.runtime.module import ExplainerModule, merge_records

SIZE, CLASSES, ITEMS = 16, 4, 7
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
METRICS = {
    "box_ratio": {"threshold": 0.5},
    "fidelity": {},
    "contrastivity": {},
    "fgsm_robustness": {"std": STD},
    "one_pixel_sensitivity": {"n_images": 3, "popsize": 20, "maxiter": 3, "mean": MEAN, "std": STD},
    "occlusion_correlation": {"patch_size": 5, "stride": 2, "size": 4, "chunk_size": 64},
}


class PeakNet(nn.Module):
    """``logit_k = max_p relu(w_k . x_p)`` with ``w`` = the three colour axes and ``-0.6 (1, 1, 1)``: decided by
    single pixels, so removing the map's top pixels, FGSM and one-pixel attacks all change some predictions."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, CLASSES, 1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-0.6, -0.6, -0.6]])
                                          .view(CLASSES, 3, 1, 1))
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


class BoxedImages(Dataset):
    def __len__(self):
        return ITEMS

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        x1, y1 = (int(v) for v in torch.randint(0, SIZE // 2, (2,), generator=g))
        label = index % CLASSES
        return {"image": 0.5 * torch.randn(3, SIZE, SIZE, generator=g), "label": label, "index": index,
                "boxes": torch.tensor([[x1, y1, x1 + 8.0, y1 + 8.0], [0.0, 0.0, 4.0, 4.0]]),
                "box_labels": torch.tensor([label, (label + 1) % CLASSES])}


def collate(items):
    return {"image": torch.stack([i["image"] for i in items]), "label": torch.tensor([i["label"] for i in items]),
            "index": torch.tensor([i["index"] for i in items]), "boxes": [i["boxes"] for i in items],
            "box_labels": [i["box_labels"] for i in items]}


def run(tmp_path, batch_size):
    torch.manual_seed(0)
    module = ExplainerModule(PeakNet(), ["gradcam"], keep_maps=False, input_size=(3, SIZE, SIZE),
                             target_layer="features", metrics=METRICS)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    out = trainer.predict(module, DataLoader(BoxedImages(), batch_size=batch_size, collate_fn=collate))
    return module.results, merge_records(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return [run(tmp_path_factory.mktemp(f"batch{b}"), b) for b in (3, 7)]


def test_every_named_result_is_produced(runs):
    results, records = runs[0]
    names = {r["metric"] for r in results}
    stats = {f"{part}_{stat}" for part in ("before", "after", "change") for stat in ("mean", "std", "min", "max")}
    assert names == {"box_ratio", "fidelity_top1", "fidelity_top10", "contrastivity_top1", "contrastivity_top10",
                     "fgsm_robustness", "fgsm_robustness_flip_rate", "occlusion_correlation",
                     "one_pixel_sensitivity_success_rate", "one_pixel_sensitivity_attacked"} | \
        {f"one_pixel_sensitivity_{s}" for s in stats}
    assert all(r["n"] == ITEMS for r in results)
    values = {r["metric"]: r["value"] for r in results}
    assert values["one_pixel_sensitivity_attacked"] == 3
    # every path ran: successful attacks (explained on the attacked images), flips, removed top pixels
    assert values["one_pixel_sensitivity_success_rate"] > 0 and 0 <= values["one_pixel_sensitivity_after_mean"] <= 1
    assert values["fgsm_robustness_flip_rate"] > 0 and values["fidelity_top1"] > 0
    for name in ("box_ratio", "contrastivity_top1", "contrastivity_top10", "fgsm_robustness_flip_rate"):
        assert 0 <= values[name] <= 100, name
    assert -100 <= values["fidelity_top1"] <= 100 and -1 <= values["fgsm_robustness"] <= 1
    assert -1 <= values["occlusion_correlation"] <= 1
    assert [r["index"] for r in records] == list(range(ITEMS))
    assert all(len(r["metric_values"]["one_pixel_sensitivity"]) == 6 for r in records)


def test_batching_does_not_change_the_results(runs):
    (first, _), (second, _) = runs
    a = {r["metric"]: (r["value"], r["n_invalid"]) for r in first}
    b = {r["metric"]: (r["value"], r["n_invalid"]) for r in second}
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][1] == b[name][1], name
        both_nan = math.isnan(a[name][0]) and math.isnan(b[name][0])
        assert both_nan or a[name][0] == pytest.approx(b[name][0], rel=1e-5, abs=1e-6), name


def test_per_sample_rows_reduce_offline_to_the_online_results(runs):
    results, records = runs[0]
    online = {r["metric"]: r for r in results}
    indices = torch.tensor([r["index"] for r in records])
    for name, kwargs in METRICS.items():
        metric = create_metric(name, **kwargs)
        metric.store(torch.tensor([r["metric_values"][name] for r in records], dtype=torch.float64), indices)
        summary = metric.summary(sync=False)
        for part, value in summary.items():
            if part in ("n", "n_invalid"):
                continue
            row = online[f"{name}_{part}" if part else name]
            assert (math.isnan(value) and math.isnan(row["value"])) or value == row["value"], (name, part)
            assert summary["n_invalid"] == row["n_invalid"]
