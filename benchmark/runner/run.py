"""Execute a :class:`~benchmark.runner.config.RunConfig`: one ``Trainer.predict`` per backbone, resumable.

Output directory (``config.out_dir``, default ``runs/<name>``; the folder itself is managed by
:mod:`benchmark.runner.folder`: lock, fingerprint, overwrite, provenance)::

    run.json               config, fingerprint, per-backbone preprocessing, timing, target layers
                           (layer + layout per method) and passes per image beside the protocol's minimum
                           (:mod:`benchmark.report.passes_report`), versions, commit, command
    config.yaml            the resolved config: ``cam-bench run --config config.yaml`` reproduces the run
    per_sample/<backbone>/<method>/shard_<s>.parquet   one row per (dataset index, backbone, method)
    per_sample/<backbone>/_data/shard_<s>.json         the data report of each shard (counts, skipped samples)
    maps/<backbone>/...    the maps and images of the first ``figures`` samples
    logs/<backbone>/       Lightning's CSV logger
    results.csv, leaderboard.md/.tex,       rendered by :mod:`benchmark.report.leaderboard`
    figures/

Resume: a shard is the fixed batch of positions ``[s * batch_size, (s + 1) * batch_size)``
(:mod:`datamodules.shards`); a re-run into the same directory computes only the (backbone, method,
shard) files that are missing -- at most the batches in flight when a run died -- and refuses a
directory whose fingerprint differs (``overwrite=True`` starts afresh), a backbone whose resolved target
layers or layouts differ from those recorded (e.g. after a change of the automatic choice), and -- before
``config.yaml`` is rewritten, even when nothing is left to compute -- a recorded backbone whose weights hash
differs (e.g. random init under another ``--seed``). A backbone's weights hash, layers and preprocessing are
recorded before its first shard, so a SIGKILLed attempt's are on record. Because shards have the same
composition on any number of processes, the per-sample values, ``results.csv`` and
``leaderboard.md`` are byte-identical for 1 or N processes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only

from benchmark.explainers import resolve_explainer
from benchmark.metrics.registry import with_normalisation
from benchmark.report.passes_report import read_backbone_passes
from benchmark.runner.config import (
    RunConfig,
    _data_kwargs,
    dataset_subset,
    explainer_settings,
    fingerprint,
    validate,
)
from benchmark.runner.folder import (
    READY_NAME,
    SettingsDiffer,
    announce_ready,
    await_ready,
    backbone_complete,
    check_backbone,
    discard_unsharded,
    discard_unused,
    finished_shards,
    folder_lock,
    launch_token,
    num_shards,
    open_attempt,
    prepare,
    record_backbone,
    record_config,
    safe_name,
    weights_hash,
)
from benchmark.runtime.backbones import create_backbone
from benchmark.runtime.module import ExplainerModule
from callbacks.per_sample_writer import PerSampleWriter
from callbacks.progress import BenchmarkProgressBar
from callbacks.stop_on_signal import StopOnSignal
from datamodules import create_datamodule

__all__ = ["run_benchmark"]

log = logging.getLogger("cam_bench.run")

#: Trainer arguments the run sets itself
_OWN_TRAINER_ARGS = {"use_distributed_sampler": False, "enable_checkpointing": False, "enable_model_summary": False}


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _precision(trainer: Mapping[str, Any]) -> str:
    """Lightning's precision setting, aliases normalised (``32`` -> ``32-true``, ``bf16`` -> ``bf16-mixed``).

    Examples:
        >>> _precision({}), _precision({"precision": 16}), _precision({"precision": "bf16-true"})
        ('32-true', '16-mixed', 'bf16-true')
    """
    value = str(trainer.get("precision") or "32-true")
    return {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}.get(value, value)


def _refusal(err: BaseException) -> BaseException:
    """Mark an error raised before anything is computed: the CLI prints it as one line and exits 2."""
    err.cam_bench_refusal = True
    return err


def run_benchmark(config: RunConfig, trainer: Optional[Mapping[str, Any]] = None, command: str = "") -> Path:
    """Run the matrix of ``config`` (see the module docstring); returns the output directory.

    Args:
        config: the run settings (validated first, before any model is built).
        trainer: ``pl.Trainer`` keyword arguments (``devices``, ``strategy``, ``num_nodes``, ``precision``,
            ...); the run sets ``use_distributed_sampler=False`` (it deals its own shards), its callbacks,
            and a CSV logger under ``<out>/logs`` unless ``logger`` is given.
        command: the command line recorded in ``run.json``.
    """
    config, trainer = config.resolved(), dict(trainer or {})
    rank_zero = rank_zero_only.rank == 0
    out = config.out_dir
    token = launch_token()  # torchrun / srun start every rank at once: the others wait for rank 0's folder
    if token and not rank_zero:
        try:
            await_ready(out, token)
        except SettingsDiffer as err:
            raise _refusal(err)
    with folder_lock(out) if rank_zero else contextlib.nullcontext():
        try:
            datamodule = validate(config)
            datamodule.use_shards(limit=config.limit)
            datamodule.setup("predict")
            subset = dataset_subset(datamodule)
            fp = {**fingerprint(config, subset), "precision": _precision(trainer)}
            fresh = not (out / "run.json").exists() or config.overwrite
            prepare(out, fp, config.overwrite, rank_zero)
            methods = [resolve_explainer(spec) for spec in config.explainers]
            _check_recorded(config, out)  # other weights (e.g. another --seed): refused before config.yaml changes
            if rank_zero:
                record_config(out, config.as_dict(), fp, command, methods)
        except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
            if token and rank_zero:
                announce_ready(out, token, f"{type(err).__name__}: {err}")
            raise _refusal(err)
        if token and rank_zero:
            announce_ready(out, token)
        try:
            with StopOnSignal() as stop:
                _run_all(config, trainer, out, methods, subset["n"], stop)
        except BaseException as err:
            if rank_zero and fresh and getattr(err, "cam_bench_refusal", False):
                discard_unused(out)  # e.g. --weights default with an empty cache: leave no half-started folder
            raise
        if rank_zero:
            from benchmark.report.leaderboard import render_runs

            render_runs([out], out / "leaderboard.md", methods=methods, backbones=config.backbones)
            (out / READY_NAME).unlink(missing_ok=True)  # every rank read it long ago: predict needed them all
    return out


def _build(config: RunConfig, backbone: str):
    """The backbone's model and preprocessing; weights that cannot be found or read are a refusal."""
    try:
        return create_backbone(backbone, weights=config.weights, num_classes=config.num_classes, seed=config.seed)
    except (ValueError, FileNotFoundError) as err:  # e.g. --weights default with nothing in the local cache
        raise _refusal(err)


def _check_recorded(config: RunConfig, out: Path) -> None:
    """Build each backbone of ``config`` that ``run.json`` holds results of and refuse other weights or
    preprocessing (:func:`check_backbone`), also for a backbone with nothing left to compute: ``--seed``
    (random init), a replaced checkpoint file or a library's new default init change the weights without
    changing the fingerprint, and ``config.yaml`` must keep describing the results on disk."""
    path = out / "run.json"
    recorded = json.loads(path.read_text())["backbones"] if path.is_file() else {}
    for backbone in config.backbones:
        if "weights_sha256" in recorded.get(backbone, {}):
            model, prep = _build(config, backbone)
            check_backbone(out, backbone, {}, weights_hash(model), asdict(prep))
            del model


def _run_all(config: RunConfig, trainer: Dict[str, Any], out: Path, methods, size: Optional[int],
             stop: StopOnSignal) -> None:
    for backbone in config.backbones:
        stop.check()
        if size is None:  # a stream without row counts: no fixed shards, so no resume within a backbone
            if backbone_complete(out, backbone):
                log.info("%s: finished by an earlier attempt; nothing to recompute", backbone)
                continue
            discard_unsharded(out, backbone)
        elif all(len(finished_shards(out, backbone, m)) >= num_shards(size, config.batch_size) for m in methods):
            log.info("%s: all %d shards of %d methods on disk; nothing to recompute", backbone,
                     num_shards(size, config.batch_size), len(methods))
            continue
        _run_backbone(config, trainer, out, backbone, methods, size, stop)


def _run_backbone(config: RunConfig, trainer_args: Dict[str, Any], out: Path, backbone: str, methods,
                  size: Optional[int], stop: StopOnSignal) -> None:
    """One ``Trainer.predict`` over the shards of ``size`` samples not yet on disk for ``backbone``."""
    model, prep = _build(config, backbone)
    weights = weights_hash(model)
    datamodule = create_datamodule(config.data, **_data_kwargs(config, prep))
    datamodule.setup("predict")
    dataset = datamodule.dataset
    norm = getattr(datamodule, "preprocessing", prep)  # data_args.preprocessing, else the backbone's
    try:
        metric_args = {m: with_normalisation(m, config.metric_args.get(m, {}), norm.mean, norm.std)
                       for m in config.metrics}
    except ValueError as err:
        raise _refusal(err)
    keep = [dataset.global_index(i) if hasattr(dataset, "global_index") else i
            for i in range(config.figures if size is None else min(config.figures, size))]
    total = 0 if size is None else num_shards(size, config.batch_size)
    settings = explainer_settings(config)  # keyed by registered name, as the fingerprint and the header show them
    module = ExplainerModule(model, {m: settings.get(m, {}) for m in methods},
                             target=config.target, keep_maps=keep, input_size=prep.input_size,
                             metrics=metric_args, top_k=config.top_k,
                             target_layer=config.target_layer.get(backbone), layout=config.layout.get(backbone),
                             reduce=False)
    check_backbone(out, backbone, module.layers, weights, asdict(prep))  # SettingsDiffer: a refusal for the CLI
    _barrier()  # every rank sees the same files: none is written between the two barriers
    done = {m: finished_shards(out, backbone, m) for m in methods}
    _barrier()
    entry = {"preprocessing": asdict(prep), "weights": config.weights, "num_classes": config.num_classes,
             "layers": module.layers, "weights_sha256": weights}
    if rank_zero_only.rank == 0:  # before any shard: a resume after SIGKILL checks these (and the shards' provenance)
        open_attempt(out, backbone, entry, done)
    module.done = {s: frozenset(m for m in methods if s in done[m]) for s in range(total)}
    skip = {s for s, finished in module.done.items() if len(finished) == len(methods)}
    datamodule.use_shards(skip=skip, limit=config.limit)
    todo = {m: total - len(done[m]) for m in methods if total - len(done[m])}
    if size is None:
        log.info("%s: computing every method over the whole stream (no row counts: no shards)", backbone)
    else:
        log.info("%s: %d of %d shards finished for every method; computing %s", backbone, len(skip), total,
                 ", ".join(f"{m} {n} shard{'s' * (n != 1)}" for m, n in todo.items()))
    args = {"accelerator": "cpu", "devices": 1, **trainer_args, **_OWN_TRAINER_ARGS, "default_root_dir": str(out)}
    if args.get("logger") in (None, True):
        args["logger"] = CSVLogger(str(out / "logs"), name=safe_name(backbone))  # version_<k> per attempt
    args["callbacks"] = [PerSampleWriter(out, config.data, backbone, norm.mean, norm.std), stop,  # stop after writing
                         *([BenchmarkProgressBar(backbone)] if args.get("enable_progress_bar") is not False else [])]
    start, complete = time.perf_counter(), False
    try:
        with warnings.catch_warnings():  # the shard sampler returns every index by construction (tested)
            warnings.filterwarnings("ignore", message=".*custom batch sampler `ShardBatchSampler`",
                                    category=UserWarning)
            pl.Trainer(**args).predict(module, datamodule=datamodule, return_predictions=False)
        _barrier()  # every rank's last shard is on disk before rank 0 records, renders or reads the next inventory
        complete = True
    finally:  # also when interrupted: the shards on disk keep their settings, weights and provenance
        if rank_zero_only.rank == 0:
            record_backbone(out, backbone, {**entry, "complete": complete,
                                            "passes_per_image": read_backbone_passes(out, backbone)},
                            time.perf_counter() - start)
