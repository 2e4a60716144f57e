"""The ``cam-bench`` command line.

* ``cam-bench list`` -- registered explainers (with their one-line descriptions), the papers'
  target layers, and the backbone naming.
* ``cam-bench demo`` -- the offline example run: a backbone (random init unless ``--weights``)
  explains seeded random images with every registered explainer inside ``Trainer.predict``
  (``--devices``/``--strategy`` pass through to Lightning, e.g. ``--devices 2 --strategy ddp``),
  writes the records with :class:`callbacks.SaliencyWriter` and prints a summary table.
* ``cam-bench run [--config FILE] [overrides]`` -- the matrix backbones x explainers x metrics over one
  datamodule (:mod:`benchmark.runner.run`; settings :class:`~benchmark.runner.config.RunConfig`, every Lightning
  Trainer flag as ``--trainer.<flag>``); with no arguments the offline default: SyntheticShapes x the
  shipped backbones x every explainer x every metric. Writes per-sample Parquet, ``results.csv``,
  ``leaderboard.md`` and figures to ``runs/<name>`` and prints the leaderboard.
* ``cam-bench leaderboard RUN_DIR [RUN_DIR ...] [--out FILE]`` -- render or merge run directories. A refused
  merge (differing settings, a shared backbone with other weights, rows held twice, data reports that differ;
  :class:`~benchmark.report.results.RunsDiffer`) prints one line and exits 2; a partial run exits 3 unless
  ``--allow_partial``.
* ``cam-bench train-synthetic --model NAME`` -- train a SyntheticShapes backbone with a Lightning
  ``fit`` (see :mod:`benchmark.synthetic.train`; defaults reproduce the shipped checkpoints).
"""
from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence

from tabulate import tabulate

from benchmark import catalog

__all__ = ["main", "summarize"]


def summarize(records: Sequence[dict]) -> str:
    """Markdown table: per method its layer, image count, mean map value, seconds per image.

    Examples:
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


def _list(_: Any) -> int:
    """Print the registries from :mod:`benchmark.catalog` (no model library imported: well under a second)."""
    from importlib.metadata import entry_points

    from benchmark.synthetic import model_card

    plugins = [[p.name, f"plugin `{p.value}` (installed package, entry point {catalog.ENTRY_POINT_GROUP})"]
               for p in entry_points(group=catalog.ENTRY_POINT_GROUP) if p.name not in catalog.EXPLAINERS]
    explainers = [[n, ("" if n in catalog.DEFAULT_EXPLAINERS else "(when named) ") + d]
                  for n, d in catalog.EXPLAINERS.items()]
    print(tabulate(explainers + plugins, headers=["explainer", "description"], tablefmt="pipe"))
    print()
    print(tabulate(list(catalog.DATAMODULES.items()), headers=["datamodule", "description"], tablefmt="pipe"))
    print()
    print(tabulate([[n, ("" if n in catalog.DEFAULT_METRICS else "(when named) ") + d]
                    for n, d in catalog.METRICS.items()], headers=["metric", "description"], tablefmt="pipe"))
    print()
    cards = {n: model_card(n) for n in catalog.SYNTHETIC_BACKBONES}
    print(tabulate([[f"synthetic/{n}", f"shipped SyntheticShapes model, {c.get('parameters', '?'):,} parameters, "
                     f"val accuracy {100 * c.get('val_accuracy', float('nan')):.2f} %"] for n, c in cards.items()],
                   headers=["backbone", "description"], tablefmt="pipe"))
    print()
    print(tabulate(list(catalog.TARGET_LAYERS.items()), headers=["model class", "default target layer"],
                   tablefmt="pipe"))
    print("\nBackbones: 'torchvision/<name>', 'timm/<name>[.<tag>]', 'hf/<local dir or cached repo id>', or a bare "
          "name (torchvision first, then timm); "
          f"{', '.join('digits/' + n for n in catalog.DIGITS_BACKBONES)} (MNIST, train it with "
          "`python -m benchmark.digits.train`).")
    return 0


def _demo(args: Any) -> int:
    import pytorch_lightning as pl

    from benchmark.explainers import default_explainers
    from benchmark.runtime.backbones import create_backbone
    from benchmark.runtime.module import ExplainerModule
    from callbacks import SaliencyWriter, read_records
    from datamodules import RandomImagesDataModule

    model, prep = create_backbone(args.backbone, weights=args.weights)
    explainers = _explainers(args.explainers) or default_explainers()
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
    """``"a,b"`` -> those; ``"+a,b"`` -> the default explainers plus those; ``""`` -> None (the defaults).

    Examples:
        >>> _explainers("gradcam,my_cam.py:MyCAM")
        ['gradcam', 'my_cam.py:MyCAM']
        >>> _explainers("+my_cam.py:MyCAM")[-1], len(_explainers("+my_cam.py:MyCAM"))
        ('my_cam.py:MyCAM', 15)
    """
    if not value:
        return None
    specs = [s for s in value.lstrip("+").split(",") if s]
    return list(catalog.DEFAULT_EXPLAINERS) + specs if value.startswith("+") else specs


def _run(args: Any) -> int:
    from pytorch_lightning.utilities import rank_zero_only

    from benchmark.runner.config import RunConfig
    from benchmark.runner.run import run_benchmark

    options = args.as_dict() if hasattr(args, "as_dict") else dict(vars(args))
    trainer = options.pop("trainer", None) or {}
    for key in ("config", "__path__"):
        options.pop(key, None)
    try:
        out = run_benchmark(RunConfig(**options), trainer={k: v for k, v in trainer.items() if v is not None},
                            command=" ".join(["cam-bench", *sys.argv[1:]]))
    finally:
        _end_process_group()
    if rank_zero_only.rank == 0:
        print((out / "leaderboard.md").read_text())
        print(f"Results in {out}: results.csv, leaderboard.md, leaderboard.tex, figures/, per_sample/")
    return 0


def _end_process_group() -> None:
    """Destroy the process group a distributed run initialised, while the interpreter is fully alive: left to
    interpreter shutdown, gloo's worker threads can abort the process (SIGABRT, "terminate called without an
    active exception") after every file was written, and the run would report failure."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _leaderboard(args: Any) -> int:
    from benchmark.report.leaderboard import render_runs

    runs = [Path(d) for d in args.run_dirs]
    if args.out is None and len(runs) > 1:
        err = ValueError("Merging several runs needs --out FILE (e.g. --out leaderboards/merged/leaderboard.md).")
        err.cam_bench_refusal = True  # type: ignore[attr-defined]  # one line, exit 2 (console)
        raise err
    out = Path(args.out) if args.out else runs[0] / "leaderboard.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    from benchmark.report.leaderboard import IncompleteRuns

    shown = out.with_suffix(".tex") if args.format == "latex" else out
    try:
        render_runs(runs, out, force=args.force, allow_partial=args.allow_partial)
    except IncompleteRuns as err:
        print(shown.read_text())
        print(f"cam-bench: error: {err}", file=sys.stderr)
        return 3
    print(shown.read_text())
    return 0


def _common_options(parser: Any, images: int, batch_size: int, accelerator: str,
                    out: str) -> Any:
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


def _run_parser(full: bool = True) -> Any:
    """The ``run`` options: :class:`~benchmark.runner.settings.RunConfig` and the Lightning Trainer pass-through.

    ``full``: the Trainer group parsed with Lightning's own types (imports Lightning, for a run); else the
    Trainer flags listed one line each from :data:`benchmark.catalog.TRAINER_FLAGS` (for ``--help``: no
    model library imported).
    """
    from argparse import SUPPRESS

    from jsonargparse import ActionConfigFile, ArgumentParser

    from benchmark.runner.settings import RunConfig

    run = ArgumentParser(description="The matrix backbones x explainers x metrics over one datamodule "
                         "(default: the offline SyntheticShapes benchmark).")
    run.add_argument("--config", action=ActionConfigFile, help="YAML config (e.g. configs/poppi_table2.yaml)")
    run.add_class_arguments(RunConfig, None, instantiate=False)
    if full:
        import pytorch_lightning as pl

        run.add_class_arguments(pl.Trainer, "trainer", instantiate=False, skip=set(catalog.NOT_FOR_PREDICT))
        return run
    trainer = run.add_argument_group("Lightning Trainer pass-through (parsed with Lightning's own types; every "
                                     "other Trainer argument that acts on predict is accepted too)")
    trainer.add_argument("--trainer", metavar="CONFIG", default=SUPPRESS, help="YAML file of Trainer arguments")
    for name, text in catalog.TRAINER_FLAGS.items():
        trainer.add_argument(f"--trainer.{name}", metavar="VALUE", default=SUPPRESS, help=text)
    return run


def _parser(argv: Sequence[str]) -> Any:
    """The ``cam-bench`` parser for ``argv``: only the chosen subcommand's parser imports what it needs, and
    ``--help`` never imports a model library."""
    from jsonargparse import ArgumentParser

    command = next((a for a in argv if not a.startswith("-")), None)
    wants_help = any(a in ("-h", "--help") for a in argv)
    parser = ArgumentParser(prog="cam-bench", description="Benchmark Class Activation Map explanation "
                            "methods: explainers x metrics x backbones over a validation set.")
    sub = parser.add_subcommands(required=True, dest="command")
    sub.add_subcommand("list", ArgumentParser(description="explainers, datamodules, metrics and backbones"),
                       help="registered explainers, datamodules, metrics and backbones")
    demo = ArgumentParser(description="offline example: every explainer on random images in Trainer.predict")
    demo.add_argument("--backbone", default="resnet18", help="backbone name (default: resnet18)")
    demo.add_argument("--weights", default=None, help="None (random init), 'default' (local hub cache) or a path")
    demo.add_argument("--chunk-size", type=int, default=64, help="masked forwards per chunk (Score-/Ablation-CAM)")
    demo.add_argument("--seed", type=int, default=0)
    sub.add_subcommand("demo", _common_options(demo, images=4, batch_size=4, accelerator="auto", out="runs/demo"),
                       help="offline example: every explainer on random images")
    sub.add_subcommand("run", _run_parser(full=command == "run" and not wants_help),
                       help="benchmark run (default: the offline SyntheticShapes matrix)")
    board = ArgumentParser(description="render one run directory, or merge several (fingerprints must agree)")
    board.add_argument("run_dirs", nargs="+", help="run directories written by `cam-bench run`")
    board.add_argument("--out", default=None, help="markdown file (default: RUN_DIR/leaderboard.md for one run)")
    board.add_argument("--force", action="store_true", help="merge runs whose fingerprints differ")
    board.add_argument("--format", default="markdown", choices=["markdown", "latex"], help="what to print: the "
                       "markdown, or the booktabs LaTeX tables (both are written: leaderboard.md and leaderboard.tex)")
    board.add_argument("--allow_partial", action="store_true", help="exit 0 on a partial run (else exit 3; the "
                       "leaderboard marks it incomplete either way)")
    sub.add_subcommand("leaderboard", board, help="render or merge run directories into leaderboard.md")
    train = ArgumentParser(description="train a SyntheticShapes backbone (Lightning fit)")
    if command == "train-synthetic":
        from benchmark.synthetic.train import add_arguments

        add_arguments(train)
    sub.add_subcommand("train-synthetic", train, help="train a SyntheticShapes backbone")
    return parser


class _LightningNoise(logging.Filter):
    """Drop Lightning's advertisement and hardware lines that do not apply (TPU, HPU); keep everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("litlogger" in text or text.startswith(("TPU available", "HPU available", "IPU available")))


def _quiet() -> None:
    """Quiet by default: no Lightning advertisement, no third-party deprecation warning about its internals."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_LightningNoise())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``cam-bench`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _quiet()
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = _parser(argv).parse_args(argv)
    args = cfg[cfg.command]
    if cfg.command == "train-synthetic":
        from benchmark.synthetic import train

        return train.run(args)
    if getattr(args, "devices", None) is not None and str(args.devices).isdigit():
        args.devices = int(args.devices)
    return {"list": _list, "demo": _demo, "run": _run, "leaderboard": _leaderboard}[cfg.command](args)


def console(argv: Optional[List[str]] = None) -> int:
    """The ``cam-bench`` console script: :func:`main`, with refusals as one line (exit 2) and an
    interrupted run as exit 75 (resumable); other errors keep their traceback."""
    try:
        return main(argv)
    except Exception as err:  # noqa: BLE001 -- only refusals and interrupts are caught; the rest is re-raised
        ours = type(err).__module__.startswith(("benchmark.", "callbacks."))
        if not (ours or getattr(err, "cam_bench_refusal", False)):
            raise  # not a refusal: tell without importing the run's machinery
        from benchmark.runner.folder import FolderLocked, SettingsDiffer
        from callbacks.stop_on_signal import EXIT_INTERRUPTED, RunInterrupted

        if isinstance(err, RunInterrupted):
            print(f"cam-bench: interrupted: {err}", file=sys.stderr)
            return EXIT_INTERRUPTED
        if not (getattr(err, "cam_bench_refusal", False) or isinstance(err, (FolderLocked, SettingsDiffer))):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"cam-bench: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(console())
