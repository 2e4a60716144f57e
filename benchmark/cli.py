"""The ``cam-bench`` command line.

* ``cam-bench list`` -- registered explainers (with their one-line descriptions), the papers'
  target layers, and the backbone naming.
* ``cam-bench demo`` -- the offline example run: a backbone (random init unless ``--weights``)
  explains seeded random images with every registered explainer inside ``Trainer.predict``
  (``--devices``/``--strategy`` pass through to Lightning, e.g. ``--devices 2 --strategy ddp``),
  writes the records with :class:`callbacks.SaliencyWriter` and prints a summary table.
* ``cam-bench run`` -- the offline default benchmark (:mod:`benchmark.offline`): SyntheticShapes x the
  shipped backbones x every explainer x every metric in ``Trainer.predict``; prints one table per
  backbone; per-sample values go to ``<out>/per_sample/*.parquet`` and the reduced rows to
  ``<out>/results.csv``.
* ``cam-bench train-synthetic --model NAME`` -- train a SyntheticShapes backbone with a Lightning
  ``fit`` (see :mod:`benchmark.synthetic.train`; defaults reproduce the shipped checkpoints).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import pytorch_lightning as pl
from tabulate import tabulate

from benchmark.backbones import create_backbone, list_backbones
from benchmark.explainers import PAPER_LAYERS, describe_explainer, list_explainers
from benchmark.module import ExplainerModule

__all__ = ["main", "summarize"]


def summarize(records: Sequence[dict]) -> str:
    """Markdown table: per method its layer, image count, mean map value, seconds per image.

    Example:
        >>> import torch
        >>> rec = {"method": "fakecam", "target_layer": "input", "seconds": 0.5, "saliency": torch.ones(2, 2)}
        >>> print(summarize([rec, rec]))
        | method   | target layer   |   images |   mean map |   s / image |
        |:---------|:---------------|---------:|-----------:|------------:|
        | fakecam  | input          |        2 |          1 |         0.5 |
    """
    rows = {}
    for rec in records:
        row = rows.setdefault(rec["method"], [rec["method"], rec["target_layer"], 0, 0.0, 0.0])
        row[2] += 1
        row[3] += float(rec["saliency"].mean()) if rec.get("saliency") is not None else float("nan")
        row[4] += rec["seconds"]
    table = [[m, layer, n, total / n, sec / n] for m, layer, n, total, sec in rows.values()]
    return tabulate(table, headers=["method", "target layer", "images", "mean map", "s / image"],
                    tablefmt="pipe", floatfmt=".4g")


#: Columns of the printed ``run`` table (every row is in results.csv).
RUN_COLUMNS = ("average_drop", "average_increase", "coherency", "complexity", "adcc", "deletion", "insertion",
               "localization_error_top1", "max_box_acc", "pointing_game_accuracy", "energy_pointing_game")


def _list(_: argparse.Namespace) -> int:
    from benchmark.metrics import list_metrics
    from datamodules import describe_datamodule, list_datamodules

    print(tabulate([[n, describe_explainer(n)] for n in list_explainers()], headers=["explainer", "description"],
                   tablefmt="pipe"))
    print()
    print(tabulate([[n, describe_datamodule(n)] for n in list_datamodules()], headers=["datamodule", "description"],
                   tablefmt="pipe"))
    print("\nMetrics: " + ", ".join(list_metrics()))
    print("Shipped backbones: " + ", ".join(f"synthetic/{n}" for n in list_backbones("synthetic")))
    print()
    print(tabulate([[k, v[1]] for k, v in PAPER_LAYERS.items()], headers=["model class", "default target layer"],
                   tablefmt="pipe"))
    print("\nBackbones: 'torchvision/<name>', 'timm/<name>[.<tag>]', or a bare name (torchvision first, then timm).")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from callbacks import SaliencyWriter, read_records
    from datamodules import RandomImagesDataModule

    model, prep = create_backbone(args.backbone, weights=args.weights)
    explainers = _explainers(args.explainers) or list_explainers()
    options = {name: {"chunk_size": args.chunk_size} for name in explainers if name in ("scorecam", "ablationcam")}
    module = ExplainerModule(model, {name: options.get(name, {}) for name in explainers},
                             target="prediction", input_size=prep.input_size)
    data = RandomImagesDataModule(size=args.images, image_size=prep.crop_size, num_classes=1000,
                                  seed=args.seed, batch_size=args.batch_size)
    out = Path(args.out)
    trainer = pl.Trainer(accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, logger=False,
                         enable_checkpointing=False, default_root_dir=str(out),
                         callbacks=[SaliencyWriter(out / "records")])
    trainer.predict(module, datamodule=data, return_predictions=False)
    trainer.strategy.barrier()
    if trainer.is_global_zero:
        print(f"\n{args.backbone} ({args.images} random images, {prep.crop_size}px), records in {out / 'records'}\n")
        print(summarize(read_records(out / "records")))
    return 0


def _explainers(value: str) -> Optional[List[str]]:
    """``"a,b"`` -> those; ``"+a,b"`` -> every registered explainer plus those; ``""`` -> None (all).

    Example:
        >>> _explainers("gradcam,my_cam.py:MyCAM")
        ['gradcam', 'my_cam.py:MyCAM']
        >>> _explainers("+my_cam.py:MyCAM")[-1], len(_explainers("+my_cam.py:MyCAM")) == len(list_explainers()) + 1
        ('my_cam.py:MyCAM', True)
    """
    if not value:
        return None
    specs = [s for s in value.lstrip("+").split(",") if s]
    return list_explainers() + specs if value.startswith("+") else specs


def _run(args: argparse.Namespace) -> int:
    from pytorch_lightning.utilities import rank_zero_only

    from benchmark.offline import OFFLINE_DEFAULTS, offline_metrics, run_offline
    from benchmark.results import read_per_sample, reduce_per_sample, write_results_csv

    data = dict(OFFLINE_DEFAULTS["data"], size=args.images)
    out = Path(args.out)
    if (out / "per_sample").exists():
        shutil.rmtree(out / "per_sample")  # a fresh run (resuming is issue 5's run-directory work)
    timing = run_offline(args.backbones.split(",") if args.backbones else None, _explainers(args.explainers),
                         data=data,
                         batch_size=args.batch_size, out=str(out), accelerator=args.accelerator, devices=args.devices,
                         strategy=args.strategy, enable_progress_bar=False)
    if rank_zero_only.rank != 0:
        return 0
    rows = reduce_per_sample(read_per_sample(out), offline_metrics())  # equal to the online metrics (tested)
    write_results_csv(rows, out / "results.csv")
    seconds = {r["backbone"]: r["seconds"] for r in timing}
    print(f"\nSyntheticShapes {data}; metric settings {OFFLINE_DEFAULTS['metric_settings']}, top-k maps "
          f"{OFFLINE_DEFAULTS['top_k']}, target = label; every result row in {out / 'results.csv'}")
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        table: dict = {}
        for r in rows:
            if r["backbone"] == backbone and r["metric"] in RUN_COLUMNS:
                table.setdefault(r["method"], {})[r["metric"]] = r["value"]
        columns = [c for c in RUN_COLUMNS if any(c in v for v in table.values())]
        print(f"\n## {backbone} ({seconds.get(backbone, float('nan')):.0f} s)\n")
        print(tabulate([[m] + [v.get(c, float("nan")) for c in columns] for m, v in table.items()],
                       headers=["method"] + columns, tablefmt="pipe", floatfmt=".2f"))
    return 0


def _common_options(parser: argparse.ArgumentParser, images: int, batch_size: int, accelerator: str,
                    out: str) -> argparse.ArgumentParser:
    """Explainers, image count, batch size, the Lightning device options and the output directory."""
    parser.add_argument("--explainers", default="", help="comma-separated names or 'file.py:Class' / 'module:Class' "
                        "specs (default: all registered; a leading '+' adds to all registered)")
    parser.add_argument("--images", type=int, default=images, help=f"number of images (default: {images})")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--accelerator", default=accelerator)
    parser.add_argument("--devices", default="1", help="Lightning `devices` (default: 1)")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default: auto)")
    parser.add_argument("--out", default=out, help=f"output directory (default: {out})")
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cam-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered explainers and default layers").set_defaults(func=_list)
    demo = sub.add_parser("demo", help="offline example: every explainer on random images in Trainer.predict")
    demo.add_argument("--backbone", default="resnet18", help="backbone name (default: resnet18)")
    demo.add_argument("--weights", default=None, help="None (random init), 'default' (local hub cache) or a path")
    demo.add_argument("--chunk-size", type=int, default=64, help="masked forwards per chunk (Score-/Ablation-CAM)")
    demo.add_argument("--seed", type=int, default=0)
    _common_options(demo, images=4, batch_size=4, accelerator="auto", out="runs/demo").set_defaults(func=_demo)
    run = sub.add_parser("run", help="offline default benchmark: SyntheticShapes x shipped backbones x all methods")
    run.add_argument("--backbones", default="", help="comma-separated (default: the shipped synthetic/* models)")
    _common_options(run, images=96, batch_size=32, accelerator="cpu", out="runs/offline").set_defaults(func=_run)
    from benchmark.synthetic import train

    train_parser = sub.add_parser("train-synthetic", help="train a SyntheticShapes backbone (Lightning fit)")
    train.add_arguments(train_parser).set_defaults(func=train.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``cam-bench`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if getattr(args, "devices", None) is not None and str(args.devices).isdigit():
        args.devices = int(args.devices)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
