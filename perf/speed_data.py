"""Data-loading benchmark: memory stays flat while streaming, and the loader outpaces the model.

``python -m perf.speed_data`` measures, on this machine, and writes ``leaderboards/speed_data.md``:

1. Memory -- the process RSS after streaming 1,000 and after 20,000 SyntheticShapes images
   through the datamodule's loader (in-process, ``num_workers=0``, so every allocation counts).
   Target: growth < 100 MB.
2. Throughput -- a mini ImageNet written in the official layout (JPEGs at the val set's typical
   500 x 375, ``LOC_val_solution.csv``, ``LOC_synset_mapping.txt``) read by ``ImageNetValDataModule``
   with 2 workers (decode + resize 256 + crop 224 + normalise + boxes), against the resnet18
   forward pass at batch 32 on the same machine. Target: loader images/s > forward images/s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import torch
from PIL import Image
from tabulate import tabulate

from datamodules.imagenet import ImageNetValDataModule
from datamodules.shapes import render_scene
from datamodules.synthetic import SyntheticShapesDataModule
from perf.timing import command_line, median_time, run_header, write_report

__all__ = ["main", "rss_mb", "write_mini_imagenet"]


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


def stream_rss(total: int, checkpoint: int, batch_size: int) -> tuple:
    """RSS after ``checkpoint`` and after ``total`` images of a SyntheticShapes stream."""
    dm = SyntheticShapesDataModule(size=total, batch_size=batch_size)
    dm.setup("predict")
    seen, at_checkpoint, start = 0, None, time.perf_counter()
    for batch in dm.predict_dataloader():
        seen += len(batch["index"])
        if at_checkpoint is None and seen >= checkpoint:
            at_checkpoint = rss_mb()
    return at_checkpoint, rss_mb(), seen / (time.perf_counter() - start)


def write_mini_imagenet(root: Path, count: int, size=(500, 375)) -> Path:
    """``count`` JPEGs (synthetic scenes upscaled to ``size``) with a Kaggle-format CSV and synset mapping."""
    val = root / "val"
    val.mkdir(parents=True, exist_ok=True)
    synsets = [f"n{10000000 + k:08d}" for k in range(10)]
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{s} class {k}\n" for k, s in enumerate(synsets)))
    rows = ["ImageId,PredictionString"]
    for i in range(count):
        scene = render_scene(0, "test", i, size=128)
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        Image.fromarray(scene.image).resize(size, Image.BILINEAR).save(val / f"{stem}.JPEG", quality=90)
        sx, sy = size[0] / 128, size[1] / 128
        boxes = " ".join(f"{synsets[scene.label]} {int(b[0] * sx)} {int(b[1] * sy)} {int(b[2] * sx) - 1} "
                         f"{int(b[3] * sy) - 1}" for b in scene.boxes)
        rows.append(f"{stem},{boxes}")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return root


def loader_rate(root: Path, workers: int, batch_size: int, rounds: int = 2) -> float:
    """Images/s of ImageNetValDataModule (best of ``rounds`` full passes after one warm-up pass)."""
    dm = ImageNetValDataModule(root, batch_size=batch_size, num_workers=workers)
    dm.prepare_data()
    dm.setup("predict")
    rates = []
    for _ in range(rounds + 1):
        start, seen = time.perf_counter(), 0
        for batch in dm.predict_dataloader():
            seen += len(batch["index"])
        rates.append(seen / (time.perf_counter() - start))
    return max(rates[1:])


@torch.no_grad()
def forward_rate(batch_size: int, repeats: int = 5) -> float:
    """Images/s of a random-init torchvision resnet18 forward at 224 x 224."""
    from torchvision.models import resnet18

    model, x = resnet18().eval(), torch.randn(batch_size, 3, 224, 224)
    return batch_size / median_time({"forward": lambda: model(x)}, repeats)["forward"]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.speed_data", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="images streamed for the memory check")
    parser.add_argument("--checkpoint", type=int, default=1_000, help="RSS reference point")
    parser.add_argument("--jpegs", type=int, default=256, help="mini ImageNet size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="leaderboards/speed_data.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rss_1k, rss_all, synth_rate = stream_rss(args.images, args.checkpoint, 64)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_mini_imagenet(Path(tmp), args.jpegs)
        rate_workers = loader_rate(root / "val", args.workers, args.batch_size)
        rate_serial = loader_rate(root / "val", 0, args.batch_size)
    fwd = forward_rate(args.batch_size)
    growth = rss_all - rss_1k
    rows = [
        [f"RSS after {args.checkpoint:,} SyntheticShapes images (MB)", f"{rss_1k:.0f}", ""],
        [f"RSS after {args.images:,} SyntheticShapes images (MB)", f"{rss_all:.0f}", ""],
        ["RSS growth (MB)", f"{growth:.1f}", f"< 100: {'met' if growth < 100 else 'NOT met'}"],
        ["SyntheticShapes generation, in-process (images/s)", f"{synth_rate:.0f}", ""],
        [f"mini ImageNet loader, {args.workers} workers (images/s)", f"{rate_workers:.0f}", ""],
        ["mini ImageNet loader, in-process (images/s)", f"{rate_serial:.0f}", ""],
        [f"resnet18 forward, batch {args.batch_size} (images/s)", f"{fwd:.0f}", ""],
        ["loader / forward", f"{rate_workers / fwd:.2f}", f"> 1: {'met' if rate_workers > fwd else 'NOT met'}"],
    ]
    text = "\n".join([
        "# Data loading: memory and throughput",
        "",
        *run_header(command_line("perf.speed_data", argv),
                    time.perf_counter() - start),
        f"- mini ImageNet: {args.jpegs} JPEGs of 500x375 (quality 90), Kaggle CSV boxes, default preprocessing "
        f"(resize 256, crop 224); batch {args.batch_size}; loader rates are the best of 2 passes after a warm-up",
        "",
        tabulate(rows, headers=["measurement", "value", "target"], tablefmt="pipe"),
        "",
        "The loader and the forward were measured one after the other on the same cores; in a real run",
        "they share them, so the margin above 1 is what keeps the model, not the loader, the bottleneck.",
        "",
    ])
    write_report(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
