"""Where the default ``cam-bench run`` spends its time: data, forward, explainers, metrics, writing.

Run ``python -m perf.speed_run``: it runs the offline default (``cam-bench run``) in a
subprocess with Lightning's ``SimpleProfiler`` (``--trainer.profiler simple``; ``ExplainerModule``
opens one profiler section per explainer and per explainer's metrics) into a temporary directory,
and writes ``leaderboards/speed_run.md``: per backbone the time in each part of the predict loop, and
the largest sections.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from tabulate import tabulate

from perf.timing import run_header

PARTS = ("data", "forward", "explainers", "metrics", "writer")


def parse_simple_profiler(text: str) -> List[Dict[str, float]]:
    """Total seconds per action of each ``SimpleProfiler`` report in ``text`` (one per Trainer).

    Examples:
        >>> report = "|  Action  |  Mean duration (s)  |  Num calls  |  Total time (s)  |  Percentage %  |\\n"
        >>> report += "|  Total  |  -  |  3  |  2.0  |  100 %  |\\n"
        >>> report += "|  [cam-bench] forward  |  0.5  |  2  |  1.0  |  50  |\\n"
        >>> parse_simple_profiler(report)
        [{'Total': 2.0, '[cam-bench] forward': 1.0}]
    """
    reports = []
    for part in text.split("|  Action")[1:]:
        rows: Dict[str, float] = {}
        for line in part.splitlines()[1:]:
            match = re.match(r"\|\s+(.+?)\s+\|\s+[-\d.e]+\s*\|\s+\d+\s*\|\s+([\d.e-]+)\s*\|", line.replace("\t", ""))
            if match:
                rows[match.group(1)] = float(match.group(2))
            elif rows and line.strip() and not line.startswith("-"):
                break
        reports.append(rows)
    return reports


def breakdown(rows: Dict[str, float]) -> Dict[str, float]:
    """Seconds per part of the predict loop (see :data:`PARTS`) from one profiler report."""
    parts = dict.fromkeys(PARTS, 0.0)
    for action, seconds in rows.items():
        if action.startswith("[cam-bench] explainer/"):
            parts["explainers"] += seconds
        elif action.startswith("[cam-bench] metrics/"):
            parts["metrics"] += seconds
        elif action == "[cam-bench] forward":
            parts["forward"] += seconds
        elif action.startswith("[Callback]PerSampleWriter"):
            parts["writer"] += seconds
        elif action == "[_PredictionLoop].predict_next":
            parts["data"] += seconds
    return parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="leaderboards/speed_run.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", "--out", tmp, "--trainer.profiler",
                               "simple", "--trainer.enable_progress_bar", "false"], capture_output=True, text=True,
                              check=True)
        wall = time.perf_counter() - start
    backbones = re.findall(r"INFO cam_bench.run: (\S+): \d+ of \d+ shards", proc.stderr)
    reports = parse_simple_profiler(proc.stdout + proc.stderr)
    table, tops = [], []
    for backbone, rows in zip(backbones, reports):
        parts = breakdown(rows)
        total = rows["Total"]
        table.append([backbone, total] + [f"{parts[p]:.1f} ({100 * parts[p] / total:.1f} %)" for p in PARTS])
        top = sorted(((s, a) for a, s in rows.items() if a.startswith("[cam-bench]")), reverse=True)[:5]
        tops.append(f"- {backbone}: " + ", ".join(f"{a.replace('[cam-bench] ', '')} {s:.1f} s" for s, a in top))
    predict = sum(r["Total"] for r in reports)
    lines = ["# Where the default `cam-bench run` spends its time", "",
             *run_header("python -m perf.speed_run", wall), "",
             f"Wall time {wall:.0f} s; predict loops {predict:.0f} s; the remaining {wall - predict:.0f} s are "
             "start-up (imports), validation, model loading and rendering (1000 bootstrap resamples per result, "
             "figures).", "",
             tabulate(table, headers=["backbone", "predict s"] + [f"{p} s" for p in PARTS], tablefmt="pipe",
                      floatfmt=".1f"), "", "Largest sections:", "", *tops, "",
             "Reading: `metrics` includes the forward passes the metrics need (the explainer re-run on x * CAM for "
             "Coherency, whose forward also serves Average Drop/Increase; the top-k maps for localization, except "
             "where the explainer's call gives them; the perturbed forwards of deletion and insertion), so nearly "
             "all of the time is forward passes; data loading, the plain forward and writing the per-sample files "
             "are each below 1 %. The leaderboard header counts those passes beside the protocol's minimum."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
