"""Chunk-size sweep of the masked-forward explainers: which ``chunk_size`` is fastest on this device.

Run ``python -m perf.chunks --out leaderboards/speed_chunks.md``. For each backbone (``create_backbone``'s
default weights, eval mode, the harness's fixed images and classes, :class:`~perf.measure.Bench`) and explainer
taking ``chunk_size``
(Score-CAM, SS-CAM, IS-CAM) it times the explainer on ``--batch`` images (its chunks are taken across the batch,
as in a run) at every ``--chunks`` value and at its default in the same alternated rounds (one warm-up call each on
a ``--warmup-size`` image: 64, or the input size of a model with a fixed-size head such as ``synthetic/vgg_cnn``),
and reports milliseconds per image, the ratio to the default (the median of the per-round ratios
[lowest-highest]) and the largest difference of the maps from the default's (0: bitwise the same maps, the chunk
only groups the masked forwards).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import List

import torch

from benchmark.explainers import create_explainer
from benchmark.runtime.backbones import create_backbone
from perf.measure import Bench
from perf.projection import _random_weights
from perf.report import _spread_cell
from perf.timing import median_time, round_ratios, run_header, write_report

__all__ = ["measure", "render"]


def measure(args: argparse.Namespace) -> List[list]:
    """One row per backbone, explainer and chunk size: ``[backbone, explainer, chunk, ms, ratio cell, diff]``."""
    rows: List[list] = []
    device = torch.device(args.device)
    for name in args.backbones:
        torch.manual_seed(args.seed)
        model, _ = create_backbone(name)
        model = model.to(device).eval().requires_grad_(True)
        layer = create_explainer("gradcam", model, input_size=(3, args.size, args.size))
        bench = Bench(name, model, layer.target_layer, args.size, device, args.repeats, args.seed, args.pause,
                      layer.layout)
        x, t = bench.inputs(args.batch)
        small = torch.randn(1, 3, args.warmup_size, args.warmup_size, device=device)
        shape = (3, args.size, args.size)
        for explainer in args.explainers:
            default = create_explainer(explainer, model, input_size=shape)
            chunks = [c for c in args.chunks if c != default.chunk_size]
            runs = {"default": default,
                    **{str(c): create_explainer(explainer, model, input_size=shape, chunk_size=c) for c in chunks}}
            calls = {label: (lambda e=e: e(x, t)) for label, e in runs.items()}
            warm = {label: (lambda e=e: e(small, t[:1])) for label, e in runs.items()}
            rounds: dict = {}
            times = median_time(calls, args.repeats, bench.sync, warm, pause=args.pause, rounds=rounds)
            reference = runs["default"](x, t)
            for label, e in runs.items():
                ratios = round_ratios(rounds, label, "default")
                cell = _spread_cell(statistics.median(ratios), (min(ratios), max(ratios)))
                diff = 0.0 if label == "default" else (e(x, t) - reference).abs().max().item()
                chunk = f"{e.chunk_size} (default)" if label == "default" else label
                per_image = times[label] / args.batch
                rows.append([name, explainer, chunk, per_image * 1e3, cell, diff])
                print(f"  {name} {explainer} chunk {chunk}: {per_image:.3g} s / image, {cell} x the default, "
                      f"diff {diff:.3g}", flush=True)
    return rows


def _images(batch: int) -> str:
    """``"one image"`` or ``"32 images"``."""
    return "one image" if batch == 1 else f"{batch} images"


def _weights(backbones: List[str]) -> str:
    """What weights ``create_backbone(name)`` gives the backbones: random init, or the shipped checkpoints
    (``synthetic/``) and pretrained models (``hf/``).

    Examples:
        >>> _weights(["resnet18"]), _weights(["synthetic/res_cnn"]), _weights(["resnet18", "synthetic/res_cnn"])
        ('random init', 'shipped weights', 'random init; synthetic/res_cnn: shipped weights')
    """
    kept = [b for b in backbones if not _random_weights(b, None, False)[1]]
    if not kept:
        return "random init"
    return "shipped weights" if len(kept) == len(backbones) else f"random init; {', '.join(kept)}: shipped weights"


def render(rows: List[list], args: argparse.Namespace, command: str, seconds: float) -> str:
    """The committed results file."""
    from tabulate import tabulate

    return "\n".join([
        f"# Chunk sizes of the masked-forward explainers ({args.size}x{args.size}, "
        f"{_weights(args.backbones)}, {_images(args.batch)} per call)", "",
        *run_header(command, seconds, args.device),
        f"- {args.repeats} alternated rounds; ratio: the median of chunk / default taken within each round "
        "[lowest–highest]; diff: the largest absolute difference of the maps (in [0, 1]) from the default's", "",
        tabulate(rows, headers=["backbone", "explainer", "chunk_size", "ms / image", "ratio to the default", "diff"],
                 tablefmt="pipe", floatfmt=".3g"), ""])


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--explainers", nargs="+", default=["scorecam"],
                        help="explainers taking chunk_size: scorecam, sscam, iscam")
    parser.add_argument("--chunks", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1, help="images per explainer call (chunks span the batch)")
    parser.add_argument("--warmup-size", type=int, default=64,
                        help="side of the warm-up image (a fixed-size head needs its input size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.1, help="seconds of sleep before each timed call")
    parser.add_argument("--out", default=None, help="markdown file (default: print only)")
    args = parser.parse_args(argv)
    if min(args.chunks) < 1:
        parser.error(f"--chunks must be positive, got {args.chunks}")
    if not 1 <= args.batch <= 64:
        parser.error(f"--batch must be within 1..64 (the harness's fixed images), got {args.batch}")
    return args


def main(argv: List[str] | None = None) -> None:
    args = parse_args(argv)
    command = " ".join(["python -m perf.chunks", *(argv if argv is not None else sys.argv[1:])])
    start = time.perf_counter()
    rows = measure(args)
    write_report(render(rows, args, command, time.perf_counter() - start), args.out)


if __name__ == "__main__":
    main()
