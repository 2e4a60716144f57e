"""Tests of :mod:`benchmark.report.stats`: bootstrap intervals, win matrices and mean ranks against hand
computations."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest

import benchmark.report.stats as stats
from benchmark.metrics import Complexity, create_metric
from benchmark.report.stats import bootstrap_ci, mean_ranks, win_matrix


def _slow(metric):
    """``metric.results_from`` behind a lambda: never the vectorised path."""
    return lambda values: metric.results_from(values)


def _reference_ci(values: np.ndarray, statistic, n_boot: int, seed: int, level: float):
    """The documented contract, written independently: one draw of all resamples, percentiles of the replicates."""
    idx = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    replicates = np.array([statistic(values[row]) for row in idx])
    return tuple(np.percentile(replicates, [50 * (1 - level), 50 * (1 + level)]))


# ---------------------------------------------------------------- bootstrap_ci


@pytest.mark.parametrize("vectorised", [True, False])
def test_bootstrap_constant_values(vectorised):
    metric = create_metric("complexity")
    fn = metric.results_from if vectorised else _slow(metric)
    assert bootstrap_ci(fn, torch.full((17,), 42.5, dtype=torch.float64), n_boot=50) == {"": (42.5, 42.5)}


@pytest.mark.parametrize("vectorised", [True, False])
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_bootstrap_mean_matches_independent_computation(vectorised, level):
    n = 2001  # odd, and n * n_boot > 2**20: the resamples are drawn in several chunks
    x = np.random.default_rng(7).normal(3.0, 2.0, size=n)
    metric = create_metric("complexity")
    fn = metric.results_from if vectorised else _slow(metric)
    n_boot = 1000 if vectorised else 600
    ci = bootstrap_ci(fn, torch.from_numpy(x), n_boot=n_boot, seed=3, level=level)
    assert list(ci) == [""]
    np.testing.assert_allclose(ci[""], _reference_ci(x, np.mean, n_boot, 3, level), rtol=1e-12, atol=0)


@pytest.mark.parametrize("nan_policy", ["omit", "zero", "propagate"])
@pytest.mark.parametrize("n", [3, 40])
def test_bootstrap_vectorised_equals_per_replicate(nan_policy, n):
    x = np.random.default_rng(n).uniform(0, 100, size=n)
    x[[0, 2]] = np.nan  # n = 3: about 30% of the resamples are all NaN
    metric = create_metric("complexity", nan_policy=nan_policy)
    fast = bootstrap_ci(metric.results_from, torch.from_numpy(x), n_boot=300, seed=1)
    slow = bootstrap_ci(_slow(metric), torch.from_numpy(x), n_boot=300, seed=1)
    assert list(fast) == list(slow) == [""]
    np.testing.assert_allclose(fast[""], slow[""], rtol=1e-12, atol=1e-12)


def test_bootstrap_vectorised_path_is_taken_only_for_the_default_mean(monkeypatch):
    calls = []
    policy_means = stats._policy_means
    monkeypatch.setattr(stats, "_policy_means", lambda *args: calls.append(1) or policy_means(*args))
    x = torch.arange(10, dtype=torch.float64)
    bootstrap_ci(create_metric("complexity").results_from, x, n_boot=20)
    assert calls == [1]
    bootstrap_ci(_slow(create_metric("complexity")), x, n_boot=20)
    bootstrap_ci(create_metric("deletion").results_from, x, n_boot=20)  # its own reduce
    bootstrap_ci(create_metric("adcc").results_from, torch.rand(10, 3, dtype=torch.float64), n_boot=20)
    assert calls == [1]


def test_bootstrap_overridden_reduce_is_used():
    class MedianComplexity(Complexity):
        def reduce(self, values):
            return values.median()

    x = np.random.default_rng(0).uniform(size=31)
    ci = bootstrap_ci(MedianComplexity().results_from, torch.from_numpy(x), n_boot=200, seed=5)
    np.testing.assert_allclose(ci[""], _reference_ci(x, np.median, 200, 5, 0.95), rtol=1e-12)


def test_bootstrap_all_nan_gives_nan():
    ci = bootstrap_ci(create_metric("complexity").results_from, torch.full((4,), math.nan, dtype=torch.float64))
    assert list(ci) == [""] and all(math.isnan(v) for v in ci[""])


def test_bootstrap_dict_valued_metric_returns_all_keys():
    gen = torch.Generator().manual_seed(0)
    n = 96
    values = torch.stack([torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 20, (n,), generator=gen),
                          torch.randint(0, 2, (n,), generator=gen)], dim=1).double()  # hit, class, difficult
    metric = create_metric("pointing_game")
    ci = bootstrap_ci(metric.results_from, values, n_boot=100)
    assert list(ci) == ["accuracy", "overall", "difficult_accuracy"]
    point = metric.results_from(values)
    for key, (low, high) in ci.items():
        assert 0 <= low <= float(point[key]) <= high <= 100


def test_bootstrap_adcc_keys():
    values = torch.rand(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 100
    ci = bootstrap_ci(create_metric("adcc").results_from, values, n_boot=50)
    assert list(ci) == ["", "per_image", "average_drop", "coherency", "complexity"]
    assert all(low <= high for low, high in ci.values())


def test_bootstrap_seed():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=50))
    fn = create_metric("complexity").results_from
    assert bootstrap_ci(fn, x, n_boot=200, seed=4) == bootstrap_ci(fn, x, n_boot=200, seed=4)
    assert bootstrap_ci(fn, x, n_boot=200, seed=4) != bootstrap_ci(fn, x, n_boot=200, seed=5)


def test_bootstrap_coverage_of_the_mean():
    rng = np.random.default_rng(2024)
    fn = create_metric("complexity").results_from
    covered = 0
    for seed in range(200):
        low, high = bootstrap_ci(fn, torch.from_numpy(rng.normal(10.0, 3.0, size=200)), seed=seed)[""]
        covered += low <= 10.0 <= high
    assert 180 <= covered <= 198


def test_bootstrap_empty_and_errors():
    fn = create_metric("complexity").results_from
    assert bootstrap_ci(fn, torch.zeros(0, dtype=torch.float64)) == {}
    with pytest.raises(TypeError, match="Expected `results_fn` to be callable"):
        bootstrap_ci(None, torch.zeros(3))
    with pytest.raises(TypeError, match="Expected `values` to be a torch.Tensor"):
        bootstrap_ci(fn, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"Expected `values` to have shape \(N,\) or \(N, K\)"):
        bootstrap_ci(fn, torch.zeros(2, 2, 2))
    for n_boot in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="Expected `n_boot` to be a positive integer"):
            bootstrap_ci(fn, torch.zeros(3), n_boot=n_boot)
    for level in (0, 1, 1.5, "0.9"):
        with pytest.raises(ValueError, match=r"Expected `level` to be a number in \(0, 1\)"):
            bootstrap_ci(fn, torch.zeros(3), level=level)


# ---------------------------------------------------------------- win_matrix


def _three_methods():
    """12 images, lower is better. a vs b: 10 wins, 0 losses, 2 ties; a vs c: 9, 1, 2; b vs c: 6, 2, 4."""
    a = np.array([5, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)
    b = np.array([5, 5, 2, 3, 2, 2, 2, 2, 2, 2, 2, 2], dtype=float)
    c = np.array([5, 5, 0, 2, 2, 2, 3, 3, 3, 3, 3, 3], dtype=float)
    return {"a": a, "b": b, "c": c}


def test_win_matrix_hand_computed():
    win, p = win_matrix(_three_methods())
    nan = np.nan
    expected_win = [[nan, 100 * 11 / 12, 100 * 10 / 12],
                    [100 * 1 / 12, nan, 100 * 8 / 12],
                    [100 * 2 / 12, 100 * 4 / 12, nan]]
    assert list(win.index) == list(win.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(win.to_numpy(), expected_win, rtol=1e-15)
    # sign tests: 10/0 -> 2 * 2**-10; 9/1 -> 2 * 11 / 2**10; 6/2 -> 2 * (1 + 8 + 28) / 2**8
    raw = {"ab": 2 * 0.5 ** 10, "ac": 2 * 11 / 2 ** 10, "bc": 2 * 37 / 2 ** 8}
    # Holm: sorted p_(i) * (3 - i), cumulative max, clipped at 1 -- here already increasing
    holm = {"ab": 3 * raw["ab"], "ac": 2 * raw["ac"], "bc": 1 * raw["bc"]}
    expected_p = [[nan, holm["ab"], holm["ac"]],
                  [holm["ab"], nan, holm["bc"]],
                  [holm["ac"], holm["bc"], nan]]
    assert list(p.index) == list(p.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(p.to_numpy(), expected_p, rtol=1e-12)


def test_win_matrix_holm_cumulative_max_and_clipping():
    # a vs b: 3 wins 1 loss 1 tie (p = 10/16); a vs c: 1 win 2 losses (p = 1); b vs c: 2 wins 2 losses (p = 1)
    values = {"a": np.array([1, 2, 3, 4, 5.0]), "b": np.array([2, 2, 1, 5, 6.0]), "c": np.array([0, 3, 3, 3, np.nan])}
    win, p = win_matrix(values)
    nan = np.nan
    np.testing.assert_allclose(win.to_numpy(), [[nan, 70.0, 37.5], [30.0, nan, 50.0], [62.5, 50.0, nan]])
    # Holm of (0.625, 1, 1): 3 * 0.625 -> clipped to 1, then the cumulative max keeps 1
    np.testing.assert_allclose(p.to_numpy(), [[nan, 1, 1], [1, nan, 1], [1, 1, nan]])


def test_win_matrix_ties_and_nan():
    values = {"x": np.array([1.0, 2.0, np.nan, 4.0]), "y": np.array([1.0, 2.0, 3.0, np.nan]),
              "z": np.array([np.nan, np.nan, 0.0, np.nan])}
    win, p = win_matrix(values)
    assert win.loc["x", "y"] == win.loc["y", "x"] == 50.0  # two shared images, both tied
    assert p.loc["x", "y"] == 1.0  # no untied image
    assert math.isnan(win.loc["x", "z"]) and p.loc["x", "z"] == 1.0  # never both defined
    assert win.loc["y", "z"] == 0.0 and win.loc["z", "y"] == 100.0  # image 2 only: 3 > 0
    assert p.loc["y", "z"] == 1.0  # binomtest(0, 1) = 1, Holm keeps 1
    assert all(math.isnan(win.loc[m, m]) and math.isnan(p.loc[m, m]) for m in values)


def test_win_matrix_higher_is_better_and_order():
    values = _three_methods()
    lower, p_lower = win_matrix(values)
    higher, p_higher = win_matrix({m: values[m] for m in ["c", "a", "b"]}, lower_is_better=False)
    assert list(higher.index) == list(higher.columns) == ["c", "a", "b"]
    pd.testing.assert_frame_equal(higher.loc[["a", "b", "c"], ["a", "b", "c"]], lower.T)
    pd.testing.assert_frame_equal(p_higher.loc[["a", "b", "c"], ["a", "b", "c"]], p_lower)


def test_win_matrix_holm_against_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(0)
    values = {m: rng.normal(shift, 1.0, size=30) for m, shift in zip("abcde", [0, 0.2, 0.5, 0.6, 1.0])}
    _, p = win_matrix(values)
    raw, pairs = [], []
    for i, a in enumerate("abcde"):
        for b in "abcde"[i + 1:]:
            wins = int(np.sum(values[a] < values[b]))
            raw.append(binomtest(wins, 30, 0.5).pvalue)
            pairs.append((a, b))
    adjusted = multitest.multipletests(raw, method="holm")[1]
    np.testing.assert_allclose([p.loc[a, b] for a, b in pairs], adjusted, rtol=1e-12)


def test_win_matrix_errors():
    with pytest.raises(TypeError, match="Expected `values` to be a dict"):
        win_matrix([np.zeros(3)])
    with pytest.raises(ValueError, match="Expected `values` to hold 1-D arrays of the same length"):
        win_matrix({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="Expected `values` to hold 1-D arrays of the same length"):
        win_matrix({"a": np.zeros((3, 2)), "b": np.zeros((3, 2))})


# ---------------------------------------------------------------- mean_ranks


def _table():
    return pd.DataFrame({
        "backbone": ["r50"] * 3 + ["vgg"] * 3,
        "method": ["gradcam", "gradcam++", "scorecam"] * 2,
        "drop": [10.0, 20.0, 20.0, 30.0, np.nan, 10.0],  # lower is better
        "game": [0.5, 0.9, 0.7, 0.8, 0.8, 0.6],  # higher is better
        "seconds": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # not ranked
    })


def test_mean_ranks_hand_computed():
    ranks = mean_ranks(_table(), {"drop": False, "game": True})
    # r50: drop ranks (1, 2.5, 2.5), game ranks (3, 1, 2) -> gradcam 2, gradcam++ 1.75, scorecam 2.25
    # vgg: drop ranks (2, -, 1) (NaN unranked), game ranks (1.5, 1.5, 3) -> 1.75, -, 2: gradcam++ is not ranked
    # on a column the others are ranked on, so it has no vgg rank (a mean over fewer columns would not compare)
    # and no mean rank (NaN sorts last)
    expected = pd.DataFrame({"r50": [2.0, 2.25, 1.75], "vgg": [1.75, 2.0, np.nan], "mean rank": [1.875, 2.125, np.nan]},
                            index=pd.Index(["gradcam", "scorecam", "gradcam++"], name="method"))
    pd.testing.assert_frame_equal(ranks, expected)


def test_mean_ranks_single_metric_stable_order_and_missing_backbone():
    table = pd.DataFrame({"backbone": ["r50", "r50", "r50", "vgg", "vgg"], "method": ["b", "a", "c", "b", "a"],
                          "drop": [1.0, 1.0, 3.0, 2.0, 2.0]})
    ranks = mean_ranks(table, {"drop": False})
    assert list(ranks.index) == ["b", "a", "c"]  # b and a tie everywhere: table order kept
    assert list(ranks.columns) == ["r50", "vgg", "mean rank"]
    # c has no row on vgg: no rank there, so no mean rank (a mean over fewer backbones would not compare)
    assert ranks.loc["c", "r50"] == 3.0 and math.isnan(ranks.loc["c", "vgg"])
    assert math.isnan(ranks.loc["c", "mean rank"])
    assert ranks.loc["a", "mean rank"] == ranks.loc["b", "mean rank"] == 1.5


def test_mean_ranks_errors():
    with pytest.raises(TypeError, match="Expected `table` to be a pandas.DataFrame"):
        mean_ranks({"backbone": []}, {})
    with pytest.raises(ValueError, match=r"but got no \['game'\]"):
        mean_ranks(_table().drop(columns="game"), {"drop": False, "game": True})
    with pytest.raises(ValueError, match=r"one row per \(backbone, method\)"):
        mean_ranks(pd.concat([_table(), _table().iloc[:1]]), {"drop": False})
