"""Speed of the explainers against the plain forward pass and the ``grad-cam`` package.

Run ``python -m benchmark.speed`` (needs the test extra: ``pip install -e ".[test]"``); it
writes ``leaderboards/speed.md``. Everything is measured in one process on the same random-init
model and inputs; our method and the peer's are run alternately, each timing repeated, and the
median time per image is reported:

* ``forward``: the plain batched forward (``torch.inference_mode``), the floor of every method;
* gradient methods: ours / forward (target <= 1.2) and ours / grad-cam;
* Score-CAM: ours (authors' weighting and ``channel_softmax=True``) / grad-cam's ScoreCAM
  (target <= 0.5), and per masked forward / plain forward.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from benchmark.backbones import create_backbone
from benchmark.explainers import create_explainer

GRADIENT_METHODS = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
                    "layercam": "LayerCAM", "hirescam": "HiResCAM"}


def median_time(fns: Dict[str, Callable[[], object]], repeats: int,
                sync: Callable[[], None] = lambda: None) -> Dict[str, float]:
    """Run each function once to warm up, then ``repeats`` rounds alternating them; medians.

    ``sync`` runs after each call inside the timed region (e.g. ``torch.cuda.synchronize``).
    """
    for fn in fns.values():
        fn()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run_header(command: str, seconds: float, device_name: str = "") -> List[str]:
    """The ``command`` / ``machine`` / ``date`` lines every committed speed file starts with."""
    return [
        f"- command: `{command}`",
        f"- machine: {device_name or platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, {platform.system()} {platform.release()}; python {platform.python_version()}, torch "
        f"{torch.__version__}",
        f"- date: {datetime.date.today().isoformat()}; measured in {seconds:.0f} s",
    ]


def _peer(name: str, model, layer: str):
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise SystemExit(f"The speed comparison needs the test extra: pip install -e '.[test]' ({err})")
    cam = getattr(pytorch_grad_cam, name)(model=model, target_layers=[model.get_submodule(layer)])
    if hasattr(cam, "batch_size"):
        cam.batch_size = 16
    return lambda x, t: cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])


def measure(backbone: str, batch_size: int, size: int, repeats: int, score_images: int,
            chunk_size: int) -> List[List[object]]:
    """Rows ``[method, ours ms/img, ours / forward, peer ms/img, ours / peer]``."""
    torch.manual_seed(0)
    model, _ = create_backbone(backbone)
    model.requires_grad_(True)  # as users run grad-cam (it backpropagates to the parameters); ours ignores it
    images = torch.randn(batch_size, 3, size, size)
    with torch.inference_mode():
        targets = model(images).argmax(1)

    def forward():
        with torch.inference_mode():
            model(images)

    rows, floors = [], []
    for ours, theirs in GRADIENT_METHODS.items():
        explainer = create_explainer(ours, model)
        peer = _peer(theirs, model, explainer.target_layer)
        t = median_time({"forward": forward, "ours": lambda: explainer(images, targets),
                         "peer": lambda: peer(images, targets)}, repeats)
        floor = t["forward"] / batch_size  # the floor measured side by side with this method
        floors.append(floor)
        rows.append([ours, t["ours"] / batch_size * 1e3, t["ours"] / batch_size / floor,
                     t["peer"] / batch_size * 1e3, t["ours"] / t["peer"]])
    floor = statistics.median(floors)
    rows.insert(0, ["forward (floor; median over the runs)", floor * 1e3, 1.0, None, None])
    x, c = images[:score_images], targets[:score_images]
    authors = create_explainer("scorecam", model, chunk_size=chunk_size)
    softmax = create_explainer("scorecam", model, chunk_size=chunk_size, channel_softmax=True)
    bf16 = create_explainer("scorecam", model, chunk_size=chunk_size, autocast="bfloat16")
    peer = _peer("ScoreCAM", model, authors.target_layer)
    t = median_time({"authors": lambda: authors(x, c), "softmax": lambda: softmax(x, c),
                     "bf16": lambda: bf16(x, c), "peer": lambda: peer(x, c)}, max(1, repeats // 3))
    bf16_diff = (authors(x, c) - bf16(x, c)).abs().max().item()
    channels = authors.forward_layer(x[:1], c[:1], None, False).activations.shape[1]
    for name, key in (("scorecam", "authors"), ("scorecam (channel_softmax)", "softmax"),
                      (f"scorecam (autocast bfloat16; max map diff vs float32 {bf16_diff:.2g})", "bf16")):
        per_image = t[key] / len(x)
        rows.append([name, per_image * 1e3, per_image / floor, t["peer"] / len(x) * 1e3, t[key] / t["peer"]])
    rows.append([f"scorecam: per masked forward ({channels} per image)", t["authors"] / len(x) / channels * 1e3,
                 t["authors"] / len(x) / channels / floor, None, None])
    rows.append([f"grad-cam ScoreCAM: per masked forward ({channels} per image)",
                 t["peer"] / len(x) / channels * 1e3, t["peer"] / len(x) / channels / floor, None, None])
    return rows


def render(rows, args, seconds: float) -> str:
    from tabulate import tabulate

    table = tabulate(rows, headers=["method", "ours ms/img", "ours / forward", "grad-cam ms/img", "ours / grad-cam"],
                     tablefmt="pipe", floatfmt=".3g", missingval="")
    return "\n".join([
        f"# Explainer speed: {args.backbone}, random init, {args.size}x{args.size}",
        "",
        *run_header(f"python -m benchmark.speed --backbone {args.backbone} --batch-size {args.batch_size} "
                    f"--size {args.size} --repeats {args.repeats} --score-images {args.score_images} "
                    f"--chunk-size {args.chunk_size}", seconds),
        f"- batch {args.batch_size} for the gradient methods; Score-CAM on {args.score_images} image(s), our chunks "
        f"of {args.chunk_size} masked inputs, grad-cam's batches of 16; medians of alternated runs",
        "- targets: gradient methods <= 1.2x forward; Score-CAM <= 0.5x grad-cam",
        "",
        table,
        "",
        "Reading: the gradient methods cost one forward plus a backward from the logits to the target layer",
        "only (no parameter gradients), so they sit at the forward floor. Score-CAM's floor is one forward",
        "per channel; the two `per masked forward` rows show where both implementations stand against it.",
        "grad-cam's ScoreCAM is already close to that floor on a CPU, so in float32 no implementation can be",
        "faster than it by more than its `per masked forward` ratio; `autocast=\"bfloat16\"` (opt-in,",
        "approximate, map difference in its row) halves the forward cost where the hardware has bf16 units.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--score-images", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--out", default="leaderboards/speed.md")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = measure(args.backbone, args.batch_size, args.size, args.repeats, args.score_images, args.chunk_size)
    text = render(rows, args, time.perf_counter() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
