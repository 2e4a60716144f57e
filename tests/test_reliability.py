"""Tests of :mod:`benchmark.report.reliability`: Kendall tau-b against hand computations and
``scipy.stats.kendalltau``, ranking stability on the resamples of :mod:`benchmark.report.stats`, metric agreement."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

import benchmark.report.stats as stats
from benchmark.report.reliability import (
    Stability,
    kendall_tau_b,
    kendall_tau_b_rows,
    metric_agreement,
    ranking_stability,
)


def _scipy_tau(x, y) -> float:
    """scipy's tau-b (its default variant), NaN where it is undefined (scipy warns on a constant input)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(kendalltau(x, y, variant="b").statistic)


# ---------------------------------------------------------------- kendall_tau_b


def test_tau_hand_cases():
    # pairs (0,1): x+ y+ concordant, (0,2): x+ y+ concordant, (1,2): x+ y- discordant -> (2 - 1) / 3
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3, abs=1e-15)
    # x = [1, 1, 2], y = [1, 2, 3]: pair (0,1) tied in x (sign 0), (0,2) and (1,2) concordant.
    # numerator 2; untied pairs in x: 2, in y: 3 -> 2 / sqrt(2 * 3) = 2 / sqrt(6)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6), abs=1e-15)
    # x = [1, 1, 2, 2], y = [1, 2, 2, 3]: pairs (0,1) x tie, (0,2) ++, (0,3) ++, (1,2) ++ , (1,3) ++, (2,3) x tie;
    # y ties: (1,2) -> y-sign 0, so numerator 3, untied in x 4, in y 5 -> 3 / sqrt(20)
    assert kendall_tau_b([1, 1, 2, 2], [1, 2, 2, 3]) == pytest.approx(3 / math.sqrt(20), abs=1e-15)
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0


@pytest.mark.parametrize("x, y", [([2, 2, 2], [1, 2, 3]), ([1, 2, 3], [5, 5, 5]), ([1], [2]), ([], []),
                                  ([1, np.nan, 3], [1, 2, 3])])
def test_tau_undefined_is_nan(x, y):
    assert math.isnan(kendall_tau_b(x, y))


def test_tau_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same length"):
        kendall_tau_b([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"shape \(B, m\)"):
        kendall_tau_b_rows(np.zeros((2, 3)), np.zeros(4))


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("ties", [False, True])
def test_tau_matches_scipy(seed, ties):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 31))
    if ties:
        x, y = rng.integers(0, 4, m).astype(float), rng.integers(0, 3, m).astype(float)
    else:
        x, y = rng.normal(size=m), rng.normal(size=m)
    expected = _scipy_tau(x, y)
    got = kendall_tau_b(x, y)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_tau_rows_matches_scipy_row_by_row(seed):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 5, size=(200, 12)).astype(float)
    X[:3] = 2.0  # constant rows: undefined
    X[3:50] = rng.normal(size=(47, 12))
    y = rng.integers(0, 6, size=12).astype(float)
    got = kendall_tau_b_rows(X, y)
    expected = np.array([_scipy_tau(row, y) for row in X])
    assert got.shape == (200,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)  # NaN where scipy's is NaN
    assert np.isnan(got[:3]).all() and not np.isnan(got[3:]).any()
    assert np.isnan(kendall_tau_b_rows(X, np.full(12, 1.0))).all()


# ---------------------------------------------------------------- ranking_stability


def test_stability_without_sampling_noise_is_one():
    n = 40
    values = {name: np.full(n, level) for name, level in [("a", 0.1), ("b", 0.5), ("c", 0.3), ("d", 0.9)]}
    assert ranking_stability(values, higher_is_better=True, n_boot=200) == Stability(1.0, 1.0, 1.0, 200)
    assert ranking_stability(values, higher_is_better=False, n_boot=200) == Stability(1.0, 1.0, 1.0, 200)


def test_stability_drops_below_one_under_noise():
    rng = np.random.default_rng(1)
    n = 100
    values = {f"m{k}": rng.normal(loc=0.001 * k, scale=1.0, size=n) for k in range(6)}  # gaps << noise
    result = ranking_stability(values, higher_is_better=True, n_boot=300)
    assert result.mean < 0.6
    assert -1.0 <= result.low < result.mean < result.high <= 1.0
    assert result.n_boot == 300
    separated = {f"m{k}": rng.normal(loc=10.0 * k, scale=1.0, size=n) for k in range(6)}  # gaps >> noise
    assert ranking_stability(separated, higher_is_better=True, n_boot=300) == Stability(1.0, 1.0, 1.0, 300)


def test_stability_same_seed_same_result():
    rng = np.random.default_rng(2)
    values = {f"m{k}": rng.normal(size=50) for k in range(5)}
    first = ranking_stability(values, higher_is_better=False, n_boot=150, seed=7)
    assert ranking_stability(values, higher_is_better=False, n_boot=150, seed=7) == first
    assert ranking_stability(values, higher_is_better=False, n_boot=150, seed=8) != first


def _reference_taus(values, n_boot, seed, decimals=None):
    """The documented contract, written independently: resamples of ``stats._resamples``, scipy tau-b per one."""
    methods = list(values)
    matrix = np.stack([values[m] for m in methods], axis=1)
    means = np.nanmean(matrix, axis=0)
    if decimals is not None:
        means = np.round(means, decimals)
    idx = np.concatenate(list(stats._resamples(len(matrix), n_boot, seed)))
    assert idx.shape == (n_boot, len(matrix))
    taus = []
    for row in idx:
        boot = np.nanmean(matrix[row], axis=0)
        if decimals is not None:
            boot = np.round(boot, decimals)
        taus.append(_scipy_tau(boot, means))
    return np.array(taus)


def test_stability_uses_the_leaderboard_resamples():
    rng = np.random.default_rng(3)
    n = 30
    values = {f"m{k}": rng.normal(loc=0.1 * k, size=n) for k in range(5)}
    values["m0"][[2, 9]] = np.nan  # NaN samples are left out of the means
    taus = _reference_taus(values, n_boot=120, seed=5)
    assert not np.isnan(taus).any()
    result = ranking_stability(values, higher_is_better=True, n_boot=120, seed=5)
    assert result.n_boot == 120
    assert result.mean == pytest.approx(taus.mean(), abs=1e-12)
    low, high = np.percentile(taus, [2.5, 97.5])
    assert (result.low, result.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    # a different seed gives other resamples, hence another mean
    assert ranking_stability(values, higher_is_better=True, n_boot=120, seed=6).mean != pytest.approx(taus.mean())


def test_stability_decimals_turn_near_ties_into_ties():
    # a and b differ by noise far below the shown precision (1 decimal), c is far above: unrounded, the resamples
    # often swap a and b (tau-b 1/3 of 3 methods); rounded, a and b tie on the full data and on every resample
    # (their means stay in [0.25, 0.35)), so the tied orderings agree exactly: tau-b 1
    rng = np.random.default_rng(6)
    base = 0.30 + 0.01 * rng.uniform(-1, 1, size=50)
    noise = rng.normal(scale=1e-3, size=50)
    values = {"a": base + noise - noise.mean() + 1e-6, "b": base, "c": base + 1.0}  # a - b: 1e-6 on the full data
    exact = ranking_stability(values, higher_is_better=True, n_boot=200)
    assert exact.mean < 0.8 and exact.low == pytest.approx(1 / 3)
    assert exact.mean == pytest.approx(np.nanmean(_reference_taus(values, n_boot=200, seed=0)), abs=1e-12)
    assert ranking_stability(values, higher_is_better=True, n_boot=200, decimals=1) == Stability(1.0, 1.0, 1.0, 200)
    # at 3 decimals (a and b tie on the full data) some resamples still split a and b (tau-b 2 / sqrt(6)), most tie
    rounded = ranking_stability(values, higher_is_better=False, n_boot=200, decimals=3)
    taus = _reference_taus(values, n_boot=200, seed=0, decimals=3)
    assert exact.mean < rounded.mean < 1.0 and rounded.low == pytest.approx(2 / math.sqrt(6))
    assert rounded.mean == pytest.approx(np.nanmean(taus), abs=1e-12)
    assert rounded.n_boot == np.sum(~np.isnan(taus))


def test_stability_nan_methods_and_degenerate_cases():
    values = {"a": np.array([1.0, 2.0, 3.0, 4.0]), "b": np.array([5.0, 6.0, 7.0, 8.0]),
              "never": np.full(4, np.nan)}
    assert ranking_stability(values, higher_is_better=True, n_boot=50) == Stability(1.0, 1.0, 1.0, 50)
    single = ranking_stability({"a": values["a"], "never": values["never"]}, higher_is_better=True, n_boot=50)
    assert math.isnan(single.mean) and math.isnan(single.low) and math.isnan(single.high) and single.n_boot == 0
    tied = ranking_stability({"a": np.ones(5), "b": np.ones(5)}, higher_is_better=True, n_boot=20)
    assert math.isnan(tied.mean) and tied.n_boot == 0


def test_stability_rejects_bad_input():
    with pytest.raises(TypeError, match="dict"):
        ranking_stability([np.ones(3)], higher_is_better=True)
    with pytest.raises(ValueError, match="same length"):
        ranking_stability({"a": np.ones(3), "b": np.ones(4)}, higher_is_better=True)
    with pytest.raises(ValueError, match="n_boot"):
        ranking_stability({"a": np.ones(3)}, higher_is_better=True, n_boot=0)
    with pytest.raises(ValueError, match="decimals"):
        ranking_stability({"a": np.arange(3.0), "b": np.ones(3)}, higher_is_better=True, decimals=-1)


def test_agreement_orients_lower_is_better():
    table = pd.DataFrame({"drop": [30.0, 10.0, 20.0, 40.0],  # lower is better: b > c > a > d
                          "increase": [20.0, 60.0, 40.0, 5.0],  # higher is better: b > c > a > d
                          "worse": [0.9, 0.1, 0.5, 0.95]},  # higher is better: d > a > c > b (reversed)
                         index=["a", "b", "c", "d"])
    out = metric_agreement(table, {"drop": False, "increase": True, "worse": True})
    assert list(out.index) == list(out.columns) == ["drop", "increase", "worse"]
    assert out.loc["drop", "increase"] == out.loc["increase", "drop"] == 1.0
    assert out.loc["drop", "worse"] == out.loc["increase", "worse"] == -1.0
    assert (np.diag(out.to_numpy()) == 1.0).all()


def test_agreement_nan_handling():
    table = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan], "y": [np.nan, np.nan, 4.0, 5.0],
                          "z": [1.0, 3.0, 2.0, 4.0], "flat": [2.0, 2.0, 2.0, 2.0]}, index=list("abcd"))
    out = metric_agreement(table, {"x": True, "y": True, "z": True, "flat": False})
    assert math.isnan(out.loc["x", "y"])  # one common method (c)
    assert out.loc["x", "z"] == pytest.approx(1 / 3, abs=1e-15)  # over a, b, c
    assert out.loc["y", "z"] == 1.0  # over c, d
    assert out["flat"].isna().all() and out.loc["flat"].isna().all()  # constant: undefined, diagonal included
    assert out.loc["x", "x"] == out.loc["y", "y"] == 1.0


def test_agreement_matches_scipy():
    rng = np.random.default_rng(5)
    metrics = [f"k{j}" for j in range(6)]
    table = pd.DataFrame(rng.integers(0, 6, size=(12, 6)).astype(float), columns=metrics,
                         index=[f"m{i}" for i in range(12)])
    table = table.mask(rng.random(table.shape) < 0.2)
    higher = {k: bool(j % 2) for j, k in enumerate(metrics)}
    out = metric_agreement(table, higher)
    for a in metrics:
        for b in metrics:
            both = table[a].notna() & table[b].notna()
            x = table.loc[both, a].to_numpy() * (1 if higher[a] else -1)
            y = table.loc[both, b].to_numpy() * (1 if higher[b] else -1)
            expected = _scipy_tau(x, y)
            if math.isnan(expected):
                assert math.isnan(out.loc[a, b])
            else:
                assert out.loc[a, b] == pytest.approx(expected, abs=1e-12)


def test_agreement_decimals():
    table = pd.DataFrame({"p": [0.501, 0.502, 0.9], "q": [0.9, 0.5, 0.1]}, index=list("abc"))
    higher = {"p": True, "q": False}
    assert metric_agreement(table, higher).loc["p", "q"] == 1.0
    # at 2 decimals a and b tie on p: numerator 2 of 3 pairs, 2 untied pairs in p -> 2 / sqrt(2 * 3)
    tied = metric_agreement(table, higher, decimals=2)
    assert tied.loc["p", "q"] == pytest.approx(2 / math.sqrt(6), abs=1e-15)
    assert metric_agreement(table, higher, decimals={"p": 2}).loc["p", "q"] == pytest.approx(2 / math.sqrt(6))
    assert metric_agreement(table, higher, decimals={"q": 2}).loc["p", "q"] == 1.0


def test_agreement_rejects_bad_input():
    with pytest.raises(TypeError, match="DataFrame"):
        metric_agreement({"x": [1.0]}, {"x": True})
    with pytest.raises(ValueError, match="every column"):
        metric_agreement(pd.DataFrame({"x": [1.0, 2.0], "y": [2.0, 1.0]}), {"x": True})
