"""The cam-bench console entry point: `list` and the offline `demo` run."""
from benchmark.cli import main
from benchmark.explainers import list_explainers


def test_list_shows_every_explainer_and_layer_table(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"| {name} " in out for name in list_explainers())
    assert "features.norm5" in out and "layer4" in out


def test_demo_runs_predict_and_prints_summary(tmp_path, capsys):
    code = main(["demo", "--images", "3", "--batch-size", "2", "--explainers", "gradcam,fakecam",
                 "--accelerator", "cpu", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| gradcam " in out and "| fakecam " in out and "layer4" in out
    assert len(list((tmp_path / "records").glob("rank0/batch_*.pt"))) == 2
