"""The run folder's guarantees (benchmark/runner/folder.py): never mixed, one writer, signals, completeness,
overwrite only what a run wrote, refusals as one line with exit code 2."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.cli import console, main
from benchmark.runner.folder import LOCK_NAME, READY_NAME, SettingsDiffer, announce_ready, await_ready, launch_token

TINY = ["run", "--data_args", "{size: 4}", "--batch_size", "2", "--backbones", "[synthetic/res_cnn]",
        "--explainers", "[gradcam, center]", "--metrics", "[average_drop, complexity]", "--bootstrap", "20",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main([*TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("extra, field", [
    (["--batch_size", "4"], "batch_size: 2 -> 4"),
    (["--weights", "random"], "weights: None -> 'random'"),
    (["--trainer.precision", "bf16-mixed"], "precision: '32-true' -> 'bf16-mixed'"),
])
def test_a_resume_with_other_settings_is_refused_as_one_line(tiny_run, capsys, extra, field):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*.parquet")}
    args = [*TINY, "--out", str(tiny_run), *extra]
    assert console(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cam-bench: error: ") and field in err and "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*.parquet")} == before
    assert not (tiny_run / LOCK_NAME).exists()  # released on the error path


def test_other_weights_on_resume_are_refused(tiny_run, tmp_path, capsys):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(tiny_run), str(out)], check=True)
    meta = json.loads((out / "run.json").read_text())
    recorded = meta["backbones"]["synthetic/res_cnn"]["weights_sha256"]
    assert len(recorded) == 64
    meta["backbones"]["synthetic/res_cnn"]["weights_sha256"] = "0" * 64
    (out / "run.json").write_text(json.dumps(meta))
    for shard in (out / "per_sample").rglob("shard_0000001.parquet"):
        shard.unlink()
    assert console([*TINY, "--out", str(out)]) == 2
    assert "computed with other weights" in capsys.readouterr().err


def test_other_preprocessing_on_resume_is_refused(tiny_run, tmp_path, capsys):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(tiny_run), str(out)], check=True)
    meta = json.loads((out / "run.json").read_text())
    crop = meta["backbones"]["synthetic/res_cnn"]["preprocessing"]["crop_size"]
    meta["backbones"]["synthetic/res_cnn"]["preprocessing"]["crop_size"] = 64  # e.g. a changed default
    (out / "run.json").write_text(json.dumps(meta))
    (out / "per_sample" / "synthetic--res_cnn" / "center" / "shard_0000001.parquet").unlink()
    assert console([*TINY, "--out", str(out)]) == 2
    assert f"computed with other preprocessing (crop_size: 64 -> {crop})" in capsys.readouterr().err


def test_box_metrics_on_data_without_boxes_are_refused_before_any_model(tmp_path, capsys, monkeypatch):
    import benchmark.runner.run as run

    monkeypatch.setattr(run, "create_backbone", lambda *a, **k: pytest.fail("a model was built"))
    out = tmp_path / "random"
    args = ["run", "--data", "random", "--data_args", "{size: 4, num_classes: 10}", "--backbones", "[resnet18]",
            "--num_classes", "10", "--explainers", "[center]", "--metrics", "[complexity, pointing_game, max_box_acc]",
            "--out", str(out)]
    assert console(args) == 2
    err = capsys.readouterr().err
    assert "Metrics ['pointing_game', 'max_box_acc'] need boxes, which the 'random' data do not provide; pass " \
           "--metrics \"[complexity]\"" in err
    assert not out.exists()


def test_a_merge_of_one_backbone_initialised_under_two_seeds_is_refused(tmp_path):
    """--seed seeds random init: two runs of the same random-init backbone under different seeds hold two
    models, so their methods must not be ranked in one table."""
    runs = []
    for seed, method in ((0, "center"), (1, "fakecam")):
        runs.append(tmp_path / f"seed{seed}")
        assert main([*TINY, "--weights", "random", "--seed", str(seed), "--explainers", f"[{method}]",
                     "--out", str(runs[-1])]) == 0
    hashes = {json.loads((r / "run.json").read_text())["backbones"]["synthetic/res_cnn"]["weights_sha256"]
              for r in runs}
    assert len(hashes) == 2
    with pytest.raises(ValueError, match=r"differ in .*backbones\.synthetic/res_cnn\.weights_sha256"):
        main(["leaderboard", *map(str, runs), "--out", str(tmp_path / "merged.md")])


def test_provenance_and_completeness_in_the_header(tiny_run):
    meta = json.loads((tiny_run / "run.json").read_text())
    assert [p["backbone"] for p in meta["provenance"]] == ["synthetic/res_cnn"]
    assert {"versions", "git_commit", "date", "shards"} <= set(meta["provenance"][0])
    assert meta["provenance"][0]["shards"] == {"gradcam": [0, 1], "center": [0, 1]}  # the shards it wrote
    board = (tiny_run / "leaderboard.md").read_text()
    assert "| Completeness | complete: 4 of 4 samples for every backbone and method |" in board
    assert "| Precision, batch size | 32-true, 2 |" in board


def test_a_partial_folder_renders_as_incomplete_and_the_cli_says_so(tiny_run, tmp_path, capsys):
    out = tmp_path / "partial"
    subprocess.run(["cp", "-r", str(tiny_run), str(out)], check=True)
    (out / "per_sample" / "synthetic--res_cnn" / "gradcam" / "shard_0000001.parquet").unlink()
    assert main(["leaderboard", str(out)]) == 3
    assert "--allow_partial" in capsys.readouterr().err
    board = (out / "leaderboard.md").read_text()
    assert "**incomplete**" in board and "synthetic/res_cnn / gradcam: 2 of 4" in board
    assert "**Incomplete: 2 of 4 samples** for gradcam" in board
    assert main(["leaderboard", str(out), "--allow_partial"]) == 0


def test_a_live_lock_is_refused_and_a_stale_one_taken_over(tmp_path, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "start": "2026-01-01T00:00:00+00:00"}
    (out / LOCK_NAME).write_text(json.dumps(holder))
    assert console([*TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"PID {os.getppid()}" in err and "in use by another cam-bench run" in err
    assert not (out / "run.json").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({**holder, "pid": dead.pid}))
    assert main([*TINY, "--out", str(out)]) == 0
    assert (out / "results.csv").is_file() and not (out / LOCK_NAME).exists()


def test_overwrite_removes_only_what_the_run_wrote(tiny_run, tmp_path, capsys):
    stranger = tmp_path / "stranger"
    (stranger / "logs").mkdir(parents=True)
    (stranger / "logs" / "notes.txt").write_text("mine")
    assert console([*TINY, "--out", str(stranger), "--overwrite", "true"]) == 2
    assert "holds no run.json" in capsys.readouterr().err
    assert (stranger / "logs" / "notes.txt").read_text() == "mine"
    out = tmp_path / "own"
    subprocess.run(["cp", "-r", str(tiny_run), str(out)], check=True)
    (out / "logs" / "notes.txt").write_text("mine")
    (out / "figures" / "my_plot.png").write_bytes(b"x")
    assert main([*TINY, "--out", str(out), "--overwrite", "true"]) == 0
    assert (out / "logs" / "notes.txt").read_text() == "mine" and (out / "figures" / "my_plot.png").is_file()
    assert len(json.loads((out / "run.json").read_text())["provenance"]) == 1  # the old run's record is gone


def test_a_resume_with_other_package_versions_warns_and_records_them(tiny_run, tmp_path, caplog):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(tiny_run), str(out)], check=True)
    meta = json.loads((out / "run.json").read_text())
    meta["provenance"][0]["versions"]["torch"] = "1.0.0"
    (out / "run.json").write_text(json.dumps(meta))
    (out / "per_sample" / "synthetic--res_cnn" / "center" / "shard_0000001.parquet").unlink()
    assert main([*TINY, "--out", str(out)]) == 0
    assert "other package versions than its results so far (torch 1.0.0 -> " in caplog.text
    provenance = json.loads((out / "run.json").read_text())["provenance"]
    assert provenance[0]["versions"]["torch"] == "1.0.0"  # never rewritten
    assert provenance[1]["shards"] == {"center": [1]} and provenance[1]["versions"]["torch"] != "1.0.0"
    board = (out / "leaderboard.md").read_text()
    assert "torch 1.0.0" in board and f"torch {provenance[1]['versions']['torch']}" in board


def test_a_refused_backbone_leaves_a_new_folder_as_it_was(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    out = tmp_path / "new"
    args = [*TINY, "--backbones", "[torchvision/resnet18]", "--weights", "default", "--out", str(out)]
    assert console(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cam-bench: error: ") and "resnet18-f37072fd.pth" in err and "Traceback" not in err
    assert not out.exists()
    (out / "mine").mkdir(parents=True)  # an existing folder keeps what it held, and only that
    assert console(args) == 2
    assert sorted(p.name for p in out.iterdir()) == ["mine"]


def test_ranks_of_an_external_launch_wait_for_rank_zeros_folder(tmp_path, monkeypatch):
    """torchrun / srun start every rank at once: ranks > 0 read run.json only once rank 0 announced it for
    this launch (an older launch's announcement does not count), and share rank 0's refusal."""
    for name in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_STEP_ID"):
        monkeypatch.delenv(name, raising=False)
    assert launch_token() is None  # one process, or Lightning's launcher (it starts the others after prepare)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job7")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29500")
    token = launch_token()
    assert token.startswith("torchrun:job7:") and token.endswith(":29500")
    announce_ready(tmp_path, "torchrun:an-older-launch")
    with pytest.raises(TimeoutError, match="did not prepare"):
        await_ready(tmp_path, token, timeout=0.5, poll=0.05)
    announce_ready(tmp_path, token)
    await_ready(tmp_path, token, timeout=0.5)
    announce_ready(tmp_path, token, "SettingsDiffer: batch_size: 2 -> 4")
    with pytest.raises(SettingsDiffer, match="rank 0 refused the run: SettingsDiffer: batch_size: 2 -> 4"):
        await_ready(tmp_path, token, timeout=0.5)
    assert (tmp_path / READY_NAME).is_file()


def test_random_data_runs_in_fixed_shards(tmp_path):
    out = tmp_path / "random"
    args = ["run", "--data", "random", "--data_args", "{size: 5, num_classes: 10}", "--backbones", "[resnet18]",
            "--num_classes", "10", "--explainers", "[center]", "--metrics", "[complexity]", "--batch_size", "2",
            "--bootstrap", "10", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    assert main([*args, "--out", str(out)]) == 0
    assert len(list((out / "per_sample" / "resnet18" / "center").glob("shard_*.parquet"))) == 3
    assert "complete: 5 of 5 samples" in (out / "leaderboard.md").read_text()


def test_a_name_escaping_runs_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert console([*TINY, "--name", "../../x"]) == 2
    assert "Expected `name`" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_stops_at_a_batch_boundary_and_the_rerun_finishes(tmp_path):
    args = [*TINY, "--data_args", "{size: 24}", "--explainers", "[gradcam, gradcampp]"]
    out = tmp_path / "term"
    folder = out / "per_sample" / "synthetic--res_cnn" / "gradcampp"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 300
    while len(list(folder.glob("shard_*.parquet"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the run finished before it could be stopped"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "stopped by SIGTERM at a batch boundary" in err and "rerun the same command to resume" in err
    done = len(list(folder.glob("shard_*.parquet")))
    assert 2 <= done < 12 and not (out / LOCK_NAME).exists()
    assert not list(out.rglob("*.tmp"))
    assert main([*args, "--out", str(out)]) == 0
    assert len(list(folder.glob("shard_*.parquet"))) == 12


def test_top_k_follows_the_metrics_and_a_smaller_one_is_refused_up_front(tmp_path, capsys):
    from benchmark.runner.config import RunConfig

    assert RunConfig(data="imagenet").resolved().top_k == 5  # localization top-5: the ImageNet defaults run
    assert RunConfig().resolved().top_k == 2
    args = [*TINY, "--metrics", "[localization_error]", "--metric_args", "{localization_error: {top_k: [1, 5]}}",
            "--top_k", "2", "--out", str(tmp_path / "k")]
    assert console(args) == 2
    assert "Expected --top_k >= 5" in capsys.readouterr().err and not (tmp_path / "k" / "run.json").exists()
