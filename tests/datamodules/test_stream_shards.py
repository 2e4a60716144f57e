"""Streams resume and give the same bytes on 1 or N processes: fixed shards from the Parquet footers'
row counts (datamodules/stream_shards.py), through `cam-bench run`; sources without footers say so,
run whole, and never count an interrupted attempt's rows twice."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datamodules.hf_stream import HFStream
from datamodules.stream_shards import StreamShards, blocks, rows_in

SIZES = (6, 5, 4, 5)  # rows per Parquet file (0-5, 6-10, 11-14, 15-19): shards of 3 rows 9-11 straddle files


def _png(k):
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(k).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(data, "PNG")
    return data.getvalue()


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    root, k = tmp_path_factory.mktemp("stream"), 0
    for shard, size in enumerate(SIZES):
        rows = {"image": [{"bytes": _png(k + i), "path": f"img_{k + i:02d}.png"} for i in range(size)],
                "label": [(k + i) % 4 for i in range(size)]}
        datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(
            str(root / f"val-{shard}.parquet"))
        k += size
    return root


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_cache")


def _stream(parquet, **kwargs):
    return HFStream("parquet", "train", data_files=str(parquet / "*.parquet"), preprocessing={"crop_size": 16},
                    **kwargs)


def test_rows_in_reads_the_requested_rows_in_order(parquet):
    stream = _stream(parquet)
    assert stream.sizes == list(SIZES)
    got = [(i, row["image"]["path"]) for i, row in rows_in(stream.base, stream.sizes, [(4, 7), (14, 15), (19, 20)])]
    assert got == [(i, f"img_{i:02d}.png") for i in (4, 5, 6, 14, 19)]


@pytest.mark.parametrize("world_size, num_workers", [(1, 0), (2, 2), (3, 0), (3, 2)])
def test_each_shard_once_with_its_fixed_composition(parquet, world_size, num_workers):
    stream, seen = _stream(parquet), {}
    whole = {s["index"]: s for s in _stream(parquet)}
    for rank in range(world_size):
        shards = StreamShards(stream, 20, 3, rank, world_size, skip={4})
        assert shards.shards == blocks([0, 1, 2, 3, 5, 6], world_size)[rank]  # contiguous blocks per rank
        loader = DataLoader(shards, num_workers=num_workers, **shards.loader_kwargs())
        for batch in loader:
            assert batch["shard"] not in seen
            seen[batch["shard"]] = batch
    assert sorted(seen) == [0, 1, 2, 3, 5, 6]  # shard 4 finished: skipped
    for shard, batch in seen.items():
        assert batch["index"].tolist() == list(range(3 * shard, min(3 * shard + 3, 20)))
        for i, image in zip(batch["index"].tolist(), batch["image"]):
            torch.testing.assert_close(image, whole[i]["image"], rtol=0, atol=0)


def test_the_runs_limit_cuts_the_last_shard(parquet):
    batches = list(StreamShards(_stream(parquet), 8, 3))
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]


RUN = ["run", "--data", "hf", "--backbones", "[resnet18]", "--num_classes", "4", "--explainers", "[gradcam, center]",
       "--metrics", "[complexity, average_drop]", "--target", "prediction", "--batch_size", "3", "--bootstrap", "10",
       "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]


def _cli(tmp_path, *args):
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    proc = subprocess.run([sys.executable, "-m", "benchmark.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parents[2], env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


@pytest.mark.slow
def test_a_streamed_run_resumes_and_gives_the_same_bytes_on_two_processes(parquet, tmp_path):
    data = ["--data_args", f"{{path: parquet, split: train, data_files: {parquet}/*.parquet}}"]
    single, double = tmp_path / "single", tmp_path / "double"
    _cli(tmp_path, *RUN, *data, "--out", str(single))
    assert len(list((single / "per_sample" / "resnet18" / "gradcam").glob("shard_*.parquet"))) == 7
    _cli(tmp_path, *RUN, *data, "--out", str(double), "--trainer.devices", "2", "--trainer.strategy", "ddp",
         "--num_workers", "2")
    assert (double / "results.csv").read_bytes() == (single / "results.csv").read_bytes()
    for path in (single / "per_sample").rglob("shard_*.parquet"):
        other = pd.read_parquet(double / path.relative_to(single)).drop(columns="seconds")
        pd.testing.assert_frame_equal(pd.read_parquet(path).drop(columns="seconds"), other)
    expected = (single / "results.csv").read_bytes()
    for shard in (3, 5):  # rows 9-11 straddle files 1 and 2; rows 15-17 open file 3: recomputed alone
        for path in (single / "per_sample" / "resnet18").glob(f"*/shard_{shard:07d}.parquet"):
            path.unlink()
    log = _cli(tmp_path, *RUN, *data, "--out", str(single))
    assert "5 of 7 shards finished for every method; computing gradcam 2 shards, center 2 shards" in log
    assert (single / "results.csv").read_bytes() == expected
    meta = json.loads((single / "run.json").read_text())
    assert meta["fingerprint"]["subset"]["n"] == 20
    assert meta["provenance"][-1]["shards"] == {"gradcam": [3, 5], "center": [3, 5]}


@pytest.mark.slow
def test_a_stream_without_footers_runs_whole_and_says_it_cannot_resume(tmp_path):
    for k in range(7):
        folder = tmp_path / "images" / "train" / f"c{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img_{k}.png").write_bytes(_png(k))
    out = tmp_path / "run"
    args = [*RUN, "--data_args", f"{{path: imagefolder, split: train, data_dir: {tmp_path / 'images'}}}",
            "--out", str(out)]
    log = _cli(tmp_path, *args)
    assert "has no Parquet footers (row counts): this run cannot resume" in log
    board = (out / "leaderboard.md").read_text()
    assert "N = 7 (counted: the stream has no row count)" in board
    assert "| Completeness | complete: every backbone's stream was read to the end |" in board
    expected = (out / "results.csv").read_bytes()
    assert "nothing to recompute" in _cli(tmp_path, *args)
    meta = json.loads((out / "run.json").read_text())  # an interrupted attempt: not complete, a stale file
    meta["backbones"]["resnet18"]["complete"] = False
    (out / "run.json").write_text(json.dumps(meta))
    folder = out / "per_sample" / "resnet18" / "gradcam"
    (folder / "rank0_batch_0_0000009.parquet").write_bytes((folder / "rank0_batch_0_0000000.parquet").read_bytes())
    log = _cli(tmp_path, *args)
    assert "removing 10 per-sample files of an interrupted attempt" in log  # 2 x 3 batches + 3 data reports + 1
    assert (out / "results.csv").read_bytes() == expected  # recomputed whole, nothing counted twice
    assert json.loads((out / "run.json").read_text())["backbones"]["resnet18"]["complete"] is True
