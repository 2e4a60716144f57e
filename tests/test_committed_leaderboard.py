"""The committed offline leaderboard (``leaderboards/synthetic``) is what this code computes: the first batch of the
default run (three backbones, every default method, every default metric), recomputed and compared with the
committed per-sample rows.

Rounding-level differences (another CPU's kernels) can reorder near-tied map pixels and move one image's deletion
step or flip one image's box at one threshold, so the comparison is of the 32 images' means: continuous values to
1e-3 relative, and the 0/1 entries (MaxBoxAcc per threshold, localization, pointing) to within one image. A changed
formula or convention moves them further: then regenerate the folder with
``cam-bench run --out leaderboards/synthetic --overwrite true`` and say why in the commit.
"""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.explainers import default_explainers
from benchmark.report.results import read_per_sample

COMMITTED = Path(__file__).parents[1] / "leaderboards" / "synthetic"
METHODS = default_explainers()
IMAGES = 32  # the default run's batch size: the first shard of each (backbone, method)
BINARY = ("max_box_acc", "localization_error", "pointing_game", "pointing_game_recall")
SKIPPED = ("seconds",)  # wall time


@pytest.fixture(scope="module")
def recomputed(tmp_path_factory):
    out = tmp_path_factory.mktemp("first_batch")
    assert main(["run", "--limit", str(IMAGES), "--bootstrap", "10",
                 "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--out", str(out)]) == 0
    return read_per_sample(out)


def _committed():
    frame = read_per_sample(COMMITTED)
    return frame[frame["method"].isin(METHODS) & (frame["index"] < IMAGES)].reset_index(drop=True)


def _means(values: pd.Series) -> np.ndarray:
    return np.nanmean(np.stack([np.atleast_1d(np.asarray(v, dtype=float)) for v in values]), axis=0)


def test_the_first_batch_of_the_committed_run_is_recomputed(recomputed):
    committed = _committed()
    keys = ["dataset", "backbone", "method", "index"]
    assert len(recomputed) == len(committed) == 3 * len(METHODS) * IMAGES
    assert recomputed[keys].equals(committed[keys])
    for column in ("target", "prediction", "map_status", "target_layer", "layout"):
        assert recomputed[column].tolist() == committed[column].tolist(), column
    checked = 0
    for (backbone, method), ours in recomputed.groupby(["backbone", "method"]):
        theirs = committed[(committed["backbone"] == backbone) & (committed["method"] == method)]
        for column in committed.columns:
            if column in keys or column in SKIPPED or isinstance(committed[column].iloc[0], str):
                continue
            got, want = _means(ours[column]), _means(theirs[column])
            where = f"{backbone} {method} {column}: recomputed {got} vs committed {want}"
            if column in BINARY:
                np.testing.assert_allclose(got, want, rtol=0, atol=1 / IMAGES + 1e-9, err_msg=where)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-9, err_msg=where)
            checked += 1
    assert checked >= 3 * len(METHODS) * 15  # every metric column and the probabilities and pass counts
