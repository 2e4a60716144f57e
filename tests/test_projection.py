"""The run-time projection (perf.projection): hand-computed shard arithmetic, rendering, refusals, a smoke run."""
import argparse

import pytest

from benchmark.explainers.gradcam import GradCAM
from benchmark.explainers.scorecam import ScoreCAM
from benchmark.metrics.adcc import Coherency
from benchmark.metrics.insertion_deletion import Deletion
from benchmark.runner.settings import RunConfig
from perf import projection

TINY = """backbones: [resnet18]
explainers: [gradcam, fakecam]
metrics: [average_drop, coherency, deletion]
metric_args:
  deletion: {pixels_per_step: 256}
target: prediction
batch_size: 4
"""


@pytest.mark.parametrize("images, batch_size, devices, busiest_images", [
    (10, 4, 2, 8),  # 3 shards: 2 on the busiest device, the partial one counted whole
    (12, 4, 3, 4),  # 3 shards, one each
    (12, 4, 1, 12),
    (50000, 32, 8, 6272),  # 1563 shards: 196 on the busiest
])
def test_project_by_hand(images, batch_size, devices, busiest_images):
    device_hours, wall = projection.project({"a": 1.5, "b": 0.5}, images, batch_size, devices)
    assert device_hours == pytest.approx(images * 2.0 / 3600)
    assert wall == pytest.approx(busiest_images * 2.0 / 3600)


def test_project_refuses_empty_settings():
    with pytest.raises(ValueError, match="devices >= 1"):
        projection.project({"a": 1.0}, 10, 4, 0)


def test_compile_only_where_the_class_takes_it():
    assert projection._compiled(ScoreCAM, {"chunk_size": 8}, True) == {"chunk_size": 8, "compile": True}
    assert projection._compiled(Deletion, {}, True) == {"compile": True}
    assert projection._compiled(GradCAM, {}, True) == {} and projection._compiled(Coherency, {}, True) == {}
    assert projection._compiled(ScoreCAM, {}, False) == {}


def test_render_totals_by_hand():
    rows = [{"backbone": "net", "method": m, "seconds": s, "range": (s, s), "forwards": 3.0,
             "forwards_range": (2.5, 3.5), "passes": 4.0, "minimum": 4.0, "random": False}
            for m, s in (("gradcam", 2.0), ("x", 1.0))]
    args = argparse.Namespace(config="c.yaml", devices=2, device="cpu", images=10, batch=2, size=None, rounds=7,
                              precision="32", channels_last=False, compile=False, random_init=False)
    text = projection.render(rows, RunConfig(batch_size=4, weights="default"), args, "cmd", 1.0)
    # 10 images x 3 s = 30 s = 0.00833 device-hours; the busiest device: 2 shards of 4 images x 3 s = 24 s
    assert "| net        |        0.00833 |                     0.00667 |" in text
    assert "3 [2.5–3.5]" in text and "Random weights" not in text
    assert "**0.00667 h**" in text


def test_random_weights_are_named_by_backbone():
    rows = [{"backbone": b, "method": "scorecam", "seconds": 1.0, "range": (1.0, 1.0), "forwards": 3.0,
             "forwards_range": (3.0, 3.0), "passes": 4.0, "minimum": 4.0, "random": r}
            for b, r in (("synthetic/cnn", False), ("resnet18", True))]
    args = argparse.Namespace(config="c.yaml", devices=1, device="cpu", images=10, batch=2, size=None, rounds=7,
                              precision="32", channels_last=False, compile=False, random_init=False)
    text = projection.render(rows, RunConfig(batch_size=4), args, "cmd", 1.0)
    assert "**Random weights** (resnet18):" in text and "random: resnet18" in text
    text = projection.render(rows[:1], RunConfig(batch_size=4), args, "cmd", 1.0)
    assert "Random weights" not in text and "random: none" in text


def test_unknown_config_key_lists_the_valid_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("backbone: [resnet18]\n")
    with pytest.raises(ValueError, match=r"Unknown keys \['backbone'\].*'backbones'"):
        projection.load_config(str(path))


def test_refusals(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    with pytest.raises(SystemExit, match=r"not in .*choose from \['resnet18'\]"):
        projection.main(["--config", str(path), "--backbones", "vgg16"])
    with pytest.raises(SystemExit):
        projection.main(["--config", str(path), "--precision", "fp8"])
    assert "--precision must be one of ['32', 'bf16-mixed', '16-mixed']" in capsys.readouterr().err
    path.write_text(TINY + "weights: /nowhere/resnet18.pth\n")
    with pytest.raises(SystemExit, match="--random-init"):
        projection.main(["--config", str(path), "--size", "32", "--batch", "2", "--rounds", "1"])


def test_smoke_run_writes_the_projection(tmp_path):
    path, out = tmp_path / "tiny.yaml", tmp_path / "projection.md"
    path.write_text(TINY)
    projection.main(["--config", str(path), "--images", "10", "--devices", "2", "--batch", "2", "--rounds", "2",
                     "--size", "32", "--pause", "0", "--out", str(out), "--random-init"])
    text = out.read_text()
    assert "| resnet18   | gradcam  |" in text and "| resnet18   | fakecam  |" in text
    assert "over 2 device(s)" in text and "**Random weights**" in text and "Projected wall time" in text


def test_compile_reaches_each_explainer_that_takes_it_in_one_build(tmp_path, monkeypatch):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("[gradcam, fakecam]", "[gradcam, scorecam]"))
    built = []

    class Stop(Exception):
        pass

    def fake_module(model, explainers, **kwargs):
        built.append(explainers)
        return object()

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(projection, "ExplainerModule", fake_module)
    monkeypatch.setattr(projection, "median_time", stop)
    args = projection.parse_args(["--config", str(path), "--size", "32", "--batch", "2", "--compile"])
    with pytest.raises(Stop):
        projection.measure_backbone(projection.load_config(str(path)), "resnet18", args)
    assert built == [{"gradcam": {}}, {"scorecam": {"compile": True}}]  # one module per method, built once
