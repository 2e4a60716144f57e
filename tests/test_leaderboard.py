"""The committed offline leaderboard: a full default run, re-rendered byte for byte from its per-sample files."""
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from benchmark.report.leaderboard import COLUMNS, render_runs
from benchmark.runner.config import RunConfig

COMMITTED = Path(__file__).parents[1] / "leaderboards" / "synthetic"


@pytest.fixture(scope="module")
def rerendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("rerender") / "leaderboard.md"
    return render_runs([COMMITTED], out)


def test_the_committed_run_is_the_full_default_run():
    meta = json.loads((COMMITTED / "run.json").read_text())
    config = {**asdict(RunConfig().resolved()), "out": None, "overwrite": False}
    assert {**meta["config"], "out": None, "overwrite": False} == config
    assert sorted(meta["backbones"]) == sorted(RunConfig().backbones)


def test_rerendering_reproduces_the_committed_markdown_and_results(rerendered):
    assert rerendered.read_text() == (COMMITTED / "leaderboard.md").read_text()
    assert (rerendered.parent / "results.csv").read_bytes() == (COMMITTED / "results.csv").read_bytes()
    for figure in (COMMITTED / "figures").glob("*.png"):
        assert (rerendered.parent / "figures" / figure.name).is_file()


def test_bold_cells_are_the_best_values_of_results_csv(rerendered):
    results = pd.read_csv(COMMITTED / "results.csv")
    text = rerendered.read_text()
    for backbone, group in results.groupby("backbone"):
        section = text.split(f"## synthetic / {backbone}\n")[1].split("\n## ")[0]
        rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "Avg Drop" not in line
                and not line.startswith("| |")]
        header = next(line for line in section.splitlines() if line.startswith("| Method |")).split(" | ")
        for metric, title, higher, _ in COLUMNS:
            if title not in header:
                continue
            col = header.index(title)
            ranked = group[(group["metric"] == metric) & (2 * group["n_invalid"] <= group["n"])]  # defined on most
            values = ranked.set_index("method")["value"]
            best = set(values[values == (values.max() if higher else values.min())].index) \
                if values.nunique() > 1 else set()  # a tie over every ranked method ranks nothing
            bold = {r[0].lstrip("| ") for r in rows if len(r) > col and r[col].startswith("**")}
            assert bold == best, (backbone, metric)
