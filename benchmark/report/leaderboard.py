"""Render (or merge) run directories into ``results.csv``, ``leaderboard.md`` and figures.

Everything is computed from the per-sample files and ``run.json`` of the runs -- nothing from
the machine that renders -- so re-rendering a committed leaderboard reproduces it byte for byte,
and a run on 1 or N processes renders the same bytes (only the ``Date`` line differs).

``leaderboard.md`` holds a header (dataset, split, N, preprocessing, metric and explainer
settings, versions, git commit, date, the reproducing command), then per (dataset, backbone) a
table shaped like Poppi et al. (CVPRW 2021) Table 2 -- methods x Avg Drop ↓, Avg Inc ↑, Deletion ↓,
Insertion ↑, Coherency ↑, Complexity ↓, ADCC ↑, plus localization and pointing game when the data
have boxes -- each cell ``mean ± half-width of the 95 % bootstrap interval`` with the best in
bold, the figures (saliency grid, mean deletion/insertion curves), and the pairwise Win% matrix of
the Grad-CAM++ paper (Chattopadhyay et al., WACV 2018: share of images where the row method's
Average Drop is lower than the column method's) with a sign test; finally the mean rank of each
method across backbones.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from benchmark.report.figures import mean_curves, saliency_grid
from benchmark.report.latex import latex_document, table_caption
from benchmark.report.passes_report import backbone_passes, passes_text
from benchmark.report.rank_sections import rank_section, win_section
from benchmark.report.reliability_report import reliability_section
from benchmark.report.results import RunsDiffer, data_report, read_per_sample, reduce_per_sample, write_results_csv
from benchmark.report.sanity import sanity_section
from benchmark.report.stats import degenerate_maps, on_most, rankable, unranked_methods
from benchmark.runner.folder import fingerprint_diff, incomplete, recorded_preprocessing, run_gaps, safe_name

__all__ = ["COLUMNS", "IncompleteRuns", "RunsDiffer", "incomplete", "load_runs", "render_runs", "run_gaps"]

log = logging.getLogger("cam_bench.leaderboard")

#: (results.csv metric, column title, higher is better, decimals): the table's columns, in order.
COLUMNS: Tuple[Tuple[str, str, bool, int], ...] = (
    ("average_drop", "Avg Drop ↓", False, 2), ("average_increase", "Avg Inc ↑", True, 2),
    ("deletion", "Deletion ↓", False, 3), ("insertion", "Insertion ↑", True, 3),
    ("road_morf", "ROAD MoRF ↓", False, 3), ("road_lerf", "ROAD LeRF ↑", True, 3),
    ("infidelity_square", "Infidelity (square) ↓", False, 4),
    ("infidelity_gaussian", "Infidelity (Gaussian) ↓", False, 4),
    ("coherency", "Coherency ↑", True, 2), ("complexity", "Complexity ↓", False, 2), ("adcc", "ADCC ↑", True, 2),
    ("localization_error_top1", "Loc. err top-1 ↓", False, 2),
    ("localization_error_top5", "Loc. err top-5 ↓", False, 2), ("max_box_acc", "MaxBoxAcc ↑", True, 2),
    ("max_box_acc_v2", "MaxBoxAccV2 ↑", True, 2), ("pxap", "PxAP ↑", True, 2),
    ("pointing_game_accuracy", "Pointing ↑", True, 2),
    ("pointing_game_difficult_accuracy", "Pointing (difficult) ↑", True, 2),
    ("energy_pointing_game", "Energy PG ↑", True, 2), ("box_ratio", "Box ratio ↑", True, 2),
    ("fidelity_top1", "Fidelity top-1% ↑", True, 2), ("fidelity_top10", "Fidelity top-10% ↑", True, 2),
    ("contrastivity_top1", "Contrastivity top-1% ↑", True, 2),
    ("contrastivity_top10", "Contrastivity top-10% ↑", True, 2),
    ("occlusion_correlation", "Occlusion ρ ↑", True, 3), ("fgsm_robustness", "FGSM r ↑", True, 3),
    ("max_sensitivity", "Max-sensitivity ↓", False, 3), ("mprt", "MPRT ρ ↓", False, 3),
    ("one_pixel_sensitivity_change_mean", "1-pixel map change ↑", True, 3),
)


def load_runs(run_dirs: Sequence[Union[str, os.PathLike]], force: bool = False) -> List[Dict[str, Any]]:
    """The ``run.json`` of each run; runs whose fingerprints differ are refused (naming the fields) unless
    ``force``. Each backbone held by several runs is compared with the first run that holds it (in any order of
    the runs): one model, so equal ``weights_sha256`` and preprocessing.

    Raises:
        FileNotFoundError: a directory without ``run.json`` (a refusal).
        RunsDiffer: differing fingerprints (dataset, subset, preprocessing, metric or explainer settings), or a
            backbone whose weights or preprocessing differ between two runs, without ``force``.
    """
    metas = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "run.json"
        if not path.is_file():
            err = FileNotFoundError(f"{str(path)!r} not found: expected a directory written by `cam-bench run`.")
            err.cam_bench_refusal = True  # type: ignore[attr-defined]
            raise err
        metas.append({**json.loads(path.read_text()), "dir": str(run_dir)})
    first = metas[0]
    owners: Dict[str, Dict[str, Any]] = {}  # backbone -> the first run holding it
    for meta in metas:
        diffs: Dict[str, List[str]] = {}  # the other run's directory -> the fields that differ
        if meta is not first:
            diffs[first["dir"]] = fingerprint_diff(first["fingerprint"], meta["fingerprint"])
        for name in sorted(meta["backbones"]):
            owner = owners.setdefault(name, meta)
            for field in ("preprocessing", "weights_sha256"):  # e.g. random init under another --seed
                if _recorded(owner["backbones"][name], field) != _recorded(meta["backbones"][name], field):
                    diffs.setdefault(owner["dir"], []).append(f"backbones.{name}.{field}")
        for other, diff in diffs.items():
            if diff and not force:
                raise RunsDiffer(f"Runs {other!r} and {meta['dir']!r} differ in {', '.join(diff)}; their results are "
                                 "not comparable. Re-run with the same settings, or pass --force to merge anyway.")
            if diff:
                log.warning("merging %s and %s despite differing %s (--force)", other, meta["dir"], diff)
                first.setdefault("forced", []).extend(diff)
    return metas


def render_runs(run_dirs: Sequence[Union[str, os.PathLike]], out: Union[str, os.PathLike],
                methods: Optional[Sequence[str]] = None, backbones: Optional[Sequence[str]] = None,
                force: bool = False, allow_partial: bool = True) -> Path:
    """Write ``out`` (the markdown), ``results.csv`` and ``figures/`` next to it; returns ``out``.

    Args:
        run_dirs: run directories (one run, or several to merge -- e.g. one SLURM array job per backbone).
        out: the markdown file.
        methods, backbones: keep only these (default: everything in the runs).
        force: merge runs whose fingerprints differ (the header lists the fields).
        allow_partial: with ``False``, raise :class:`IncompleteRuns` after writing when samples are missing
            (the files mark the run incomplete either way).

    Raises:
        IncompleteRuns: ``allow_partial=False`` and some backbone / method has fewer rows than the run's samples.
    """
    metas = load_runs(run_dirs, force)
    frame = read_per_sample(run_dirs)
    if methods is not None:
        frame = frame[frame["method"].isin(methods)]
    if backbones is not None:
        frame = frame[frame["backbone"].isin(backbones)]
    data_reports = {key: data_report(metas, *key, force)
                    for key in dict.fromkeys(zip(frame["dataset"], frame["backbone"]))}  # may refuse: before writing
    config = metas[0]["config"]
    replicates: Dict[Tuple[str, str, str, str], np.ndarray] = {}
    rows = reduce_per_sample(frame, metas[0]["fingerprint"]["metric_args"], config["bootstrap"], config["seed"],
                             replicates)
    out = Path(out)
    write_results_csv(rows, out.parent / "results.csv")
    results = pd.read_csv(out.parent / "results.csv")  # the written numbers, so the table shows exactly them
    gaps = run_gaps(metas, frame)
    lines = _header(metas, frame, gaps)
    meta_backbones = {k: v for meta in metas for k, v in meta["backbones"].items()}
    table, tex, tables = [], [], []
    for (dataset, backbone), group in results.groupby(["dataset", "backbone"], sort=False):
        sub = frame[(frame["dataset"] == dataset) & (frame["backbone"] == backbone)]
        ranked = rankable(group, sub, {c[0]: c[3] for c in COLUMNS})  # what bold and mean ranks use, as printed
        section, latex = _backbone_section(dataset, backbone, group, ranked, sub, meta_backbones.get(backbone, {}),
                                           metas, out, {m: rows for (b, m), rows in gaps.items() if b == backbone},
                                           data_reports[dataset, backbone])
        lines += section
        tex.append(latex)
        tables.append((dataset, backbone, group, ranked))
        table += [{"backbone": backbone, "method": m, **dict(zip(g["metric"], ranked.loc[g.index]))}
                  for m, g in group.groupby("method", sort=False)]
    lines += rank_section(pd.DataFrame(table), {c[0]: c[2] for c in COLUMNS})
    lines += [""] + reliability_section(tables, COLUMNS, replicates, config["bootstrap"])
    out.write_text("\n".join(lines).rstrip() + "\n")
    title = lines[0].removeprefix("# cam-bench leaderboard: ") + (" -- INCOMPLETE: a partial run" if gaps else "")
    out.with_suffix(".tex").write_text(latex_document(tex, title))
    if gaps and not allow_partial:
        raise IncompleteRuns(f"the runs are incomplete ({len(gaps)} backbone/method pairs short of samples, listed in "
                             "the header); rerun `cam-bench run` to finish them, or pass --allow_partial.")
    return out


class IncompleteRuns(ValueError):
    """A rendered run lacks samples (:func:`run_gaps`)."""


def _settings(mapping: Mapping[str, Any]) -> str:
    parts = [f"{name}: " + ", ".join(f"{k}={v}" for k, v in args.items()) for name, args in mapping.items() if args]
    return "; ".join(parts) or "defaults"


def _header(metas: List[Dict[str, Any]], frame: pd.DataFrame, missing: Mapping[Tuple[str, str], int]) -> List[str]:
    first, config = metas[0], metas[0]["config"]
    fp = first["fingerprint"]
    split = fp["data_args"].get("split", "default")
    provenance = [p for m in metas for p in (m.get("provenance") or [m])]  # an older run.json: its top level
    versions = sorted({", ".join(f"{k} {v}" for k, v in p["versions"].items()) for p in provenance})
    commits = sorted({p["git_commit"] for p in provenance})
    if len(metas) == 1:
        reproduce = "`cam-bench run --config config.yaml` (the config.yaml next to this file)"
    else:
        reproduce = ("one `cam-bench run --config <run>/config.yaml` per run, then `cam-bench leaderboard "
                     + " ".join(Path(m["dir"]).name for m in metas) + "`")
    lines = [f"# cam-bench leaderboard: {fp['data']} ({split})", "",
             f"Mean over images ± half the 95 % bootstrap interval ({config['bootstrap']} resamples, seed "
             f"{config['seed']}; exact bounds in results.csv). **Bold**: best at the precision shown (equal printed "
             "values tie). ↓ lower / ↑ higher is better.", "",
             "| | |", "|:--|:--|",
             f"| Dataset | {fp['data']}, split {split}, N = {_n(fp['subset'].get('n'), frame)} (ids sha256 "
             f"{str(fp['subset'].get('ids_sha256'))[:12]}) |",
             f"| Data arguments | {', '.join(f'{k}={v}' for k, v in fp['data_args'].items()) or 'defaults'} |",
             f"| Target | {fp['target']}; maps of the top-{fp['top_k']} classes for top-k metrics |",
             f"| Metric settings | {_settings(fp['metric_args'])} |",
             f"| Explainer settings | {_settings(fp['explainer_args'])} |",
             f"| Precision, batch size | {fp.get('precision', 'not recorded')}, "
             f"{fp.get('batch_size', 'not recorded')} |",
             f"| Completeness | {_completeness(missing, fp['subset'].get('n'))} |",
             f"| Passes per image | {passes_text(backbone_passes(frame))} (images through the network: forward, "
             "backward and partial; the minimum is the protocol's, benchmark.runtime.pass_model) |",
             f"| Versions | {' / '.join(versions)} |",
             f"| Git commit | {', '.join(commits)} |",
             f"| Reproduce | {reproduce} |"]
    if first.get("forced"):
        lines.append(f"| Merged with --force | differing: {', '.join(sorted(set(first['forced'])))} |")
    lines += [f"| Date | {max(p['date'] for p in provenance)} |", ""]
    return lines


def _n(n: Optional[int], frame: pd.DataFrame) -> str:
    """The run's sample count; for a stream without row counts, the rows counted (none is known up front)."""
    if n is not None:
        return str(n)
    rows = int(frame.groupby(["backbone", "method"]).size().max()) if len(frame) else 0
    return f"{rows} (counted: the stream has no row count)"


def _completeness(missing: Mapping[Tuple[str, str], int], n: Optional[int]) -> str:
    if not missing:
        return (f"complete: {n} of {n} samples for every backbone and method" if n is not None else
                "complete: every backbone's stream was read to the end")
    total = "?" if n is None else n
    pairs = "; ".join(f"{b} / {m}: {rows} of {total}" for (b, m), rows in missing.items())
    return f"**incomplete** (a partial run: rerun the same command to finish it): {pairs}"


def _cell(value: float, low: float, high: float, decimals: int, n_invalid: int = 0, n: int = 0) -> str:
    """``mean ± half-width`` (bold is added by :func:`_bolded`); ``– (k of n undefined)`` when undefined on most
    images, and ``(k undefined)`` after the value when on some (the mean is over the other images)."""
    if on_most(n_invalid, n):
        return f"– ({n_invalid} of {n} undefined)"
    if not np.isfinite(value):
        return "–"
    text = f"{value:.{decimals}f}"
    text += f" ± {(high - low) / 2:.{decimals}f}" if np.isfinite(low) and np.isfinite(high) else ""
    return text + (f" ({n_invalid} undefined)" if n_invalid else "")


def _recorded(entry: Mapping[str, Any], field: str) -> Any:
    """A backbone's recorded field; a preprocessing recorded before ``resize_mode`` existed resized the shorter side.

    Examples:
        >>> _recorded({"preprocessing": {"crop_size": 224}}, "preprocessing")
        {'crop_size': 224, 'resize_mode': 'shorter'}
    """
    value = entry.get(field)
    return recorded_preprocessing(value) if field == "preprocessing" and value else value


def _squash(prep: Mapping[str, Any]) -> str:
    """`` (squash)`` when the image is warped to a square before the crop (``resize_mode``), else nothing."""
    return " (squash)" if prep.get("resize_mode") == "squash" else ""


def _backbone_section(dataset: str, backbone: str, results: pd.DataFrame, ranked: pd.Series, frame: pd.DataFrame,
                      meta: Mapping[str, Any], metas: List[Dict[str, Any]], out: Path,
                      short: Mapping[str, int], data_line: str) -> Tuple[List[str], tuple]:
    """The markdown lines of one backbone, and its table for the LaTeX (cells, bold, caption, label)."""
    prep = meta.get("preprocessing") or {}
    lines = [f"## {dataset} / {backbone}", "",
             f"Preprocessing: resize {prep.get('resize_size')}{_squash(prep)} → crop {prep.get('crop_size')} "
             f"({prep.get('interpolation')}), mean {prep.get('mean')}, std {prep.get('std')}; weights: "
             f"{_weights(backbone, meta.get('weights'))}.",
             "", data_line, ""]
    maps_line = _maps_report(frame)
    if maps_line:
        lines[-1:-1] = ["", maps_line]
    if meta.get("layers"):
        lines[-1:-1] = ["", _layers_line(meta["layers"])]
    if short:
        n = metas[0]["fingerprint"]["subset"].get("n")
        lines[-1:-1] = ["", f"**Incomplete: {min(short.values())} of {'?' if n is None else n} samples** for "
                        f"{', '.join(short)}; these rows are not final."]
    defined = set(results.loc[results["value"].notna(), "metric"])  # e.g. no difficult items: no column
    columns = [c for c in COLUMNS if c[0] in defined]
    methods = list(dict.fromkeys(results["method"]))
    cells, bold = _table(results, ranked, columns, methods)
    lines += ["| Method | " + " | ".join(c[1] for c in columns) + " |",
              "|:--|" + "--:|" * len(columns)]
    lines += [f"| {m} | " + " | ".join(_bolded(cells.loc[m, c[1]], bold.loc[m, c[1]]) for c in columns) + " |"
              for m in methods]
    lines.append("")
    lines += _figures(backbone, frame, metas, out)
    lines += sanity_section(backbone, results, out)
    lines += win_section(frame)
    caption = table_caption(f"{dataset} / {backbone}", frame.groupby("method", sort=False).size().to_dict(),
                            metas[0]["fingerprint"]["subset"].get("n"), bool(short))
    return lines, (cells, bold, caption, f"tab:{safe_name(dataset)}-{safe_name(backbone)}")


def _table(results: pd.DataFrame, ranked: pd.Series, columns: Sequence[Tuple[str, str, bool, int]],
           methods: Sequence[str]) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """The cells of one backbone's table (text without bold) and where the best are (one computation for the
    markdown and the LaTeX)."""
    titles = [c[1] for c in columns]
    cells = pd.DataFrame("–", index=list(methods), columns=titles)
    bold = pd.DataFrame(False, index=list(methods), columns=titles)
    for metric, title, higher, decimals in columns:
        rows = results[results["metric"] == metric].set_index("method")
        values = ranked[results["metric"] == metric].dropna()
        best = (values.max() if higher else values.min()) if values.nunique() > 1 else None  # a tie ranks nothing
        winners = set() if best is None else set(results.loc[values.index[values == best], "method"])
        for method in methods:
            if method in rows.index:
                r = rows.loc[method]
                cells.loc[method, title] = _cell(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]),
                                                 decimals, int(r["n_invalid"]), int(r["n"]))
                bold.loc[method, title] = method in winners
    return cells, bold


def _bolded(text: str, best: bool) -> str:
    """Bold the value of a markdown cell (``**84.45** ± 1.01``).

    Examples:
        >>> _bolded("84.45 ± 1.01", True), _bolded("84.45 ± 1.01", False), _bolded("1.00", True)
        ('**84.45** ± 1.01', '84.45 ± 1.01', '**1.00**')
    """
    if not best:
        return text
    value, sep, rest = text.partition(" ")
    return f"**{value}**{sep}{rest}"


def _layers_line(layers: Mapping[str, Mapping[str, str]]) -> str:
    """``Target layers: `blocks.11.norm1` (tokens:1): gradcam, scorecam; none (input): fakecam``.

    Examples:
        >>> _layers_line({"gradcam": {"target_layer": "norm", "layout": "nhwc"},
        ...               "fakecam": {"target_layer": "input", "layout": "-"}})
        'Target layers: `norm` (nhwc): gradcam; none (the input): fakecam.'
    """
    groups: Dict[str, List[str]] = {}
    for method, layer in layers.items():
        key = f"`{layer['target_layer']}`" + ("" if layer["layout"] == "-" else f" ({layer['layout']})")
        key = "none (the input)" if layer["target_layer"] == "input" else key
        groups.setdefault(key, []).append(method)
    return "Target layers: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()) + "."


def _weights(backbone: str, weights: Optional[str]) -> str:
    if weights is None:
        return "the shipped checkpoint" if backbone.startswith("synthetic/") else "random init"
    return {"default": "pretrained (the library's default weights)", "random": "random init"}.get(weights, weights)


def _maps_report(frame: pd.DataFrame) -> str:
    """``Maps: constant (all zero after normalisation): a 3 of 4; ...`` and the methods not ranked."""
    counts = degenerate_maps(frame)
    parts = []
    for status, text in (("constant", "constant (all zero after normalisation)"),
                         ("not_finite", "not finite (every metric undefined)")):
        found = [f"{m} {c[status]} of {c['n']}" for m, c in counts.items() if status in c]
        if found:
            parts.append(f"{text}: {', '.join(found)}")
    unranked = unranked_methods(frame)
    line = f"Maps: {'; '.join(parts)}." if parts else ""
    if unranked:
        line += (f" **Not ranked** (constant or not finite on most images): {', '.join(unranked)}; their cells are "
                 "shown but never bold, and they get no mean rank.")
    return line


def _figures(backbone: str, frame: pd.DataFrame, metas: List[Dict[str, Any]], out: Path) -> List[str]:
    folder = out.parent / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    methods = list(dict.fromkeys(frame["method"]))
    for meta in metas:
        maps_dir = Path(meta["dir"]) / "maps" / safe_name(backbone)
        indices = sorted(int(p.stem) for p in (maps_dir / "images").glob("*.npy") if p.stem.isdigit())  # not masks
        if indices and all((maps_dir / safe_name(m)).is_dir() for m in methods):
            path = saliency_grid(maps_dir, methods, indices, folder / f"{safe_name(backbone)}_saliency.png",
                                 title=backbone)
            lines += [f"![Saliency maps, {backbone}](figures/{path.name})", ""]
            break
    path = mean_curves(frame, folder / f"{safe_name(backbone)}_curves.png", title=backbone)
    if path is not None:
        lines += [f"![Mean deletion and insertion curves, {backbone}](figures/{path.name})", ""]
    return lines
