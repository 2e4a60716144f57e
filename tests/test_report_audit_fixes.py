"""Audit fixes: merges compare every shared backbone, partial runs are marked in the LaTeX, a merged data report
counts each shard once, merge refusals are one line (exit 2), and the folder lock's takeover and release are atomic."""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import benchmark.runner.sharing as sharing
from benchmark.cli import console, main
from benchmark.runner.sharing import LOCK_NAME, folder_lock

ROOT = Path(__file__).parents[1]
TINY = ["run", "--data_args", "{size: 4}", "--batch_size", "2", "--metrics", "[average_drop, complexity]",
        "--bootstrap", "20", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]

# A worker that takes the folder lock with a delay injected into the liveness check (standing in for being
# descheduled between reading a stale lock and replacing it), then holds it until the test says release.
_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import benchmark.runner.sharing as sharing
    out, go, release, delay = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    real = sharing._alive
    sharing._alive = lambda pid: (time.sleep(0.4), real(pid))[1]
    deadline = time.monotonic() + 20
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    try:
        with sharing.folder_lock(out):
            print("acquired", flush=True)
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
    except sharing.FolderLocked:
        print("refused", flush=True)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """a: vgg_cnn; b: res_cnn (seed 0) with gradcam and center; c: res_cnn with other random weights (seed 1)."""
    root = tmp_path_factory.mktemp("runs")
    for name, backbone, seed, explainers in (("a", "vgg_cnn", 0, "[gradcam]"), ("b", "res_cnn", 0, "[gradcam, center]"),
                                             ("c", "res_cnn", 1, "[gradcampp]")):
        assert main([*TINY, "--backbones", f"[synthetic/{backbone}]", "--weights", "random", "--seed", str(seed),
                     "--explainers", explainers, "--out", str(root / name)]) == 0
    return root


def _weights(run, backbone="synthetic/res_cnn"):
    return json.loads((run / "run.json").read_text())["backbones"][backbone]["weights_sha256"]


@pytest.mark.parametrize("order", ["bc", "abc", "acb", "cab"])
def test_a_shared_backbone_is_compared_in_any_order_of_the_runs(runs, tmp_path, capsys, order):
    assert _weights(runs / "b") != _weights(runs / "c")  # the premise: two different models named alike
    dirs = [str(runs / r) for r in order]
    out = tmp_path / "merged" / "leaderboard.md"
    assert console(["leaderboard", *dirs, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cam-bench: error: Runs ") and "Traceback" not in err and len(err.splitlines()) == 1
    assert "backbones.synthetic/res_cnn.weights_sha256" in err and "--force" in err
    assert str(runs / "b") in err and str(runs / "c") in err  # names the two runs that hold the two models
    assert not out.exists() and not (out.parent / "results.csv").exists()
    assert main(["leaderboard", *dirs, "--out", str(out), "--force"]) == 0  # --force: merged, and marked
    assert "| Merged with --force | differing: backbones.synthetic/res_cnn.weights_sha256 |" in out.read_text()


def test_merge_refusals_are_one_line_with_exit_2(runs, tmp_path, capsys):
    b = str(runs / "b")
    for args, says in ((["leaderboard", b, str(runs / "a")], "needs --out FILE"),
                       (["leaderboard", b, b, "--out", str(tmp_path / "m.md")], "render each run on its own"),
                       (["leaderboard", str(tmp_path), "--out", str(tmp_path / "m.md")], "run.json' not found")):
        assert console(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("cam-bench: error: ") and says in err and "Traceback" not in err, err


def _copy(run, to, keep=None):
    shutil.copytree(run, to)
    for method in (to / "per_sample" / "synthetic--res_cnn").iterdir():
        if keep is not None and method.name not in ("_data", keep):
            shutil.rmtree(method)
    return to


def test_a_merged_data_report_counts_each_shard_once(runs, tmp_path, capsys):
    gradcam, center = _copy(runs / "b", tmp_path / "g", "gradcam"), _copy(runs / "b", tmp_path / "c", "center")
    for run in (gradcam, center):  # the same data read by both runs: 1 box clipped in shard 0, 2 in shard 1
        for shard, clipped in ((0, 1), (1, 2)):
            path = run / "per_sample" / "synthetic--res_cnn" / "_data" / f"shard_{shard:07d}.json"
            report = json.loads(path.read_text())
            path.write_text(json.dumps({**report, "counts": {**report["counts"], "boxes_clipped": clipped}}))
    (center / "per_sample" / "synthetic--res_cnn" / "_data" / "shard_0000001.json").unlink()  # a shard on one run
    out = tmp_path / "merged" / "leaderboard.md"
    assert main(["leaderboard", str(gradcam), str(center), "--out", str(out)]) == 0
    assert "Data report: boxes clipped 3, boxes dropped 0," in out.read_text()  # 1 + 2, each shard once
    path = center / "per_sample" / "synthetic--res_cnn" / "_data" / "shard_0000000.json"
    path.write_text(path.read_text().replace('"boxes_clipped": 1', '"boxes_clipped": 5'))  # not the same data
    assert console(["leaderboard", str(gradcam), str(center), "--out", str(out)]) == 2
    assert "hold different data reports for synthetic/res_cnn (shard_0000000.json" in capsys.readouterr().err
    assert main(["leaderboard", str(gradcam), str(center), "--out", str(out), "--force"]) == 0
    assert "Data report: -- (Runs " in out.read_text() and "boxes clipped 3" not in out.read_text()


def _tex_cells(tex):
    """``{method: [cell, ...]}`` of the first booktabs table, with ``\\bfseries`` dropped."""
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()
    rows = [line.rstrip("\\ ").replace("\\bfseries ", "").split(" & ") for line in body]
    return {r[0]: r[1:] for r in rows}


def test_a_partial_run_says_so_and_its_row_counts_in_the_typeset_caption(runs, tmp_path):
    run = _copy(runs / "b", tmp_path / "partial")
    (run / "per_sample" / "synthetic--res_cnn" / "gradcam" / "shard_0000001.parquet").unlink()  # 2 of 4 rows
    assert main(["leaderboard", str(run), "--allow_partial"]) == 0
    tex = (run / "leaderboard.tex").read_text()
    caption = tex.split("\\caption{")[1].split("}\n")[0]
    assert caption.startswith("synthetic / synthetic/res\\_cnn: INCOMPLETE (a partial run, not final): ")
    assert "2 of 4 images for gradcam" in caption and "4 of 4 images for center" in caption
    assert "mean over 4 images" not in tex
    complete = (runs / "b" / "leaderboard.tex").read_text()
    assert "mean over 4 images" in complete and "INCOMPLETE" not in complete


def test_undefined_values_are_marked_in_the_latex_as_in_the_markdown(runs, tmp_path):
    run = _copy(runs / "b", tmp_path / "undefined")
    for method, undefined in (("gradcam", [0, 1, 2]), ("center", [3])):  # 3 of 4, and 1 of 4 undefined
        for path in (run / "per_sample" / "synthetic--res_cnn" / method).glob("*.parquet"):
            frame = pd.read_parquet(path)
            frame.loc[frame["index"].isin(undefined), "average_drop"] = float("nan")
            frame.to_parquet(path, index=False)
    assert main(["leaderboard", str(run)]) == 0
    markdown = (run / "leaderboard.md").read_text()
    assert "| gradcam | – (3 of 4 undefined) |" in markdown and " (1 undefined) |" in markdown
    cells = _tex_cells((run / "leaderboard.tex").read_text())
    assert cells["gradcam"][0] == "-- (3 of 4 undefined)"
    assert cells["center"][0].endswith(" (1 undefined)") and "$\\pm$" in cells["center"][0]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_runs_finding_the_same_stale_lock_do_not_both_take_it(tmp_path):
    out = tmp_path / "folder"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "start": "x"}))
    go, release = tmp_path / "go", tmp_path / "release"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(out), str(go), str(release), str(delay)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for delay in (0.0, 0.15)]
    try:
        time.sleep(0.3)  # both started (importing sharing takes ~0.1 s)
        go.touch()
        said = [p.stdout.readline().strip() for p in procs]  # each decides while the other is still inside
        assert sorted(said) == ["acquired", "refused"], said
        winner = procs[said.index("acquired")]
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == winner.pid  # the loser left it alone
    finally:
        release.touch()
        for proc in procs:
            proc.communicate(timeout=30)  # waits, and closes its pipe
    assert not (out / LOCK_NAME).exists()
    assert sorted(p.name for p in out.iterdir()) == []  # no temporary file left either


def test_release_removes_only_a_lock_that_is_still_its_own(tmp_path):
    out = tmp_path / "folder"
    other = {"host": socket.gethostname(), "pid": os.getppid(), "start": "2026-01-01T00:00:00+00:00", "token": "b"}
    with folder_lock(out):
        mine = json.loads((out / LOCK_NAME).read_text())
        assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
        (out / LOCK_NAME).unlink()  # someone deleted it by hand, and another run took the folder
        (out / LOCK_NAME).write_text(json.dumps(other))
    assert json.loads((out / LOCK_NAME).read_text()) == other
    with pytest.raises(Exception, match=f"PID {os.getppid()}"):
        with folder_lock(out):
            pass
    (out / LOCK_NAME).unlink()
    with folder_lock(out):
        pass
    assert list(out.iterdir()) == []  # its own lock is released


def test_a_file_system_without_flock_still_locks_and_releases_with_a_warning(tmp_path, monkeypatch, caplog):
    def no_flock(fd, operation):
        raise OSError(38, "Function not implemented")  # ENOSYS: e.g. Lustre mounted without flock

    monkeypatch.setattr(sharing.fcntl, "flock", no_flock)
    out = tmp_path / "folder"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "start": "x"}))
    with folder_lock(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()  # the stale lock taken over
    assert not (out / LOCK_NAME).exists() and "no flock on" in caplog.text
