"""The sanity-check section of a leaderboard: the model-parameter randomization test (Adebayo et al., "Sanity Checks
for Saliency Maps", NeurIPS 2018) per backbone.

When a run computed :class:`~benchmark.metrics.mprt.MPRT`, ``results.csv`` holds per method ``mprt_spearman_k``
and ``mprt_ssim_k`` for each layer group ``k = 1`` (the top: the logits layer) ... ``L``. :func:`sanity_section`
turns them into a table (method x layer, mean Spearman) and a figure of the per-layer curves (Spearman and SSIM;
Adebayo et al., Fig. 4), drawn like :mod:`benchmark.report.figures` (Agg canvas, no metadata: the same results
give the same bytes). A run without MPRT gets no section and no file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmark.report.figures import DPI, _save, line_style
from benchmark.runner.folder import safe_name

__all__ = ["layer_table", "sanity_figure", "sanity_section"]

_LAYER = re.compile(r"^mprt_(spearman|ssim)_(\d+)$")


def layer_table(results: pd.DataFrame, measure: str = "spearman") -> pd.DataFrame:
    """Method x layer (1 = top) table of ``mprt_<measure>_<k>`` values from ``results.csv`` rows of one backbone.

    Examples:
        >>> rows = pd.DataFrame({"method": ["gradcam"] * 3, "metric": ["mprt", "mprt_spearman_2", "mprt_spearman_1"],
        ...                      "value": [0.3, 0.1, 0.5]})
        >>> layer_table(rows).to_dict("index")
        {'gradcam': {1: 0.5, 2: 0.1}}
    """
    parts = results["metric"].astype(str).str.extract(_LAYER)
    rows = results[(parts[0] == measure).to_numpy()]
    layers = parts.loc[rows.index, 1].astype(int)
    table = pd.DataFrame({"method": rows["method"].to_numpy(), "layer": layers.to_numpy(),
                          "value": rows["value"].astype(float).to_numpy()})
    methods = list(dict.fromkeys(table["method"]))
    return table.pivot(index="method", columns="layer", values="value").reindex(methods).sort_index(axis=1)


def sanity_figure(spearman: pd.DataFrame, ssim: pd.DataFrame, path: Path, title: Optional[str] = None) -> Path:
    """A PNG of each method's mean Spearman and SSIM against the randomized layer (top first)."""
    fig = Figure(figsize=(9.0, 3.5 + (0.25 if title is not None else 0.0)), dpi=DPI)
    axes = fig.subplots(1, 2)
    for ax, (name, table) in zip(axes, (("Spearman rank correlation", spearman), ("SSIM", ssim))):
        for i, (method, row) in enumerate(table.iterrows()):
            ax.plot(row.index.to_numpy(), row.to_numpy(dtype=float), marker="o", markersize=3, label=str(method),
                    **line_style(i))
        low = np.nanmin(table.to_numpy(dtype=float), initial=0.0) if table.size else 0.0
        ax.set_ylim(-1.05 if name.startswith("Spearman") else min(-0.05, low - 0.05), 1.05)  # SSIM may be < 0
        ax.set_xticks(list(table.columns))
        ax.set_title(name)
        ax.set_xlabel("layer group randomized (1 = top)")
        ax.set_ylabel(f"mean {name.split()[0]} to the original map")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _cell(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "–"


def sanity_section(backbone: str, results: pd.DataFrame, out: Path) -> List[str]:
    """The markdown lines of one backbone's MPRT sanity check (and its figure under ``out``'s ``figures/``);
    ``[]`` when ``results`` (``results.csv`` rows of the backbone) hold no per-layer MPRT value.

    Examples:
        >>> import tempfile
        >>> rows = pd.DataFrame({"method": ["a"], "metric": ["average_drop"], "value": [1.0]})
        >>> sanity_section("res", rows, Path(tempfile.mkdtemp()) / "leaderboard.md")
        []
    """
    spearman = layer_table(results, "spearman")
    if spearman.empty:
        return []
    layers = list(spearman.columns)
    lines = ["Sanity check, model-parameter randomization (Adebayo et al., NeurIPS 2018): mean Spearman rank "
             "correlation between each method's map and its map when layer group k (1 = the top, the logits) is "
             "re-initialised -- with every group above it in the cascading test, alone in the independent one "
             "(`randomization=independent` in the metric settings). Near 1: the map does not depend on the "
             "parameters (the check fails, as for a model-independent baseline); lower: it does.", "",
             "| Method | " + " | ".join(str(k) for k in layers) + " |", "|:--|" + "--:|" * len(layers)]
    lines += [f"| {method} | " + " | ".join(_cell(float(v)) for v in row) + " |" for method, row in spearman.iterrows()]
    path = sanity_figure(spearman, layer_table(results, "ssim").reindex(spearman.index),
                         out.parent / "figures" / f"{safe_name(backbone)}_mprt.png", title=backbone)
    return lines + ["", f"![Model-parameter randomization, {backbone}](figures/{path.name})", ""]
