"""The leaderboard's ranking sections: the pairwise win matrix and the mean rank across backbones."""
from __future__ import annotations

from typing import List, Mapping

import numpy as np
import pandas as pd

from benchmark.report.stats import mean_ranks, win_matrix

__all__ = ["rank_section", "win_section"]


def win_section(frame: pd.DataFrame) -> List[str]:
    """The pairwise win matrix on Average Drop, with Holm-corrected sign tests (none with fewer than 2 methods)."""
    if "average_drop" not in frame.columns or frame["method"].nunique() < 2:
        return []
    pivot = frame.pivot(index="index", columns="method", values="average_drop")
    methods = list(dict.fromkeys(frame["method"]))
    win, p = win_matrix({m: pivot[m].to_numpy(dtype=float) for m in methods}, lower_is_better=True)
    lines = ["Win % (Average Drop): share of images where the row method's drop is lower than the column "
             "method's (ties count half; values compared exactly, so float32 rounding can split methods with equal "
             "maps by a few images); * p < 0.05, two-sided sign test, Holm-corrected.", "",
             "| | " + " | ".join(methods) + " |", "|:--|" + "--:|" * len(methods)]
    for a in methods:
        cells = ["–" if a == b or not np.isfinite(win.loc[a, b]) else
                 f"{win.loc[a, b]:.1f}" + ("*" if p.loc[a, b] < 0.05 else "") for b in methods]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines + [""]


def _rank(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "–"


def rank_section(table: pd.DataFrame, directions: Mapping[str, bool]) -> List[str]:
    """The mean rank of each method across backbones and the table's columns (``directions``: column -> lower is
    better)."""
    directions = {c: d for c, d in directions.items() if c in table.columns}
    if table.empty or not directions:
        return []
    ranks = mean_ranks(table, directions)
    backbones = [c for c in ranks.columns if c != "mean rank"]
    lines = ["## Mean rank across backbones", "",
             "Rank of each method per backbone and table column (1 = best; values equal at the precision shown "
             "tie and share the average rank), averaged over the columns and then over the backbones; a cell "
             "undefined on most images, and a method whose maps are constant or not finite on most images, are not "
             "ranked; a method not ranked on a column gets no rank on that backbone, and one without a rank on "
             "every backbone gets no mean rank (–).", "",
             "| Method | mean rank | " + " | ".join(backbones) + " |", "|:--|--:|" + "--:|" * len(backbones)]
    for method, row in ranks.iterrows():
        lines.append(f"| {method} | " + " | ".join(_rank(row[c]) for c in ["mean rank", *backbones]) + " |")
    return lines
