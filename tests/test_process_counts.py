"""`cam-bench run` on 1, 2 and 3 processes, and on 2 torchrun "nodes": the same bytes.

Shards have a fixed composition on any number of processes (:mod:`datamodules.shards`), so the per-sample
values, ``results.csv`` and ``leaderboard.md`` (apart from its date) must not depend on the process count,
also when the shards do not divide evenly among the ranks (5 shards: 2, 2, 1 on 3 processes).
"""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).parents[1]
SHARDS = 5  # 14 samples in batches of 3
SETTINGS = ["--data_args", "{size: 14}", "--batch_size", "3", "--backbones", "[synthetic/res_cnn]",
            "--explainers", "[gradcam, random, center]",
            "--metrics", "[average_drop, coherency, deletion, pointing_game]",
            "--metric_args", "{deletion: {steps: 8}}", "--bootstrap", "50",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
METHODS = ("gradcam", "random", "center")


def _cli(*args, timeout=600):
    """Run the console script in a fresh process (as a user or SLURM would)."""
    proc = subprocess.run([sys.executable, "-m", "benchmark.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _without_provenance(text):
    """The leaderboard without its date and commit (the checkout may gain a commit between two runs)."""
    return [line for line in text.splitlines() if not line.startswith(("| Date |", "| Git commit |"))]


def _shard_files(out):
    return sorted(p.relative_to(out) for p in (out / "per_sample").rglob("shard_*"))


def _assert_same_run(out, reference):
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    assert _without_provenance((out / "leaderboard.md").read_text()) == _without_provenance(
        (reference / "leaderboard.md").read_text())


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _tail(path, chars=4000):
    return path.read_text(errors="replace")[-chars:] if path.exists() else "<no output>"


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The 1-process run (strategy auto), the reference of every other process count."""
    out = tmp_path_factory.mktemp("processes") / "devices1"
    _cli("run", *SETTINGS, "--trainer.devices", "1", "--out", str(out))
    return out


@pytest.mark.slow
def test_one_two_three_processes_give_identical_bytes(single, tmp_path):
    shards = _shard_files(single)
    for method in METHODS:
        parquet = [p for p in shards if p.parent.name == method and p.suffix == ".parquet"]
        assert len(parquet) == SHARDS, (method, parquet)
    for devices in (2, 3):
        out = tmp_path / f"devices{devices}"
        _cli("run", *SETTINGS, "--trainer.devices", str(devices), "--trainer.strategy", "ddp", "--out", str(out))
        _assert_same_run(out, single)
        assert _shard_files(out) == shards, devices
        for name in shards:
            if name.suffix == ".parquet":
                pd.testing.assert_frame_equal(pd.read_parquet(out / name).drop(columns="seconds"),
                                              pd.read_parquet(single / name).drop(columns="seconds"),
                                              check_exact=True, obj=f"{devices} processes: {name}")
            else:  # the data report of the shard
                assert (out / name).read_bytes() == (single / name).read_bytes(), (devices, name)


@pytest.mark.slow
def test_a_resume_that_leaves_a_rank_without_shards(single, tmp_path):
    """Two unfinished shards on three processes: one rank has nothing to compute, and must neither crash
    (Lightning refuses an empty loader on several devices unless told) nor hang the others."""
    out = tmp_path / "resume"
    subprocess.run(["cp", "-r", str(single), str(out)], check=True)
    for shard in (0, 2):
        (out / "per_sample" / "synthetic--res_cnn" / "gradcam" / f"shard_{shard:07d}.parquet").unlink()
    log = _cli("run", *SETTINGS, "--trainer.devices", "3", "--trainer.strategy", "ddp", "--out", str(out)).stderr
    assert "3 of 5 shards finished for every method; computing gradcam 2 shards" in log
    _assert_same_run(out, single)


@pytest.mark.slow
def test_torchrun_two_nodes_match_one_process(single, tmp_path):
    out = tmp_path / "torchrun"
    port, run_id = _free_port(), uuid.uuid4().hex
    agents, logs = [], []
    try:
        for node in range(2):
            logs.append(tmp_path / f"node{node}.log")
            with logs[-1].open("w") as log:
                agents.append(subprocess.Popen(
                    [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                     "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", run_id,
                     "-m", "benchmark.cli", "run", *SETTINGS, "--trainer.devices", "1", "--trainer.num_nodes", "2",
                     "--trainer.strategy", "ddp", "--out", str(out)],
                    stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, start_new_session=True))
        deadline = time.monotonic() + 600
        # stop at the first failure: the other node would wait for its peer until the process group times out
        while any(a.poll() is None for a in agents) and not any(a.poll() for a in agents) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        codes = [a.poll() for a in agents]
        report = "\n".join(f"--- node {n} (exit {c}) ---\n{_tail(log)}" for n, (c, log) in enumerate(zip(codes, logs)))
        assert codes == [0, 0], report
    finally:
        for agent in agents:  # SIGTERM: the agent stops its workers (they run in sessions of their own)
            if agent.poll() is None:
                agent.terminate()
        for agent in agents:
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait(timeout=60)
    _assert_same_run(out, single)
    assert _shard_files(out) == _shard_files(single)
