"""How fast the light commands answer: ``cam-bench list`` and ``cam-bench run --help`` against the interpreter's
own start-up and an ``import torch`` (what a listing cost while every registry was imported up front).

Each command runs as a fresh process, alternated over ``--rounds`` rounds (A B C D, A B C D, ...); the table
gives the median wall time with min–max and the peak RSS (``resource.getrusage`` of the child). Writes
``leaderboards/speed_cli.md``::

    python -m perf.cli_startup --rounds 7
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

COMMANDS = {
    "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
    "cam-bench list": [sys.executable, "-m", "benchmark.cli", "list"],
    "cam-bench run --help": [sys.executable, "-m", "benchmark.cli", "run", "--help"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
}


def _once(argv: List[str], cwd: Optional[str]) -> float:
    """Wall seconds of one fresh process running ``argv`` in ``cwd``."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    return time.perf_counter() - start


def measure(rounds: int, before: Optional[str] = None) -> Dict[str, dict]:
    """Alternated rounds of every command (one untimed warm-up each, so disk caches are warm); ``before``: a
    checkout of an earlier commit whose ``list`` and ``run --help`` run in the same rounds."""
    commands = {name: (argv, None) for name, argv in COMMANDS.items()}
    if before:
        for name in ("cam-bench list", "cam-bench run --help"):
            commands[f"{name} (before: {Path(before).name})"] = (COMMANDS[name], before)
    times: Dict[str, List[float]] = {name: [] for name in commands}
    rss: Dict[str, float] = {}
    for name, (argv, cwd) in commands.items():  # warm-up; the peak RSS is read in a process of its own
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
        code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        rss[name] = int(subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                                       check=True, cwd=cwd).stdout) / 1024
    for _ in range(rounds):
        for name, (argv, cwd) in commands.items():
            times[name].append(_once(argv, cwd))
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "rss_mib": rss[name]}
            for name, t in times.items()}


def render(results: Dict[str, dict], rounds: int, before: Optional[str] = None) -> str:
    flags = f"--rounds {rounds}" + (f" --before {before}" if before else "")
    lines = ["# Command-line start-up", "",
             f"- command: `python -m perf.cli_startup {flags}` ({rounds} alternated rounds, fresh process each, "
             "one warm-up; wall seconds median [min–max]; peak RSS of the process)",
             f"- machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
             f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}",
             "- target (issue 16): `cam-bench list` and `cam-bench run --help` answer in < 3 s", "",
             "| command | seconds | peak RSS (MiB) |", "|:--|--:|--:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['median']:.2f} [{r['min']:.2f}–{r['max']:.2f}] | {r['rss_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="leaderboards/speed_cli.md")
    parser.add_argument("--before", default=None, help="a checkout of an earlier commit (git worktree add DIR REV) "
                        "to time side by side")
    args = parser.parse_args(argv)
    text = render(measure(args.rounds, args.before), args.rounds, args.before)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
