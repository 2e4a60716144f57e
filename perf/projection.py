"""Project a whole benchmark's wall time on N devices from its per-image cost measured on one.

Run ``python -m perf.projection --config configs/poppi_table2.yaml --images 50000 --devices 8`` on one device
of the kind the run will use (``--device cuda``; ``--precision bf16-mixed``, ``--channels-last`` and
``--compile`` as the run will set them). For each backbone of the config and each of its explainers it builds
the run's :class:`~benchmark.runtime.module.ExplainerModule` (that explainer, every metric of the config with
its ``metric_args``, ``top_k`` and ``target``) and times ``predict_step`` on a fixed batch of random images in
alternated rounds with the plain forward (:func:`perf.timing.median_time`: warm-up and compilation excluded).

The projection (:func:`project`): ``cam-bench run`` processes backbones one after the other and splits each
backbone's shards (``batch_size`` images) over the devices; nothing is exchanged while predicting, so a
backbone takes its busiest device's shards times the per-image cost of every method. Not counted: process
start-up, model loading, data loading and decoding (workers run beside the device), the per-sample writer and
the final rendering (about 1 % of the default run, ``leaderboards/speed_run.md``).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import statistics
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import yaml

from benchmark.explainers import explainer_class, resolve_explainer
from benchmark.metrics.registry import METRICS, with_normalisation
from benchmark.runner.settings import RunConfig
from benchmark.runtime.backbones import create_backbone
from benchmark.runtime.module import ExplainerModule
from datamodules.base import as_preprocessing
from perf.report import spread_cell
from perf.timing import command_line, median_time, round_ratios, run_header, write_report

PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def project(seconds_per_image: Mapping[str, float], images: int, batch_size: int, devices: int) -> Tuple[float, float]:
    """``(device-hours, wall hours)`` of one backbone: every method of ``seconds_per_image`` over ``images``,
    whose shards of ``batch_size`` images are split over ``devices`` (the busiest device's shards; a last
    partial shard counted whole, so the wall time is an upper bound by less than one shard).

    Examples:
        >>> project({"gradcam": 1.0, "scorecam": 2.0}, images=10, batch_size=4, devices=2)  # 3 shards: 2, 1
        (0.008333333333333333, 0.006666666666666667)
    """
    if min(images, batch_size, devices) < 1:
        raise ValueError(f"Expected images, batch_size and devices >= 1, but got {images}, {batch_size}, {devices}.")
    per_image = sum(seconds_per_image.values())
    busiest = math.ceil(math.ceil(images / batch_size) / devices)
    return images * per_image / 3600, busiest * batch_size * per_image / 3600


def load_config(path: str) -> RunConfig:
    """The run's settings from a ``cam-bench run`` YAML config (keys of :class:`RunConfig`), resolved."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown keys {unknown} in {path}; a run config takes {sorted(known)}.")
    return RunConfig(**data).resolved()


def _compiled(cls: type, kwargs: Mapping, compile_: bool) -> dict:
    """``kwargs`` plus ``compile=True`` where ``compile_`` and the class takes it."""
    takes = "compile" in inspect.signature(cls.__init__).parameters
    return {**kwargs, **({"compile": True} if compile_ and takes else {})}


def build_weights(backbone: str, weights: Optional[str], random_init: bool) -> Tuple[Optional[str], bool]:
    """The ``weights`` to build ``backbone`` with, and whether they are random.

    ``--random-init`` asks ``synthetic/``, ``digits/`` and ``hf/`` backbones for ``"random"`` (their ``None`` loads
    the shipped checkpoint or the pretrained model); without it, ``None`` is random for torchvision, timm and
    ``digits/`` only.

    Examples:
        >>> build_weights("resnet18", None, False), build_weights("synthetic/cnn", None, False)
        ((None, True), (None, False))
        >>> build_weights("synthetic/cnn", None, True), build_weights("resnet18", "IMAGENET1K_V1", True)
        (('random', True), (None, True))
        >>> build_weights("synthetic/cnn", "random", False), build_weights("digits/lenet", None, False)
        (('random', True), (None, True))
    """
    own = backbone.startswith(("synthetic/", "digits/", "hf/"))
    if random_init:
        return ("random" if own else None), True
    return weights, weights == "random" or (weights is None and not backbone.startswith(("synthetic/", "hf/")))


def measure_backbone(config: RunConfig, backbone: str, args: argparse.Namespace) -> List[dict]:
    """One row per explainer: seconds per image (median and range over the rounds), its ratio to the plain
    forward (per round) and the passes per image the module counted."""
    device = torch.device(args.device)
    try:
        weights, random = build_weights(backbone, config.weights, args.random_init)
        model, prep = create_backbone(backbone, weights=weights, num_classes=config.num_classes, seed=config.seed)
    except (ValueError, FileNotFoundError) as err:  # e.g. the config's weights are not in the local cache
        raise SystemExit(f"{err}\nPass --random-init to measure with random weights (the Score-CAM family's rows "
                         "are then marked as estimates).") from None
    model = model.to(device)
    size = (3, args.size, args.size) if args.size else tuple(prep.input_size)
    generator = torch.Generator().manual_seed(config.seed)
    images = torch.randn(args.batch, *size, generator=generator).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        classes = model(images[:1]).shape[1]
    batch = {"image": images, "label": torch.randint(classes, (args.batch,), generator=generator).to(device),
             "index": torch.arange(args.batch)}
    data_prep = config.data_args.get("preprocessing")  # the images' normalisation, as the run takes it
    norm = prep if data_prep is None else as_preprocessing(data_prep)
    metrics = {m: _compiled(METRICS[m], with_normalisation(m, config.metric_args.get(m, {}), norm.mean, norm.std),
                            args.compile) for m in config.metrics}

    def build(method: str, kwargs: Mapping) -> ExplainerModule:  # as the run builds it, with one explainer
        return ExplainerModule(model, {method: dict(kwargs)}, target=config.target, keep_maps=False, input_size=size,
                               metrics=metrics, top_k=config.top_k, target_layer=config.target_layer.get(backbone),
                               layout=config.layout.get(backbone), reduce=False)

    modules = {method: build(method, _compiled(explainer_class(resolve_explainer(method)),
                                               config.explainer_args.get(method, {}), args.compile))
               for method in config.explainers}
    dtype = PRECISIONS[args.precision]
    records: Dict[str, list] = {}

    def step(method: str):
        context = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with context:  # what Lightning's precision plugin wraps predict_step in
            records[method] = modules[method].predict_step(batch, 0)

    def forward():
        with torch.inference_mode():
            model(images)

    calls = {"forward": forward, **{m: (lambda m=m: step(m)) for m in modules}}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rounds: Dict[str, List[float]] = {}
    median_time(calls, args.rounds, sync, device=device, pause=args.pause, rounds=rounds)
    rows = []
    for method in modules:
        ratios = round_ratios(rounds, method, "forward")
        passes = records[method][0]["passes"]  # this method's passes per image, the batch's shared forward included
        spent = sum(passes[k] for k in ("passes_batch", "passes_explainer", "passes_topk", "passes_metric"))
        rows.append({"backbone": backbone, "method": method, "seconds": statistics.median(rounds[method]) / args.batch,
                     "range": (min(rounds[method]) / args.batch, max(rounds[method]) / args.batch),
                     "forwards": statistics.median(ratios), "forwards_range": (min(ratios), max(ratios)),
                     "passes": spent, "minimum": passes["passes_minimum"], "random": random})
    return rows


def render(rows: List[dict], config: RunConfig, args: argparse.Namespace, command: str, seconds: float) -> str:
    """The projection's markdown: per backbone and method the measured cost, then the projected hours."""
    from tabulate import tabulate

    table, totals = [], []
    wall_total = device_total = 0.0
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = [r for r in rows if r["backbone"] == backbone]
        device_hours, wall = project({r["method"]: r["seconds"] for r in mine}, args.images, config.batch_size,
                                     args.devices)
        device_total, wall_total = device_total + device_hours, wall_total + wall
        totals.append([backbone, device_hours, wall])
        for r in mine:
            table.append([backbone, r["method"], spread_cell(r["seconds"], r["range"]),
                          spread_cell(r["forwards"], r["forwards_range"]), f"{r['passes']:.4g} ({r['minimum']:.4g})",
                          args.images * r["seconds"] / 3600])
    random = list(dict.fromkeys(r["backbone"] for r in rows if r["random"]))
    weights = "random init (--random-init)" if args.random_init else (
        f"{config.weights or 'each backbone default'}; random: {', '.join(random) or 'none'}")
    lines = [f"# Projection: `{args.config}` on {args.devices} x {args.device}", "",
             *run_header(command, seconds, args.device),
             f"- measured: batch {args.batch} of random N(0, 1) images {args.size or 'at the backbone input size'}, "
             f"{args.rounds} alternated rounds with the plain forward; precision {args.precision}, channels-last "
             f"{args.channels_last}, compile {args.compile}; weights: {weights}",
             f"- projected: {args.images} images per backbone in shards of {config.batch_size} (the config's "
             f"batch_size) over {args.devices} device(s), backbones one after the other",
             "- s / image and x forward: median over the rounds [lowest-highest]; passes / image: forward and backward "
             "passes this method made per image (the batch's shared forward included), the protocol's minimum in "
             "brackets", "",
             tabulate(table, headers=["backbone", "method", "s / image", "x forward", "passes / image (minimum)",
                                      f"device-hours for {args.images} images"], tablefmt="pipe", floatfmt=".3g"),
             "", tabulate([*totals, ["all", device_total, wall_total]], tablefmt="pipe", floatfmt=".3g",
                          headers=["backbone", "device-hours", f"wall hours on {args.devices} device(s)"]), "",
             f"Projected wall time: **{wall_total:.3g} h** ({wall_total / 24:.2g} days) on {args.devices} device(s).",
             "", "Not counted: process start-up, model loading, data loading and decoding (the DataLoader's workers "
             "run beside the device; give it enough of them), the per-sample writer and the final rendering. Random "
             "images stand in for the data: a method whose passes depend on the activations (Score-CAM and its "
             "variants skip channels that cannot change the map) can cost more or less on real images and weights; "
             "its passes column says how many it made here. Each method is timed in a module of its own, so each "
             "row pays the batch's forward and the curves' endpoints, which the run computes once per batch for all "
             "its methods: with several methods the projection is an upper bound by that shared work (a few "
             "forwards per image and method beyond the first; its passes column counts them)."]
    if random:
        lines += ["", f"**Random weights** ({', '.join(random)}): the live channels of a trained model differ, so "
                  "the Score-CAM family's rows of these backbones are an estimate of the trained model's cost, not a "
                  "measurement of it."]
    return "\n".join(lines) + "\n"


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a cam-bench run YAML config (e.g. configs/poppi_table2.yaml)")
    parser.add_argument("--images", type=int, default=50000, help="images per backbone in the projected run")
    parser.add_argument("--devices", type=int, default=8, help="devices the projected run splits its shards over")
    parser.add_argument("--batch", type=int, default=32, help="images per measured batch")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds (medians)")
    parser.add_argument("--precision", default="32", help=f"one of {list(PRECISIONS)} (Lightning's names)")
    parser.add_argument("--channels-last", action="store_true", help="model and images in channels-last memory")
    parser.add_argument("--compile", action="store_true", help="compile=True for the explainers and metrics taking it")
    parser.add_argument("--random-init", action="store_true", help="random weights instead of the config's")
    parser.add_argument("--backbones", nargs="+", default=None, help="a subset of the config's backbones")
    parser.add_argument("--size", type=int, default=None, help="square input size (default: the backbone's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between timed calls")
    parser.add_argument("--out", default=None, help="markdown file (default: print only)")
    args = parser.parse_args(argv)
    if args.precision not in PRECISIONS:
        parser.error(f"--precision must be one of {list(PRECISIONS)}, not {args.precision!r}")
    return args


def main(argv: List[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config)
    unknown = sorted(set(args.backbones or []) - set(config.backbones))
    if unknown:
        raise SystemExit(f"--backbones {unknown} are not in {args.config}: choose from {config.backbones}.")
    command = command_line("perf.projection", argv)
    start, rows = time.perf_counter(), []
    for backbone in args.backbones or config.backbones:
        rows += measure_backbone(config, backbone, args)
        for row in rows[-len(config.explainers):]:
            print(f"  {backbone} {row['method']}: {row['seconds']:.4g} s/img, {row['forwards']:.3g}x forward",
                  flush=True)
    text = render(rows, config, args, command, time.perf_counter() - start)
    write_report(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
