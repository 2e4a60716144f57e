"""The passes a run made per image beside the protocol's minimum, per backbone (``run.json`` and the leaderboard).

Each per-sample row holds its batch's passes per image for its method (:data:`benchmark.passes.PASS_COLUMNS`), so
the mean over a backbone's rows of a method is that method's passes per image. A backbone's total adds the one
forward per batch that every method shares. The minimum is :func:`benchmark.runtime.pass_model.minimum_passes`,
summed the same way. Where a run has metrics whose passes the model cannot count (ROAD, MPRT, infidelity, ...:
:func:`~benchmark.metrics.registry.unmodelled_metrics`), their measured passes are in the minimum, which says
nothing about them; the summary names them and the header cell says so.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Union

import pandas as pd

from benchmark.metrics.registry import unmodelled_metrics
from benchmark.passes import PASS_COLUMNS
from benchmark.runner.folder import safe_name

__all__ = ["backbone_passes", "passes_text", "read_backbone_passes"]


def backbone_passes(frame: pd.DataFrame) -> Dict[str, Dict[str, float]]:
    """Backbone -> passes per image: ``actual``, ``minimum``, ``ratio``, by phase (``batch``: its forward and the
    curves' shared endpoints, ``explainer``, ``topk``, ``metric``), ``backward``, and ``unmodelled``: the metrics
    with values whose passes count as their own minimum. Backbones whose rows predate the accounting are left out.

    Examples:
        >>> rows = pd.DataFrame({"backbone": ["b"] * 4, "method": ["x", "x", "y", "y"],
        ...                      "passes_explainer": [2.0, 2.0, 1.0, 1.0], "passes_topk": [2.0, 0.0, 0.0, 0.0],
        ...                      "passes_metric": [3.0, 3.0, 3.0, 3.0], "passes_backward": [2.0, 1.0, 0.0, 0.0],
        ...                      "passes_minimum": [5.0, 5.0, 4.0, 4.0], "passes_batch": [1.0] * 4})
        >>> summary = backbone_passes(rows)["b"]
        >>> summary["actual"], summary["minimum"], summary["ratio"], summary["topk"], summary["unmodelled"]
        (11.0, 10.0, 1.1, 1.0, [])
    """
    if frame.empty or any(c not in frame.columns for c in PASS_COLUMNS):
        return {}  # rows written before the accounting (or before its last column)
    out: Dict[str, Dict[str, float]] = {}
    numbers = frame[list(PASS_COLUMNS)].apply(pd.to_numeric, errors="coerce")  # None in rows of older runs
    for backbone, rows in numbers.groupby(frame["backbone"], sort=False):
        means = rows.groupby(frame.loc[rows.index, "method"], sort=False).mean()
        if means.isna().any().any():  # rows written before the accounting
            continue
        phases = {"batch": float(means["passes_batch"].iloc[0]), "explainer": float(means["passes_explainer"].sum()),
                  "topk": float(means["passes_topk"].sum()), "metric": float(means["passes_metric"].sum())}
        actual = sum(phases.values())
        minimum = 1.0 + float(means["passes_minimum"].sum())
        out[str(backbone)] = {"actual": round(actual, 3), "minimum": round(minimum, 3),
                              "ratio": round(actual / minimum, 3), **{k: round(v, 3) for k, v in phases.items()},
                              "backward": round(float(means["passes_backward"].sum()), 3),
                              "unmodelled": unmodelled_metrics(c for c in frame.columns
                                                               if frame.loc[rows.index, c].notna().any())}
    return out


def passes_text(summary: Mapping[str, Mapping[str, float]]) -> str:
    """The leaderboard header's cell; a minimum that counts unmodelled metrics' passes as needed is marked.

    Examples:
        >>> summary = {"actual": 11.0, "minimum": 10.0, "ratio": 1.1, "batch": 1.0, "explainer": 3.0, "topk": 1.0,
        ...            "metric": 6.0, "backward": 1.5}
        >>> passes_text({"b": summary})
        'b: 11.0 actual, 10.0 minimum (1.10×; batch 1.0, explainers 3.0, top-k 1.0, metrics 6.0; backward 1.5)'
        >>> passes_text({"b": {**summary, "unmodelled": ["road_morf"]}})[-99:]
        'backward 1.5; the minimum takes the passes of road_morf as measured: it does not model that metric)'
    """
    if not summary:
        return "not recorded"

    def unmodelled(s: Mapping) -> str:
        names = s.get("unmodelled") or []
        return (f"; the minimum takes the passes of {', '.join(names)} as measured: it does not model "
                f"{'that metric' if len(names) == 1 else 'those metrics'}" if names else "")

    return "; ".join(f"{b}: {s['actual']:.1f} actual, {s['minimum']:.1f} minimum ({s['ratio']:.2f}×; batch "
                     f"{s['batch']:.1f}, explainers {s['explainer']:.1f}, top-k {s['topk']:.1f}, metrics "
                     f"{s['metric']:.1f}; backward {s['backward']:.1f}{unmodelled(s)})" for b, s in summary.items())


def read_backbone_passes(out: Union[str, os.PathLike], backbone: str) -> Dict[str, float]:
    """:func:`backbone_passes` of one backbone of a run directory, from its per-sample files (``{}`` if none)."""
    files = sorted((Path(out) / "per_sample" / safe_name(backbone)).glob("[!_]*/*.parquet"))
    if not files:
        return {}
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return backbone_passes(frame).get(backbone, {})
