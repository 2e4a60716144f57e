"""The speed harness: every explainer and metric against its forward-pass floor and the peers.

Run ``python -m perf.harness`` (needs the test extra for the peers:
``pip install -e ".[test]"``); it writes ``leaderboards/speed.md``. For each backbone (random
init, eval mode, 224 x 224 by default):

* every registered explainer at each ``--batch-sizes`` (Score-CAM, SS-CAM, IS-CAM, Ablation-CAM and RISE
  on ``--perturb-images`` images), beside ``grad-cam`` and ``torch-cam`` where they have the method;
  ``--explainer-options sscam.n_samples=2`` sets an option of ours, which the peers are given too;
* every registered metric given the Grad-CAM maps, through ``ExplainerModule``'s metric path
  (deletion / insertion on ``--perturb-images`` images); Average Drop + Increase beside
  grad-cam's DropInConfidence + IncreaseInConfidence (given the map) and torch-cam's
  ClassificationMetric (with its own Grad-CAM map);
* the floor (:mod:`perf.floors`), its units timed in the same alternated rounds, and
  efficiency = floor / measured; peak memory of the last round;
* the options of :mod:`perf.options` on ``--options-backbones``.

``--no-peers`` times our rows and their floors only: a full re-measure then skips the peers' slow perturbation
methods (grad-cam's Ablation-CAM takes hundreds of times ours); the file says that no peer was run.

Transformers run the same way: their target layer's layout (e.g. ``tokens:1`` for timm ViT's
``blocks.11.norm1``) goes to the floor units and, as ``reshape_transform``, to the peers; the committed
ViT table (``leaderboards/speed_transformers.md``) is ``--backbones vit_small_patch16_224 --batch-sizes 8
--explainers gradcam --metrics --options-backbones --repeats 9 --out leaderboards/speed_transformers.md``.

Timing (:func:`perf.timing.median_time`): inputs are fixed tensors made before any
timing; one warm-up call per function (the perturbation methods warm up on a 64 x 64 image);
then alternated rounds (ours, units, peers, ours, ...) and medians. Process start-up, model
building and warm-up are not in any figure.
"""
from __future__ import annotations

import argparse
import ast
import time
from typing import Dict, List

import torch

from benchmark.explainers import create_explainer, default_explainers
from benchmark.metrics import default_metrics
from benchmark.runtime.backbones import create_backbone
from perf.measure import Bench, Row
from perf.options import OptionRow, measure_options
from perf.report import render
from perf.timing import command_line, write_report

#: explainers and metrics whose cost grows with the channels / steps: run on ``--perturb-images`` only
PERTURBATION_EXPLAINERS = ("ablationcam", "iscam", "rise", "scorecam", "sscam")
PERTURBATION_METRICS = ("deletion", "insertion")


def measure_backbone(name: str, args: argparse.Namespace) -> tuple[List[Row], List[OptionRow]]:
    """All rows of one backbone."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model, _ = create_backbone(name)
    model = model.to(device).eval().requires_grad_(True)  # as users run grad-cam (it fills parameter .grad)
    # its layer (and layout) is every explainer's default; its maps feed the metrics
    gradcam = create_explainer("gradcam", model, input_size=(3, args.size, args.size))
    bench = Bench(name, model, gradcam.target_layer, args.size, device, args.repeats, args.seed, args.pause,
                  gradcam.layout, peers=args.peers)
    rows: List[Row] = []
    explainers = [e for e in args.explainers if e not in PERTURBATION_EXPLAINERS]
    metrics = [m for m in args.metrics if m not in PERTURBATION_METRICS]
    for batch in args.batch_sizes:
        for explainer in explainers:
            rows.append(bench.explainer_row(explainer, batch, options=args.explainer_options.get(explainer)))
            _log(rows[-1])
        maps = gradcam(*bench.inputs(batch)) if args.metrics else None
        for metric in metrics:
            rows.append(bench.metric_row((metric,), batch, maps))
            _log(rows[-1])
        if {"average_drop", "average_increase"} <= set(args.metrics):
            rows.append(bench.metric_row(("average_drop", "average_increase"), batch, maps, peer="grad-cam"))
            rows.append(bench.metric_row(("average_drop", "average_increase"), batch, maps, peer="torch-cam",
                                         with_explainer=True, label="gradcam+average_drop+average_increase"))
            _log(rows[-2], rows[-1])
    batch = args.perturb_images
    for explainer in (e for e in args.explainers if e in PERTURBATION_EXPLAINERS):
        rows.append(bench.explainer_row(explainer, batch, small_warmup=True, repeats=args.perturb_repeats,
                                        options=args.explainer_options.get(explainer)))
        _log(rows[-1])
    curve_maps = gradcam(*bench.inputs(batch)) if args.metrics or name in args.options_backbones else None
    for metric in (m for m in args.metrics if m in PERTURBATION_METRICS):
        rows.append(bench.metric_row((metric,), batch, curve_maps, repeats=args.perturb_repeats,
                                     warmup=lambda ms: _build_copies(ms, model, bench.inputs(1)[0])))
        _log(rows[-1])
    options: List[OptionRow] = []
    if name in args.options_backbones:
        score = [r for r in rows if r.item == "scorecam" and "grad-cam" in r.peers]
        options = measure_options(bench, max(args.batch_sizes), batch, args.options_repeats or args.perturb_repeats,
                                  curve_maps, score[0].ratio("grad-cam") if score else None)
        for option in options:
            print(f"  option {option.item} / {option.option}: {option.ratio:.3g}x", flush=True)
    return rows, options


def _build_copies(metrics, model, image):
    """Warm-up of the curve metrics: build their inference copies (lazy, once per model)."""
    def run():
        with torch.inference_mode():
            for metric in metrics:
                metric._runner(model)(image)
    return run


def _log(*rows: Row) -> None:
    for row in rows:
        eff = f", efficiency {row.efficiency():.3g}" if row.floor else ""  # as the table: medians of per-round ratios
        peers = ", ".join(f"{p} {row.ratio(p):.3g}x" for p in row.peers)
        print(f"  {row.backbone} b{row.batch} {row.item}: {row.ours * 1e3:.3g} ms/img{eff}"
              f"{', ours/' + peers if peers else ''}", flush=True)


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50", "vgg16"],
                        help="any create_backbone name, transformers included (vit_small_patch16_224)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--perturb-images", type=int, default=1,
                        help="images for Score-CAM, Ablation-CAM, RISE, deletion and insertion")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (medians)")
    parser.add_argument("--perturb-repeats", type=int, default=7, help="timed rounds of the perturbation rows")
    parser.add_argument("--explainers", nargs="+", default=default_explainers())
    parser.add_argument("--metrics", nargs="*", default=default_metrics(), help="none: explainers only")
    parser.add_argument("--explainer-options", nargs="*", default=[], metavar="NAME.KEY=VALUE",
                        help="an explainer's option for ours and the peers, e.g. sscam.n_samples=2 (a Python literal)")
    parser.add_argument("--options-backbones", nargs="*", default=["resnet18", "resnet50"])
    parser.add_argument("--options-repeats", type=int, default=None,
                        help="timed rounds of the Score-CAM / curve options (default: --perturb-repeats)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.1,
                        help="seconds of sleep before each timed call (lets BLAS/OpenCV thread pools go idle)")
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="time ours and the floors only (no grad-cam / torch-cam calls)")
    parser.add_argument("--out", default="leaderboards/speed.md")
    args = parser.parse_args(argv)
    if max(args.batch_sizes) > 64 or args.perturb_images > 64:
        parser.error("batch sizes and --perturb-images are at most 64 (the harness's fixed input set)")
    args.explainer_options = _explainer_options(args.explainer_options, parser)
    return args


def _explainer_options(items: List[str], parser: argparse.ArgumentParser) -> Dict[str, dict]:
    """``["sscam.n_samples=2"]`` -> ``{"sscam": {"n_samples": 2}}`` (values are Python literals).

    Examples:
        >>> _explainer_options(["iscam.n_samples=3", "iscam.schedule='torch-cam'"], argparse.ArgumentParser())
        {'iscam': {'n_samples': 3, 'schedule': 'torch-cam'}}
    """
    options: Dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, option = key.partition(".")
        try:
            if not (sep and dot and name and option):
                raise ValueError(item)
            options.setdefault(name, {})[option] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parser.error(f"--explainer-options takes NAME.KEY=VALUE with a Python literal value, got {item!r}")
    return options


def main(argv: List[str] | None = None) -> None:
    args = parse_args(argv)
    command = command_line("perf.harness", argv)
    start = time.perf_counter()
    rows: List[Row] = []
    options: List[OptionRow] = []
    for backbone in args.backbones:
        print(f"{backbone}:", flush=True)
        more_rows, more_options = measure_backbone(backbone, args)
        rows += more_rows
        options += more_options
    text = render(rows, options, args, command, time.perf_counter() - start)
    write_report(text, args.out)


if __name__ == "__main__":
    main()
