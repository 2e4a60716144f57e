"""`cam-bench run` / `cam-bench leaderboard`: N-process identity, SIGKILL + resume, merge, config errors, plugins."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark.cli import _run_parser, main
from benchmark.explainers import default_explainers

SMALL = ["--data_args", "{size: 12}", "--batch_size", "3", "--explainers", "[gradcam, center]", "--bootstrap", "50",
         "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
BACKBONES = ["--backbones", "[synthetic/res_cnn, synthetic/vgg_cnn]"]  # trained on the default scenes


def _cli(*args, timeout=600):
    """Run the console script in a fresh process (as a user or SLURM would)."""
    proc = subprocess.run([sys.executable, "-m", "benchmark.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _without_date(text):
    return [line for line in text.splitlines() if not line.startswith("| Date |")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One in-process run of two backbones (the reference for identity and merge tests)."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["run", *SMALL, *BACKBONES, "--out", str(out)]) == 0
    return out


def test_run_writes_every_output(reference):
    results = pd.read_csv(reference / "results.csv")
    assert list(results.columns) == ["dataset", "backbone", "method", "metric", "value", "ci_low", "ci_high", "n",
                                     "n_invalid"]
    finite = results.dropna(subset=["value", "ci_low", "ci_high"])
    assert len(finite) > 0.8 * len(results)
    assert ((finite["ci_low"] <= finite["value"] + 1e-9) & (finite["value"] <= finite["ci_high"] + 1e-9)).all()
    board = (reference / "leaderboard.md").read_text()
    for part in ("## synthetic / synthetic/res_cnn", "## synthetic / synthetic/vgg_cnn", "Avg Drop ↓", "ADCC ↑",
                 "Pointing ↑", "Win % (Average Drop)", "## Mean rank across backbones", "| Git commit |",
                 "cam-bench run --config config.yaml", "N = 12"):
        assert part in board, part
    for figure in ("synthetic--res_cnn_saliency.png", "synthetic--vgg_cnn_curves.png"):
        assert (reference / "figures" / figure).is_file() and f"(figures/{figure})" in board
    config = yaml.safe_load((reference / "config.yaml").read_text())
    assert config["explainers"] == ["gradcam", "center"] and config["data_args"]["size"] == 12


@pytest.mark.slow
def test_one_and_two_processes_give_identical_bytes(reference, tmp_path):
    out = tmp_path / "ddp"
    _cli("run", *SMALL, *BACKBONES, "--out", str(out), "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    assert _without_date((out / "leaderboard.md").read_text()) == _without_date(
        (reference / "leaderboard.md").read_text())
    shards = sorted(p.relative_to(out) for p in (out / "per_sample").rglob("shard_*.parquet"))
    assert shards == sorted(p.relative_to(reference) for p in (reference / "per_sample").rglob("shard_*.parquet"))


@pytest.mark.slow
def test_sigkill_at_a_random_batch_then_resume_recomputes_only_the_rest(tmp_path):
    args = ["run", "--data_args", "{size: 24}", "--batch_size", "2", "--backbones", "[synthetic/res_cnn]",
            "--explainers", "[gradcam, gradcampp]", "--metrics", "[average_drop, deletion, pointing_game]",
            "--bootstrap", "50", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    complete = tmp_path / "complete"
    _cli(*args, "--out", str(complete))
    out = tmp_path / "killed"
    folder = out / "per_sample" / "synthetic--res_cnn" / "gradcampp"
    kill_after = random.Random(os.getpid()).randint(2, 8)  # 12 shards in all
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 300
        while len(list(folder.glob("shard_*.parquet"))) < kill_after and time.monotonic() < deadline:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "results.csv").exists()
    on_disk = {m: len(list((out / "per_sample" / "synthetic--res_cnn" / m).glob("shard_*.parquet")))
               for m in ("gradcam", "gradcampp")}
    assert kill_after <= on_disk["gradcampp"] < 12
    log = _cli(*args, "--out", str(out)).stderr
    expected = ", ".join(f"{m} {12 - n} shard{'s' * (12 - n != 1)}" for m, n in on_disk.items() if n < 12)
    assert f"synthetic/res_cnn: {min(on_disk.values())} of 12 shards finished for every method; computing " \
           f"{expected}" in log
    assert (out / "results.csv").read_bytes() == (complete / "results.csv").read_bytes()
    # a third run finds everything on disk and recomputes nothing
    assert "all 12 shards of 2 methods on disk; nothing to recompute" in _cli(*args, "--out", str(out)).stderr


def test_slurm_array_pattern_one_run_per_backbone_then_merge(reference, tmp_path, capsys):
    runs = []
    for backbone in ("synthetic/res_cnn", "synthetic/vgg_cnn"):
        runs.append(tmp_path / backbone.split("/")[1])
        assert main(["run", *SMALL, "--backbones", f"[{backbone}]", "--out", str(runs[-1])]) == 0
    merged = tmp_path / "merged" / "leaderboard.md"
    assert main(["leaderboard", *map(str, runs), "--out", str(merged)]) == 0
    assert (merged.parent / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    board = merged.read_text()
    assert board.count("## synthetic / ") == 2 and "cam-bench leaderboard res_cnn vgg_cnn" in board
    assert (merged.parent / "figures" / "synthetic--vgg_cnn_saliency.png").is_file()


def test_merge_refuses_different_fingerprints_and_names_the_fields(reference, tmp_path):
    other = tmp_path / "other"
    assert main(["run", *SMALL, "--backbones", "[synthetic/mobile_cnn]", "--weights", "random",
                 "--metrics", "[deletion, complexity]",
                 "--metric_args", "{deletion: {steps: 8}}", "--out", str(other)]) == 0
    with pytest.raises(ValueError, match=r"differ in metric_args\..*metric_args\.deletion\.steps.*--force"):
        main(["leaderboard", str(reference), str(other), "--out", str(tmp_path / "m.md")])
    assert main(["leaderboard", str(reference), str(other), "--out", str(tmp_path / "m.md"), "--force"]) == 0
    assert "| Merged with --force | differing: " in (tmp_path / "m.md").read_text()
    # the same directory with other settings is not resumed either
    with pytest.raises(ValueError, match=r"different settings \(.*metric_args.deletion.steps.*--overwrite true"):
        main(["run", *SMALL, "--backbones", "[synthetic/mobile_cnn]", "--weights", "random",
              "--metrics", "[deletion, complexity]",
              "--out", str(other)])


@pytest.mark.parametrize("override, error, message", [
    (["--explainers", "[gradcam, gradcamm]"], KeyError, "gradcampp"),
    (["--metrics", "[average_drop, avg_drop]"], KeyError, "average_drop"),
    (["--backbones", "[synthetic/res_cnnn]"], ValueError, "res_cnn"),
    (["--backbones", "[resnet1800]"], ValueError, "resnet18"),
    # a shipped checkpoint trained on the classic scenes is not run on the (default) evidence scenes
    (["--backbones", "[synthetic/plain_cnn]"], ValueError,
     "trained on 'classic' scenes .* pass --data_args.scene classic"),
    (["--batch_size", "-4"], ValueError, "Expected `batch_size` to be positive, but got -4"),
    (["--target", "predicted"], ValueError, "prediction"),
    (["--data", "imagenett"], ValueError, "imagenet"),
    (["--data", "imagenet", "--data_args", "{root: /nonexistent/imagenet}"], FileNotFoundError, "imagenet"),
])
def test_bad_config_values_fail_before_any_model_is_built(monkeypatch, tmp_path, override, error, message):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the config was validated")

    monkeypatch.setattr("benchmark.runner.run.create_backbone", no_model)
    with pytest.raises(error, match=message.replace("(", r"\(")):
        main(["run", *SMALL, *override, "--out", str(tmp_path)])
    assert not (tmp_path / "per_sample").exists()


def test_config_file_print_config_and_list_append(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["explainers"] == default_explainers() and printed["trainer"]["num_nodes"] == 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**printed, "batch_size": 7}))
    parsed = _run_parser().parse_args(["--config", str(tmp_path / "config.yaml"), "--explainers+=my_cam.py:MyCAM",
                                       "--trainer.devices", "2", "--trainer.precision", "bf16-mixed"])
    assert parsed.batch_size == 7 and parsed.explainers == default_explainers() + ["my_cam.py:MyCAM"]
    assert str(parsed.trainer.devices) == "2" and parsed.trainer.precision == "bf16-mixed"


def test_a_user_method_from_a_file_is_ranked_in_the_leaderboard(tmp_path, capsys, clean_registry):
    source = tmp_path / "my_cam.py"
    source.write_text(
        "from benchmark.explainers import BaseExplainer\n\n\n"
        "class MyCAM(BaseExplainer):\n"
        "    \"\"\"Grad-CAM with squared channel weights.\"\"\"\n\n"
        "    def weights(self, inputs):\n"
        "        return inputs.gradients.mean(dim=(2, 3), keepdim=True) ** 2\n")
    assert main(["run", *SMALL, "--backbones", "[synthetic/res_cnn]", "--explainers", f"[gradcam, {source}:MyCAM]",
                 "--out", str(tmp_path / "out")]) == 0
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| mycam |" in board and "| gradcam |" in board
    assert set(pd.read_csv(tmp_path / "out" / "results.csv")["method"]) == {"gradcam", "mycam"}


def test_bf16_mixed_precision_and_compiled_perturbations_run_end_to_end(reference, tmp_path):
    """`--trainer.precision bf16-mixed` (autocast around predict_step) and Score-CAM's / the curves' `compile`
    option give a complete results.csv; bf16 moves the values only by rounding, compile not at all (float32)."""
    out = tmp_path / "bf16"
    assert main(["run", *SMALL, "--backbones", "[synthetic/res_cnn]", "--out", str(out),
                 "--trainer.precision", "bf16-mixed"]) == 0
    ref = pd.read_csv(reference / "results.csv")
    ref = ref[ref["backbone"] == "synthetic/res_cnn"].set_index(["method", "metric"])
    bf16 = pd.read_csv(out / "results.csv").set_index(["method", "metric"])
    assert list(bf16.index) == list(ref.index) and (bf16["n"] == ref["n"]).all()
    assert bf16["value"].notna().sum() == ref["value"].notna().sum()
    # probabilities in [0, 1]: AUCs and pointing rates move by bf16 rounding only
    for metric in ("deletion", "insertion"):
        assert (bf16.xs(metric, level="metric")["value"] - ref.xs(metric, level="metric")["value"]).abs().max() < 0.05
    fast = tmp_path / "compiled"
    assert main(["run", *SMALL, "--backbones", "[synthetic/res_cnn]", "--out", str(fast), "--explainers",
                 "[scorecam]", "--metrics", "[deletion, insertion]", "--explainer_args", "{scorecam: {compile: true}}",
                 "--metric_args", "{deletion: {compile: true, steps: 4}, insertion: {compile: true, steps: 4}}"]) == 0
    plain = tmp_path / "plain"
    assert main(["run", *SMALL, "--backbones", "[synthetic/res_cnn]", "--out", str(plain), "--explainers",
                 "[scorecam]", "--metrics", "[deletion, insertion]",
                 "--metric_args", "{deletion: {steps: 4}, insertion: {steps: 4}}"]) == 0
    compiled = pd.read_csv(fast / "results.csv")["value"]
    assert (compiled - pd.read_csv(plain / "results.csv")["value"]).abs().max() < 1e-5
