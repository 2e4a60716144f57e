"""Speed of the model-dependent metrics against their forward-pass floors.

Run ``python -m benchmark.speed_metrics``; it writes ``leaderboards/speed_metrics.md``. All on
one random-init model and the same inputs, every measurement repeated in alternated rounds with
the plain forward, medians reported per image. Efficiency = floor / measured (1 = at the floor):

* insertion + deletion (RISE, ``pixels_per_step`` = width: 224 steps each on 224 x 224): floor =
  448 plain batched forwards (the issue's count: 224 perturbed images per curve). The
  implementation runs 2 x 225 forwards (each curve's unperturbed end point too), so with the
  plain model its ceiling is 448 / 450; measured with the plain model at the default chunk
  size and at 1/8 of it, and on the default path (``fast=True``: the batch-norm-folded
  channels-last :class:`~benchmark.explainers.fastpath.InferenceCopy`, which can beat the floor);
* Average Drop: one extra forward on ``E = x * CAM`` plus the softmax and the drop; floor = 1 forward;
* Coherency: one extra explainer call on ``E`` plus Pearson; floor = 1 explainer call (Grad-CAM on x).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, List

import torch

from benchmark.backbones import create_backbone
from benchmark.explainers import create_explainer
from benchmark.metrics.functional.adcc import average_drop, coherency
from benchmark.metrics.insertion_deletion import Deletion, Insertion
from benchmark.speed import median_time, run_header


def measure(backbone: str, batch_size: int, size: int, repeats: int, curve_images: int, chunk_size: int,
            device: str) -> List[List[object]]:
    """Rows ``[measurement, forwards per image, ms/img, floor ms/img, efficiency]``."""
    torch.manual_seed(0)
    model, _ = create_backbone(backbone)
    model = model.to(device)
    images = torch.randn(batch_size, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    explainer = create_explainer("gradcam", model)
    with torch.inference_mode():
        targets = model(images).argmax(1)
    saliency = explainer(images, targets)

    def forward():
        with torch.inference_mode():
            model(images)

    def drop():  # what Average Drop adds: O on E = x * CAM, then the drop against Y
        with torch.inference_mode():
            expl_probs = model(images * saliency[:, None]).softmax(dim=1).gather(1, targets[:, None])[:, 0]
        return average_drop(torch.ones_like(expl_probs), expl_probs.clamp(0, 1))

    def coherent():  # what Coherency adds: CAM(E) for the same class, then Pearson
        return coherency(saliency, explainer(images * saliency[:, None], targets))

    rows: List[List[object]] = []
    t = median_time({"forward": forward, "drop": drop, "explain": lambda: explainer(images, targets),
                     "coherency": coherent}, 10 * repeats, sync)  # cheap: many rounds against noise
    forward_ms = t["forward"] / batch_size * 1e3
    explain_ms = t["explain"] / batch_size * 1e3
    rows.append([f"plain forward, batch {batch_size} (floor unit)", 1, forward_ms, forward_ms, 1.0])
    rows.append([f"Grad-CAM on x, batch {batch_size} (coherency floor unit)", None, explain_ms, explain_ms, 1.0])
    rows.append(["Average Drop: forward on x * CAM + softmax + drop", 1, t["drop"] / batch_size * 1e3, forward_ms,
                 t["forward"] / t["drop"]])
    rows.append(["Coherency: Grad-CAM on x * CAM + Pearson", None, t["coherency"] / batch_size * 1e3, explain_ms,
                 t["explain"] / t["coherency"]])

    x, c, s = images[:curve_images], targets[:curve_images], saliency[:curve_images]
    small = max(1, chunk_size // 8)
    configs = {f"plain model, chunks of {chunk_size}": (False, chunk_size),
               f"plain model, chunks of {small}": (False, small),
               f"InferenceCopy (the default), chunks of {chunk_size}": (True, chunk_size)}
    metrics = {name: (Deletion(chunk_size=chunk, fast=fast), Insertion(chunk_size=chunk, fast=fast))
               for name, (fast, chunk) in configs.items()}

    def curves(name: str) -> Callable[[], None]:
        def run():
            for metric in metrics[name]:
                metric.update(model, x, s, c)
        return run

    batches = {n: torch.randn(n, 3, size, size, device=device) for n in sorted({chunk_size, small})}

    def forward_batch(n: int) -> Callable[[], None]:
        def run():
            with torch.inference_mode():
                model(batches[n])
        return run

    floor_rounds: List[float] = []

    def forwards():  # the floor of a long round: the median of several forwards, against short bursts of load
        times = []
        for _ in range(9):
            start = time.perf_counter()
            forward()
            sync()
            times.append(time.perf_counter() - start)
        floor_rounds.append(statistics.median(times))

    fns = {"forwards": forwards, **{f"batch {n}": forward_batch(n) for n in batches},
           **{name: curves(name) for name in configs}}
    t = median_time(fns, max(1, repeats // 2), sync)
    floor_ms = statistics.median(floor_rounds[1:]) / batch_size * 1e3  # without the warm-up round
    rows.append([f"plain forward, batch {batch_size} (side by side with the curves)", 1, floor_ms, floor_ms, 1.0])
    for n in batches:
        batch_ms = t[f"batch {n}"] / n * 1e3
        rows.append([f"plain forward, batch {n}", 1, batch_ms, floor_ms, floor_ms / batch_ms])
    n_points = size + 1  # size px per step on size x size: `size` steps, `size + 1` points per curve
    for name in configs:
        measured = t[name] / len(x) * 1e3
        rows.append([f"Insertion + Deletion ({name})", 2 * n_points, measured, 2 * (n_points - 1) * floor_ms,
                     2 * (n_points - 1) * floor_ms / measured])
        per_forward = measured / (2 * n_points)
        rows.append([f"  per perturbed forward ({name})", 1, per_forward, floor_ms, floor_ms / per_forward])
    return rows


def render(rows, args, seconds: float, device_name: str) -> str:
    from tabulate import tabulate

    table = tabulate(rows, headers=["measurement", "forwards / img", "ms / img", "floor ms / img", "efficiency"],
                     tablefmt="pipe", floatfmt=".3g", missingval="")
    return "\n".join([
        f"# Metric speed: {args.backbone}, random init, {args.size}x{args.size}",
        "",
        *run_header(f"python -m benchmark.speed_metrics --backbone {args.backbone} --batch-size {args.batch_size} "
                    f"--size {args.size} --repeats {args.repeats} --curve-images {args.curve_images} "
                    f"--chunk-size {args.chunk_size} --device {args.device}", seconds, device_name),
        f"- batch {args.batch_size} for the forward floor, Average Drop and Coherency; insertion / deletion on "
        f"{args.curve_images} image(s) at the RISE default ({args.size} px per step); medians of alternated runs",
        "- efficiency = floor / measured; target >= 0.9",
        "",
        table,
        "",
        f"Reading: insertion + deletion need 2 x {args.size} perturbed forwards per image (the floor); the",
        f"implementation runs 2 x {args.size + 1} (each curve's unperturbed end point too), in chunks of "
        f"{args.chunk_size} perturbed",
        "images built from a per-sample rank map, so with the plain model it is bounded by "
        f"{2 * args.size}/{2 * args.size + 2} up to",
        "the batch-size effect: a plain NCHW forward gets slower per image with larger batches on a CPU (the",
        "`plain forward, batch n` rows), and each perturbed forward costs what a plain forward of the chunk does.",
        "The default path runs the same forwards on the batch-norm-folded, channels-last InferenceCopy",
        "(probabilities equal to ~1e-6 relative), which is why it can exceed 1. Average Drop and Coherency cost",
        "one forward / one explainer call on x * CAM; their overhead is building x * CAM, the softmax and the",
        "statistic.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--curve-images", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="leaderboards/speed_metrics.md")
    args = parser.parse_args()
    device_name = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
                   else platform.processor() or platform.machine())
    start = time.perf_counter()
    rows = measure(args.backbone, args.batch_size, args.size, args.repeats, args.curve_images, args.chunk_size,
                   args.device)
    text = render(rows, args, time.perf_counter() - start, device_name)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
