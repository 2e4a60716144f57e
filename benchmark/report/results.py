"""Per-sample results on disk -> dataset results, reduced exactly like the online metrics.

:func:`read_per_sample` joins the Parquet files written by :class:`callbacks.PerSampleWriter`
(any number of ranks), sorted by (dataset, backbone, method, index) and refusing duplicates.
:func:`reduce_per_sample` feeds each metric column, in dataset-index order, to a fresh metric
object of the same name and settings and returns its summary rows -- the same float64 reduction
as the online metric, so the numbers equal ``ExplainerModule.results`` (tested) and do not depend
on the number of processes that produced the files. :func:`data_report` adds up the data reports
(``<backbone>/_data/*.json``) of one backbone over merged runs, each shard once.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch

from benchmark.metrics import create_metric
from benchmark.report.stats import bootstrap_replicates, intervals
from benchmark.runner.folder import safe_name
from callbacks.per_sample_writer import PER_SAMPLE_COLUMNS

__all__ = ["RESULT_COLUMNS", "RunsDiffer", "data_report", "read_per_sample", "reduce_per_sample", "write_results_csv"]

#: Columns of ``results.csv``; ``ci_low, ci_high``: the 95 % percentile bootstrap interval (seeded).
RESULT_COLUMNS = ("dataset", "backbone", "method", "metric", "value", "ci_low", "ci_high", "n", "n_invalid")


class RunsDiffer(ValueError):
    """Runs that cannot be merged (settings, a shared backbone's weights, rows or data reports held twice over).

    A refusal: ``cam-bench leaderboard`` prints it as one line and exits 2."""

    cam_bench_refusal = True


def read_per_sample(run_dirs: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> pd.DataFrame:
    """Every per-sample row under ``<run_dir>/per_sample`` of one or several run directories, sorted by
    (dataset, backbone, method, index).

    Raises:
        FileNotFoundError: a run directory without Parquet files (says how to produce them; a refusal).
        RunsDiffer: a (dataset, backbone, method, index) row occurs twice (e.g. two merged runs hold the
            same backbone and method).
    """
    dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    frames = []
    for run_dir in dirs:
        files = sorted(Path(run_dir).glob("per_sample/*/[!_]*/*.parquet"))
        if not files:
            err = FileNotFoundError(f"No per-sample files (per_sample/<backbone>/<method>/*.parquet) under "
                                    f"{str(run_dir)!r}; run `cam-bench run --out {run_dir}` (or Trainer.predict "
                                    "with callbacks=[PerSampleWriter(run_dir, ...)]) first.")
            err.cam_bench_refusal = True  # type: ignore[attr-defined]
            raise err
        frames += [_read_shard(f) for f in files]
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    for part in frames:  # a metric a run did not configure is None (not NaN = undefined) in its rows
        for column in columns:
            if column not in part.columns:
                part[column] = pd.Series([None] * len(part), dtype=object, index=part.index)
    frame = pd.concat([f[columns] for f in frames], ignore_index=True)
    keys = ["dataset", "backbone", "method", "index"]
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    duplicated = frame.duplicated(keys)
    if duplicated.any():
        raise RunsDiffer(f"Expected each (dataset, backbone, method, index) once, but got duplicates "
                         f"{frame.loc[duplicated, keys].head(5).to_dict('records')}: merge runs that hold different "
                         "methods (or backbones), or render each run on its own.")
    return frame


def _read_shard(path: Path) -> pd.DataFrame:
    """One per-sample file; an unreadable one (a damaged disk, a file copied in part) is a refusal naming it."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        refusal = ValueError(f"Unreadable per-sample file {str(path)!r} ({type(err).__name__}: {err}); rerun the "
                             "same `cam-bench run` command: a resume recomputes an unreadable shard.")
        refusal.cam_bench_refusal = True  # type: ignore[attr-defined]
        raise refusal from err


def reduce_per_sample(frame: pd.DataFrame, metrics: Optional[Mapping[str, Mapping[str, Any]]] = None,
                      bootstrap: int = 0, seed: int = 0,
                      replicates: Optional[Dict[Tuple[str, str, str, str], np.ndarray]] = None) -> List[Dict[str, Any]]:
    """Dataset results ``{dataset, backbone, method, metric, value, ci_low, ci_high, n, n_invalid}``.

    Args:
        frame: rows as returned by :func:`read_per_sample`.
        metrics: metric name -> keyword arguments used in the run (the reduction of some metrics
            depends on them, e.g. ``nan_policy``); default: every metric column with defaults.
        bootstrap: resamples for the 95 % confidence interval (:func:`benchmark.report.stats.bootstrap_ci`:
            the same resampled image sets for every method, so intervals are paired); 0: NaN bounds.
        seed: the bootstrap's seed.
        replicates: when a dict, filled with ``(dataset, backbone, method, metric) -> (bootstrap,)`` replicates
            of each result (the numbers the interval is taken from; the metric-reliability report ranks
            methods on them).
    """
    names = [c for c in frame.columns if c not in PER_SAMPLE_COLUMNS]
    config = {name: dict((metrics or {}).get(name, {})) for name in names}
    rows: List[Dict[str, Any]] = []
    for (dataset, backbone, method), group in frame.groupby(["dataset", "backbone", "method"], sort=True):
        group = group.sort_values("index", kind="stable")
        indices = torch.tensor(group["index"].to_numpy(dtype=np.int64, copy=True))
        for name in names:
            column = group[name]
            if all(v is None for v in column):  # a metric not configured for this method
                continue
            metric = create_metric(name, **config[name])
            per_sample = [np.asarray(v, dtype=np.float64) for v in column]
            if hasattr(metric, "upgrade_rows"):  # rows of files written before the metric's row form changed
                status = group["map_status"].tolist() if "map_status" in group else [None] * len(per_sample)
                per_sample = metric.upgrade_rows(per_sample, status)
            values = torch.tensor(np.stack(per_sample))  # (N,) or (N, K)
            metric.store(values, indices)
            summary = metric.summary(sync=False)  # this process's rows are the whole dataset
            counts = {"n": summary.pop("n"), "n_invalid": summary.pop("n_invalid")}
            reps = bootstrap_replicates(metric.results_from, metric.sorted_values()[1], bootstrap, seed) \
                if bootstrap else {}
            bounds = intervals(reps)
            for part, value in summary.items():
                low, high = bounds.get(part, (float("nan"), float("nan")))
                if replicates is not None and part in reps:
                    replicates[dataset, backbone, method, f"{name}_{part}" if part else name] = reps[part]
                rows.append({"dataset": dataset, "backbone": backbone, "method": method,
                             "metric": f"{name}_{part}" if part else name, "value": value, "ci_low": low,
                             "ci_high": high, **counts})
    return rows


def write_results_csv(rows: List[Dict[str, Any]], path: Union[str, os.PathLike]) -> Path:
    """``results.csv`` with :data:`RESULT_COLUMNS`, rows in (dataset, backbone, method, metric) order,
    values with 17 significant digits (float64 round-trips exactly)."""
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).sort_values(
        ["dataset", "backbone", "method", "metric"], kind="stable")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.17g")
    return path


def data_report(metas: Sequence[Mapping[str, Any]], dataset: str, backbone: str, force: bool = False) -> str:
    """``Data report: boxes clipped 4, ...; skipped samples listed: 0.`` of ``backbone`` on ``dataset`` over the
    runs (their ``run.json`` with ``dir``) holding it: each shard's report once -- runs that share a backbone read
    the same shards, so their reports are equal and the first is counted. A stream's reports are per rank and
    batch (named by how many processes read it): each run's whole stream is one report, the first run's counted.

    Raises:
        RunsDiffer: two runs hold different reports of one shard (or of the stream), without ``force``; with it,
            the line says so and shows no count.
    """
    reports: Dict[str, Tuple[str, Dict[str, Any]]] = {}  # shard (or "the stream") -> (run directory, its report)
    for meta in metas:
        if meta["fingerprint"].get("data") != dataset:  # a forced merge of two datasets: each its own
            continue
        folder = Path(meta["dir"]) / "per_sample" / safe_name(backbone) / "_data"
        found = {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}
        if found and not all(name.startswith("shard_") for name in found):
            found = {"the stream": _summed(found.values())}
        for name, report in found.items():
            seen, first = reports.setdefault(name, (meta["dir"], report))
            if first != report:
                text = (f"Runs {seen!r} and {meta['dir']!r} hold different data reports for {backbone} ({name}: "
                        f"{first['counts']} vs {report['counts']})")
                if not force:
                    raise RunsDiffer(f"{text}; they did not read the same data. Re-run with the same data, or pass "
                                     "--force to merge anyway.")
                return f"Data report: -- ({text}; not counted, merged with --force)."
    total = _summed(report for _, report in reports.values())
    text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(total["counts"].items())) or "no data counts"
    return f"Data report: {text}; skipped samples listed: {len(total['skipped'])}."


def _summed(reports: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
    """Data reports added up: counts summed, skipped samples listed together (sorted: equal sets compare equal).

    Examples:
        >>> _summed([{"counts": {"boxes_clipped": 1}, "skipped": []}, {"counts": {"boxes_clipped": 3}, "skipped": []}])
        {'counts': {'boxes_clipped': 4}, 'skipped': []}
    """
    counts: Dict[str, int] = {}
    skipped: List[Any] = []
    for report in reports:
        for k, v in report["counts"].items():
            counts[k] = counts.get(k, 0) + v
        skipped += report["skipped"]
    return {"counts": counts, "skipped": sorted(skipped, key=lambda s: json.dumps(s, sort_keys=True, default=str))}
