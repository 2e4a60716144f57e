"""`cam-bench run` on transformers (random init, offline): the layer and its layout are part of the result."""
import json

import pandas as pd
import pytest

from benchmark.cli import main

VIT, SWIN = "timm/vit_tiny_patch16_224", "timm/swin_tiny_patch4_window7_224"
ARGS = ["--data_args", "{size: 4}", "--limit", "2", "--batch_size", "2", "--bootstrap", "20",
        "--explainers", "[gradcam, eigencam, fakecam]", "--metrics", "[average_drop, complexity]",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit_swin")
    assert main(["run", *ARGS, "--backbones", f"[{VIT}, {SWIN}]", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_layers_recorded_everywhere(run_dir):
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["backbones"][VIT]["layers"]["gradcam"] == {"target_layer": "blocks.11.norm1", "layout": "tokens:1"}
    assert meta["backbones"][SWIN]["layers"]["eigencam"] == {"target_layer": "norm", "layout": "nhwc"}
    assert meta["backbones"][SWIN]["layers"]["fakecam"] == {"target_layer": "input", "layout": "-"}
    # timm's pretrained_cfg: ViT normalises with 0.5, crop_pct 0.9 (resize 248), bicubic
    assert meta["backbones"][VIT]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert meta["backbones"][VIT]["preprocessing"]["resize_size"] == 248
    frame = pd.read_parquet(next((run_dir / "per_sample").glob("timm--vit*/gradcam/shard_*.parquet")))
    assert set(frame["target_layer"]) == {"blocks.11.norm1"} and set(frame["layout"]) == {"tokens:1"}
    board = (run_dir / "leaderboard.md").read_text()
    assert "Target layers: `blocks.11.norm1` (tokens:1): eigencam, gradcam; none (the input): fakecam." in board
    assert "Target layers: `norm` (nhwc): eigencam, gradcam" in board


@pytest.mark.slow
def test_resume_with_another_layer_is_refused(run_dir, tmp_path):
    with pytest.raises(ValueError, match="different settings.*target_layer"):
        main(["run", *ARGS, "--backbones", f"[{VIT}, {SWIN}]", "--out", str(run_dir),
              "--target_layer", f"{{{VIT}: blocks.10.norm1}}"])


@pytest.mark.slow
def test_recorded_layers_checked_on_resume(tmp_path):
    """A run.json whose recorded layer differs from what this code resolves (e.g. an older automatic choice)."""
    out = tmp_path / "run"
    args = ["run", *ARGS, "--explainers", "[gradcam]", "--backbones", f"[{VIT}]", "--out", str(out)]
    assert main(args) == 0
    meta = json.loads((out / "run.json").read_text())
    meta["backbones"][VIT]["layers"]["gradcam"]["target_layer"] = "blocks.10.norm1"
    (out / "run.json").write_text(json.dumps(meta))
    for shard in (out / "per_sample").rglob("shard_*.parquet"):
        shard.unlink()
    with pytest.raises(ValueError, match="other target layers.*blocks.10.norm1"):
        main(args)


def test_run_level_layer_of_an_unknown_backbone_is_refused(tmp_path):
    with pytest.raises(ValueError, match="keys of `target_layer`"):
        main(["run", *ARGS, "--backbones", f"[{VIT}]", "--out", str(tmp_path), "--target_layer", "{resnet18: layer4}"])


def test_run_level_bad_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Expected `layout`"):
        main(["run", *ARGS, "--backbones", f"[{VIT}]", "--out", str(tmp_path), "--layout", f"{{{VIT}: tokenz}}"])


@pytest.mark.slow
def test_run_level_reshape_function(run_dir, tmp_path):
    """``--layout {backbone: file.py:function}``: a pytorch-grad-cam style reshape, recorded, same numbers."""
    path = tmp_path / "vit_reshape.py"
    path.write_text("def vit(t):\n    r = t[:, 1:, :].reshape(t.size(0), 14, 14, t.size(2))\n"
                    "    return r.transpose(2, 3).transpose(1, 2)\n")
    out = tmp_path / "run"
    assert main(["run", *ARGS, "--explainers", "[gradcam]", "--backbones", f"[{VIT}]", "--out", str(out),
                 "--layout", f"{{{VIT}: '{path}:vit'}}"]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["backbones"][VIT]["layers"]["gradcam"] == {"target_layer": "blocks.11.norm1",
                                                           "layout": f"reshape:{path}:vit"}
    assert meta["fingerprint"]["layout"] == {VIT: f"{path}:vit"}
    got, expected = (pd.read_parquet(next((d / "per_sample").glob("timm--vit*/gradcam/shard_*.parquet")))
                     for d in (out, run_dir))
    for column in ("average_drop", "complexity"):
        pd.testing.assert_series_equal(got[column], expected[column], atol=1e-4, rtol=1e-5)  # percent units


def test_run_level_reshape_that_cannot_be_imported_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reshape function 'package.module:function'"):
        main(["run", *ARGS, "--backbones", f"[{VIT}]", "--out", str(tmp_path), "--layout", f"{{{VIT}: nomod_x:fn}}"])
