"""Chunk-size sweep of the perturbation methods: which ``chunk_size`` is fastest on this device.

Run ``python -m perf.chunks --out leaderboards/speed_chunks.md``. For each backbone (``create_backbone``'s
default weights, eval mode, the harness's fixed images and classes, :class:`~perf.measure.Bench`) it times each
explainer taking ``chunk_size`` (Score-CAM, SS-CAM, IS-CAM; ``--explainers``) and each curve metric
(deletion, insertion; ``--metrics``, on the Grad-CAM maps) on ``--batch`` images -- their chunks are taken
across the batch, as in a run -- at every ``--chunks`` value and at its default, in the same alternated rounds
(one warm-up call each; the explainers' on a 64 x 64 image, or one of the timed size for a model with a fixed-size
head such as ``synthetic/vgg_cnn``: :attr:`perf.measure.Bench.small`; ``--warmup-size`` sets it). It reports
milliseconds per image, the ratio to the default (the median of the per-round ratios [lowest-highest]) and the
largest difference of the results from the default's: the maps, or the curves' AUCs and points (0: bitwise the
same, the chunk only groups the forwards).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, List

import torch

from benchmark.explainers import create_explainer
from benchmark.metrics import create_metric
from benchmark.runtime.backbones import create_backbone
from perf.measure import Bench
from perf.projection import build_weights
from perf.report import ratio_cell
from perf.timing import command_line, median_time, run_header, write_report

__all__ = ["measure", "render"]


def measure(args: argparse.Namespace) -> List[list]:
    """One row per backbone, method and chunk size: ``[backbone, method, chunk, ms, ratio cell, diff]``."""
    rows: List[list] = []
    device = torch.device(args.device)
    for name in args.backbones:
        torch.manual_seed(args.seed)
        model, _ = create_backbone(name)
        model = model.to(device).eval().requires_grad_(True)
        shape = (3, args.size, args.size)
        gradcam = create_explainer("gradcam", model, input_size=shape)
        bench = Bench(name, model, gradcam.target_layer, args.size, device, args.repeats, args.seed, args.pause,
                      gradcam.layout)
        x, t = bench.inputs(args.batch)
        small = bench.small if args.warmup_size is None else \
            torch.randn(1, 3, args.warmup_size, args.warmup_size, device=device)
        for explainer in args.explainers:
            def make(**chunk):
                e = create_explainer(explainer, model, input_size=shape, **chunk)
                return e.chunk_size, (lambda: e(x, t)), (lambda: e(small, t[:1]))
            rows += _sweep(name, explainer, make, args, bench)
        maps = gradcam(x, t) if args.metrics else None
        for metric in args.metrics:  # the curves of the Grad-CAM maps: AUCs (and curve points) compared
            def make(**chunk):
                m = create_metric(metric, **chunk)

                def call():
                    m.reset()
                    m.update(model, x, maps, t)
                    return m.sorted_values()[1]
                return m.chunk_size, call, None
            rows += _sweep(name, metric, make, args, bench)
    return rows


def _sweep(backbone: str, method: str, make: Callable, args: argparse.Namespace, bench: Bench) -> List[list]:
    """Time ``method`` at its default chunk and every other ``--chunks`` value in the same alternated rounds;
    ``make(**chunk)`` gives ``(chunk_size, call, warm-up call or None)``."""
    default = make()
    runs = {"default": default, **{str(c): make(chunk_size=c) for c in args.chunks if c != default[0]}}
    calls = {label: run[1] for label, run in runs.items()}
    warm = {label: run[2] for label, run in runs.items() if run[2] is not None}
    rounds: dict = {}
    times = median_time(calls, args.repeats, bench.sync, warm, pause=args.pause, rounds=rounds)
    reference = calls["default"]()
    rows = []
    for label, (chunk_size, call, _) in runs.items():
        cell = ratio_cell(rounds, label, "default")
        diff = 0.0 if label == "default" else (call() - reference).abs().max().item()
        chunk = f"{chunk_size} (default)" if label == "default" else label
        per_image = times[label] / args.batch
        rows.append([backbone, method, chunk, per_image * 1e3, cell, diff])
        print(f"  {backbone} {method} chunk {chunk}: {per_image:.3g} s / image, {cell} x the default, "
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
    kept = [b for b in backbones if not build_weights(b, None, False)[1]]
    if not kept:
        return "random init"
    return "shipped weights" if len(kept) == len(backbones) else f"random init; {', '.join(kept)}: shipped weights"


def render(rows: List[list], args: argparse.Namespace, command: str, seconds: float) -> str:
    """The committed results file."""
    from tabulate import tabulate

    return "\n".join([
        f"# Chunk sizes of the perturbation methods ({args.size}x{args.size}, "
        f"{_weights(args.backbones)}, {_images(args.batch)} per call)", "",
        *run_header(command, seconds, args.device),
        f"- {args.repeats} alternated rounds; ratio: the median of chunk / default taken within each round "
        "[lowest–highest]; diff: the largest absolute difference from the default's of the maps (in [0, 1]), or of "
        "the curves' AUCs and points", "",
        tabulate(rows, headers=["backbone", "method", "chunk_size", "ms / image", "ratio to the default", "diff"],
                 tablefmt="pipe", floatfmt=".3g"), ""])


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--explainers", nargs="*", default=["scorecam"],
                        help="explainers taking chunk_size: scorecam, sscam, iscam")
    parser.add_argument("--metrics", nargs="*", default=[],
                        help="curve metrics taking chunk_size, timed on the Grad-CAM maps: deletion, insertion")
    parser.add_argument("--chunks", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1, help="images per explainer call (chunks span the batch)")
    parser.add_argument("--warmup-size", type=int, default=None,
                        help="side of the warm-up image (default: 64 where the model takes it, else --size)")
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
    command = command_line("perf.chunks", argv)
    start = time.perf_counter()
    rows = measure(args)
    write_report(render(rows, args, command, time.perf_counter() - start), args.out)


if __name__ == "__main__":
    main()
