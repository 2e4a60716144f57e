"""Speed of the pixel-attribution explainers against their forward/backward floor.

Run ``python -m perf.attributions`` (written to ``leaderboards/speed_attributions.md``).
For each backbone (random init, eval mode, ``--size`` square images) it times guided backprop,
Guided Grad-CAM(++), Integrated Gradients, Gradient SHAP and occlusion with the harness's
:class:`~perf.measure.Bench`: the floor units in the same alternated rounds, efficiency =
floor / ours (:mod:`perf.floors`: ``I`` = forward + backward to the input; occlusion =
one clean forward + one forward per patch position, batched). Occlusion runs with the study's
45 x 45 patch at ``--occlusion-stride`` (stride 1 is ``H * W`` forwards: 50,176 per 224 x 224 image,
about 15 minutes per image for a ResNet-18 on 2 CPU cores; its efficiency does not depend on the
stride, which only sets the number of batched forwards).
"""
from __future__ import annotations

import argparse
import time
from typing import List

import torch

from benchmark.explainers import create_explainer
from benchmark.runtime.backbones import create_backbone
from perf.measure import Bench, Row
from perf.report import HEADERS, RATIO_NOTE, _table_rows
from perf.timing import command_line, run_header, write_report

METHODS = ("guidedbackprop", "guidedgradcam", "guidedgradcampp", "integratedgradients", "gradientshap", "occlusion")


def measure(args: argparse.Namespace) -> List[Row]:
    rows: List[Row] = []
    for name in args.backbones:
        torch.manual_seed(args.seed)
        model, _ = create_backbone(name)
        model = model.to(args.device).eval()
        layer = create_explainer("gradcam", model).target_layer
        bench = Bench(name, model, layer, args.size, torch.device(args.device), args.repeats, args.seed, args.pause)
        for method in args.methods:
            options = {"stride": args.occlusion_stride} if method == "occlusion" else {}
            rows.append(bench.explainer_row(method, args.batch, small_warmup=True, options=options))
            row = rows[-1]
            print(f"  {name} {method}: {row.ours * 1e3:.4g} ms/img, floor {row.floor * 1e3:.4g} ms "
                  f"({row.cost.describe()}), efficiency {row.efficiency():.3g}", flush=True)
    return rows


def render(rows: List[Row], args: argparse.Namespace, command: str, seconds: float) -> str:
    from tabulate import tabulate

    peak = HEADERS.index("peak MiB ours")  # no peer has these methods: their columns are left out
    headers = ["backbone", *HEADERS[:7], HEADERS[peak]]
    data = [[row.backbone, *r[:7], r[peak]] for row, r in zip(rows, _table_rows(rows))]
    lines = [f"# Speed: pixel-attribution explainers against their floor ({args.size}x{args.size}, random init)", "",
             *run_header(command, seconds, args.device),
             f"- batch {args.batch}, {args.repeats} alternated rounds, medians; times per image; occlusion: 45 x 45 "
             f"patch, stride {args.occlusion_stride} (half-patch padding: one patch per stride-grid pixel)",
             "- floor passes: F(b) = plain batched forward at batch b, G(b) = forward + backward to the target layer, "
             "I(b) = forward + backward to the input; all timed in the same rounds; efficiency = floor / ours; "
             "ours / forward = time of one map over one plain forward", f"- {RATIO_NOTE}", "",
             tabulate(data, headers=headers, tablefmt="pipe", floatfmt=".3g", missingval=""), ""]
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--occlusion-stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7, help="alternated rounds (>= 7: medians of per-round ratios)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.1)
    parser.add_argument("--out", default="leaderboards/speed_attributions.md")
    args = parser.parse_args(argv)
    command = command_line("perf.attributions", argv)
    start = time.perf_counter()
    rows = measure(args)
    text = render(rows, args, command, time.perf_counter() - start)
    write_report(text, args.out)


if __name__ == "__main__":
    main()
