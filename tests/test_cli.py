"""The cam-bench console entry point: `list`, the offline `demo` and a reduced `run`."""
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


def test_run_offline_default_matrix_on_a_few_images(tmp_path, capsys):
    code = main(["run", "--data_args", "{size: 4}", "--batch_size", "2", "--backbones",
                 "[synthetic/res_cnn, synthetic/vgg_cnn]", "--explainers", "[gradcam, center]", "--bootstrap", "20",
                 "--out", str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    assert code == 0
    out = capsys.readouterr().out
    assert "## synthetic / synthetic/res_cnn" in out and "| gradcam |" in out and "Pointing ↑" in out
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0] == "dataset,backbone,method,metric,value,ci_low,ci_high,n,n_invalid"
    assert any(r.startswith("synthetic,synthetic/res_cnn,center,pointing_game_accuracy,") for r in rows)
    # every backbone of the matrix keeps its own per-sample files and reaches results.csv
    assert {r.split(",")[1] for r in rows[1:]} == {"synthetic/res_cnn", "synthetic/vgg_cnn"}
    assert len(list((tmp_path / "per_sample" / "synthetic--vgg_cnn" / "center").glob("shard_*.parquet"))) == 2
    assert (tmp_path / "leaderboard.md").read_text() in out
    assert (tmp_path / "figures" / "synthetic--res_cnn_saliency.png").is_file()
    assert (tmp_path / "logs" / "synthetic--res_cnn" / "version_0" / "metrics.csv").is_file()


def test_list_shows_datamodules_metrics_and_shipped_backbones(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "| synthetic " in out and "| voc2007 " in out and "synthetic/res_cnn" in out and "max_box_acc" in out
