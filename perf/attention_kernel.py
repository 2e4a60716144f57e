"""Shapley-CAM on a vision transformer: the math attention kernel after the target layer only (ours since
2026-12-07) against the math kernel over the whole call (before), beside Grad-CAM and the plain forward.

The double backward needs the math kernel (the fused ones have no double backward) in the layers after the target
layer; the whole-call variant is ours with the call wrapped in ``sdpa_kernel(SDPBackend.MATH)``, which is what the
explainer did before. All four run in the same alternated rounds (:func:`perf.timing.median_time`); the ratios are
taken within each round: median [min–max]. Writes ``leaderboards/speed_shapleycam_kernel.md``::

    python -m perf.attention_kernel --backbone timm/vit_small_patch16_224 --batch-sizes 1 8 --repeats 9
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Dict, List, Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmark.explainers import create_explainer
from benchmark.runtime.backbones import create_backbone
from perf.report import ratio_cell
from perf.timing import command_line, median_time, run_header, write_report

NAMES = ("forward", "gradcam", "shapleycam", "shapleycam, whole call on math")


def measure(model: torch.nn.Module, batch: int, size: int, repeats: int, device: torch.device) -> Dict[str, list]:
    """Per-round seconds per image of :data:`NAMES` at ``batch`` (random images, the predicted classes)."""
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    shapley = create_explainer("shapleycam", model, input_size=(3, size, size))
    gradcam = create_explainer("gradcam", model, input_size=(3, size, size))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    def whole_call() -> None:
        with sdpa_kernel(SDPBackend.MATH):
            shapley(images)

    fns = dict(zip(NAMES, (forward, lambda: gradcam(images), lambda: shapley(images), whole_call)))
    rounds: Dict[str, List[float]] = {}
    median_time(fns, repeats, sync=sync, rounds=rounds, device=device)
    return {name: [t / batch for t in times] for name, times in rounds.items()}


def render(results: Dict[int, Dict[str, list]], backbone: str, command: str, seconds: float,
           device: torch.device) -> str:
    """The markdown table: ms per image (medians) and the within-round ratios."""
    lines = [f"# Shapley-CAM's attention kernel on {backbone}", "", *run_header(command, seconds, device),
             "- ms: per image, medians over the rounds; ratios: the median of the ratios within each round "
             "[lowest–highest]", "",
             "| batch | forward ms | Grad-CAM ms | Shapley-CAM ms | whole call on math ms | Shapley-CAM / whole call "
             "| Shapley-CAM / forward | whole call / forward |", "|--:|--:|--:|--:|--:|:--|:--|:--|"]
    for batch, rounds in results.items():
        ms = [f"{1e3 * statistics.median(rounds[name]):.1f}" for name in NAMES]
        lines.append(f"| {batch} | {' | '.join(ms)} | {ratio_cell(rounds, NAMES[2], NAMES[3])} | "
                     f"{ratio_cell(rounds, NAMES[2], NAMES[0])} | {ratio_cell(rounds, NAMES[3], NAMES[0])} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="timm/vit_small_patch16_224")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=9, help="alternated rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="leaderboards/speed_shapleycam_kernel.md")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    start, device = time.perf_counter(), torch.device(args.device)
    torch.manual_seed(0)
    model = create_backbone(args.backbone)[0].to(device).eval()
    results = {batch: measure(model, batch, args.size, args.repeats, device) for batch in args.batch_sizes}
    write_report(render(results, args.backbone, command_line("perf.attention_kernel", argv),
                        time.perf_counter() - start, device), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
