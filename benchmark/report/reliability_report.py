"""The leaderboard's metric-reliability section: can each column's ranking of methods be trusted, and do the
columns agree? (Tomsett et al., AAAI 2020; the maths in :mod:`benchmark.report.reliability`.)"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import pandas as pd

from benchmark.report.reliability import metric_agreement, stability_from_replicates

__all__ = ["reliability_section"]

Column = Tuple[str, str, bool, int]  # (results.csv metric, title, higher is better, decimals)


def _tau(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "–"


def _stability_cell(stability) -> str:
    """``0.93 [0.81–1.00]``; ``–`` when undefined (fewer than two ranked methods, or all tied)."""
    if not np.isfinite(stability.mean):
        return "–"
    return f"{stability.mean:.2f} [{stability.low:.2f}–{stability.high:.2f}]"


def reliability_section(backbones: Sequence[Tuple[str, str, pd.DataFrame, pd.Series]], columns: Sequence[Column],
                        replicates: Mapping[Tuple[str, str, str, str], np.ndarray], n_boot: int) -> List[str]:
    """Markdown of (a) each column's ranking stability per backbone and (b) the agreement between columns.

    Args:
        backbones: ``(dataset, backbone, results rows, rankable values)`` per table of the leaderboard (the
            values as printed, NaN where not ranked: :func:`benchmark.report.stats.rankable`).
        columns: the leaderboard's columns.
        replicates: ``(dataset, backbone, method, metric) -> (B,)`` bootstrap replicates
            (:func:`benchmark.report.results.reduce_per_sample`).
        n_boot: number of resamples (for the text).
    """
    stability: Dict[str, Dict[str, str]] = {}
    agreements = []
    for dataset, backbone, results, ranked in backbones:
        values = results.assign(ranked=ranked)
        table = values.pivot(index="method", columns="metric", values="ranked")
        shown = [c for c in columns if c[0] in table.columns and table[c[0]].notna().any()]
        for metric, title, higher, decimals in shown:
            full = table[metric].dropna().to_dict()
            reps = {m: replicates.get((dataset, backbone, m, metric)) for m in full}
            if any(r is None for r in reps.values()):
                continue
            stability.setdefault(title, {})[backbone] = _stability_cell(
                stability_from_replicates(full, reps, higher, decimals))
        agreement = metric_agreement(table[[c[0] for c in shown]], {c[0]: c[2] for c in shown})
        agreements.append(agreement.rename(index={c[0]: c[1] for c in shown}, columns={c[0]: c[1] for c in shown}))
    if not stability:
        return []
    names = [b for _, b, _, _ in backbones]
    lines = ["## Metric reliability", "",
             f"Ranking stability: Kendall τ-b between the ranking of the methods on each of the {n_boot} bootstrap "
             "resamples of the images (the resamples of the intervals) and on all images, mean [2.5–97.5 %]; "
             "values compared as printed, unranked cells left out. Near 1: the column's order is not sampling "
             "noise; near 0: the column cannot tell these methods apart on this data (Tomsett et al., AAAI 2020).",
             "", "| Column | " + " | ".join(names) + " |", "|:--|" + "--:|" * len(names)]
    for title, cells in stability.items():
        lines.append(f"| {title} | " + " | ".join(cells.get(b, "–") for b in names) + " |")
    mean = pd.concat(agreements).groupby(level=0, sort=False).mean()  # NaN left out per cell
    titles = [t for t in stability if t in mean.index]
    lines += ["", "Agreement between columns: Kendall τ-b between the rankings of the methods by two columns "
              "(each oriented so that higher is better), mean over the backbones where both columns rank "
              "methods. +1: the columns order the methods alike; −1: they reverse each other; – on the diagonal "
              "and where no backbone ranks both.", "",
              "| | " + " | ".join(titles) + " |", "|:--|" + "--:|" * len(titles)]
    for row in titles:
        lines.append(f"| {row} | " + " | ".join("–" if row == col else _tau(mean.loc[row, col]) for col in titles)
                     + " |")
    return lines + [""]
