"""Execute a :class:`~benchmark.run_config.RunConfig`: one ``Trainer.predict`` per backbone, resumable.

Output directory (``config.out_dir``, default ``leaderboards/<name>``)::

    run.json               config, fingerprint, per-backbone preprocessing, timing and target layers
                           (layer + layout per method), versions, commit, command
    config.yaml            the resolved config: ``cam-bench run --config config.yaml`` reproduces the run
    per_sample/<backbone>/<method>/shard_<s>.parquet   one row per (dataset index, backbone, method)
    per_sample/<backbone>/_data/shard_<s>.json         the data report of each shard (counts, skipped samples)
    maps/<backbone>/...    the maps and images of the first ``figures`` samples
    logs/<backbone>/       Lightning's CSV logger
    results.csv, leaderboard.md, figures/   rendered by :mod:`benchmark.leaderboard`

Resume: a shard is the fixed batch of positions ``[s * batch_size, (s + 1) * batch_size)``
(:mod:`datamodules.shards`); a re-run into the same directory computes only the (backbone, method,
shard) files that are missing -- at most the batches in flight when a run died -- and refuses a
directory whose fingerprint differs (``overwrite=True`` starts afresh), and a backbone whose resolved target
layers or layouts differ from those recorded (e.g. after a change of the automatic choice). Because shards have the same
composition on any number of processes, the per-sample values, ``results.csv`` and
``leaderboard.md`` are byte-identical for 1 or N processes.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only

from benchmark.backbones import create_backbone
from benchmark.explainers import resolve_explainer
from benchmark.module import ExplainerModule
from benchmark.run_config import RunConfig, _data_kwargs, dataset_subset, fingerprint, fingerprint_diff, validate
from benchmark.versions import environment
from callbacks.per_sample_writer import PerSampleWriter, atomic_write, finished_shards, safe_name
from callbacks.progress import BenchmarkProgressBar
from datamodules import create_datamodule
from datamodules.shards import num_shards

__all__ = ["run_benchmark"]

log = logging.getLogger("cam_bench.run")

#: Trainer arguments the run sets itself
_OWN_TRAINER_ARGS = {"use_distributed_sampler": False, "enable_checkpointing": False, "enable_model_summary": False}


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _prepare_out(config: RunConfig, fp: Mapping[str, Any], command: str) -> Path:
    """Check (or start) the run directory; rank 0 writes ``run.json`` and ``config.yaml``."""
    out = config.out_dir
    meta_path = out / "run.json"
    if config.overwrite and rank_zero_only.rank == 0:
        for part in ("per_sample", "maps", "logs", "figures", "results.csv", "leaderboard.md", "run.json"):
            target = out / part
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        diff = fingerprint_diff(meta["fingerprint"], fp)
        if diff:
            raise ValueError(f"{str(out)!r} holds a run with different settings ({', '.join(diff)}); resuming would "
                             "mix them. Use another --out, or --overwrite true to start afresh.")
    elif any((out / "per_sample").glob("*")):
        raise ValueError(f"{str(out / 'per_sample')!r} has results but no run.json; use another --out or "
                         "--overwrite true.")
    else:
        meta = {"backbones": {}}
    meta.update({"config": config.as_dict(), "fingerprint": fp, "command": command, **environment()})
    if rank_zero_only.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(meta_path, meta)
        import yaml

        resolved = {**config.as_dict(), "out": None, "overwrite": False}
        (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    return out


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def run_benchmark(config: RunConfig, trainer: Optional[Mapping[str, Any]] = None, command: str = "") -> Path:
    """Run the matrix of ``config`` (see the module docstring); returns the output directory.

    Args:
        config: the run settings (validated first, before any model is built).
        trainer: ``pl.Trainer`` keyword arguments (``devices``, ``strategy``, ``num_nodes``, ``precision``,
            ...); the run sets ``use_distributed_sampler=False`` (it deals its own shards), its callbacks,
            and a CSV logger under ``<out>/logs`` unless ``logger`` is given.
        command: the command line recorded in ``run.json``.
    """
    config = config.resolved()
    datamodule = validate(config)
    datamodule.use_shards(limit=config.limit)
    datamodule.setup("predict")
    subset = dataset_subset(datamodule)
    out = _prepare_out(config, fingerprint(config, subset), command)
    methods = [resolve_explainer(spec) for spec in config.explainers]
    total = num_shards(subset["n"], config.batch_size)
    for backbone in config.backbones:
        if all(len(finished_shards(out, backbone, m)) >= total for m in methods):
            log.info("%s: all %d shards of %d methods on disk; nothing to recompute", backbone, total, len(methods))
            continue
        _run_backbone(config, dict(trainer or {}), out, backbone, methods, subset["n"])
    if rank_zero_only.rank == 0:
        from benchmark.leaderboard import render_runs

        render_runs([out], out / "leaderboard.md", methods=methods, backbones=config.backbones)
    return out


def _check_layers(out: Path, backbone: str, layers: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse to add to results computed with another target layer or layout for ``backbone``."""
    meta = json.loads((out / "run.json").read_text())
    recorded = meta["backbones"].get(backbone, {}).get("layers", {})
    diff = [f"{m}: {dict(recorded[m])} -> {dict(layers[m])}" for m in sorted(set(recorded) & set(layers))
            if dict(recorded[m]) != dict(layers[m])]
    if diff:
        raise ValueError(f"{str(out)!r} holds results of {backbone} computed at other target layers "
                         f"({'; '.join(diff)}); "
                         "resuming would mix them. Pass the recorded --target_layer / --layout, use another --out, "
                         "or --overwrite true.")


def _run_backbone(config: RunConfig, trainer_args: Dict[str, Any], out: Path, backbone: str, methods,
                  size: int) -> None:
    """One ``Trainer.predict`` over the shards of ``size`` samples not yet on disk for ``backbone``."""
    model, prep = create_backbone(backbone, weights=config.weights, num_classes=config.num_classes)
    datamodule = create_datamodule(config.data, **_data_kwargs(config, prep))
    datamodule.setup("predict")
    dataset = datamodule.dataset
    keep = [dataset.global_index(i) if hasattr(dataset, "global_index") else i
            for i in range(min(config.figures, size))]
    total = num_shards(size, config.batch_size)
    module = ExplainerModule(model, {spec: config.explainer_args.get(spec, {}) for spec in config.explainers},
                             target=config.target, keep_maps=keep, input_size=prep.input_size,
                             metrics={m: config.metric_args.get(m, {}) for m in config.metrics}, top_k=config.top_k,
                             target_layer=config.target_layer.get(backbone), layout=config.layout.get(backbone))
    _check_layers(out, backbone, module.layers)
    _barrier()  # every rank sees the same files: none is written between the two barriers
    done = {m: finished_shards(out, backbone, m) for m in methods}
    _barrier()
    module.done = {s: frozenset(m for m in methods if s in done[m]) for s in range(total)}
    skip = {s for s, finished in module.done.items() if len(finished) == len(methods)}
    datamodule.use_shards(skip=skip, limit=config.limit)
    todo = {m: total - len(done[m]) for m in methods if total - len(done[m])}
    log.info("%s: %d of %d shards finished for every method; computing %s", backbone, len(skip), total,
             ", ".join(f"{m} {n} shard{'s' * (n != 1)}" for m, n in todo.items()))
    args = {"accelerator": "cpu", "devices": 1, **trainer_args, **_OWN_TRAINER_ARGS, "default_root_dir": str(out)}
    if args.get("logger") in (None, True):
        args["logger"] = CSVLogger(str(out / "logs"), name=safe_name(backbone))  # version_<k> per attempt
    args["callbacks"] = [PerSampleWriter(out, config.data, backbone, prep.mean, prep.std),
                         *([BenchmarkProgressBar(backbone)] if args.get("enable_progress_bar") is not False else [])]
    start = time.perf_counter()
    with warnings.catch_warnings():  # the shard sampler returns every index by construction (tested)
        warnings.filterwarnings("ignore", message=".*custom batch sampler `ShardBatchSampler`", category=UserWarning)
        pl.Trainer(**args).predict(module, datamodule=datamodule, return_predictions=False)
    seconds = time.perf_counter() - start
    if rank_zero_only.rank == 0:
        meta_path = out / "run.json"
        meta = json.loads(meta_path.read_text())
        entry = meta["backbones"].setdefault(backbone, {"seconds": []})
        entry.update({"preprocessing": asdict(prep), "weights": config.weights, "num_classes": config.num_classes,
                      "layers": module.layers})
        entry["seconds"].append({"seconds": round(seconds, 3), "shards": {m: n for m, n in todo.items()}})
        _write_json(meta_path, meta)
