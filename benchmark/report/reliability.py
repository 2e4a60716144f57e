"""Reliability of saliency metrics: how stable a metric's ranking of methods is, and how far metrics agree.

Tomsett et al., *Sanity Checks for Saliency Metrics*, AAAI 2020, ask whether a saliency metric ranks
explanation methods consistently. Two of their checks, at the level of a leaderboard:

* :func:`ranking_stability`: the Kendall tau-b between the ranking of methods on the full data and on
  each bootstrap resample of the images (the resamples of :func:`benchmark.report.stats.bootstrap_ci`:
  the same seed gives the same images), with its mean and 2.5 / 97.5 percentiles. Near 1: the
  leaderboard's order of methods is not sampling noise.
* :func:`metric_agreement`: the Kendall tau-b between the rankings of methods by every pair of metrics
  (inter-metric reliability). Near 1: the two metrics agree; near -1: they contradict each other.

Kendall's tau-b (Kendall, *Biometrika* 1945) of ``x`` and ``y`` over the ``m (m - 1) / 2`` pairs ``i < j``:

    tau_b = sum sign(x_i - x_j) sign(y_i - y_j) / sqrt(n_x n_y)

where ``n_x`` (``n_y``) counts the pairs not tied in ``x`` (``y``); undefined (NaN) when either is 0.
"""
from __future__ import annotations

import math
from numbers import Integral
from typing import Mapping, NamedTuple, Optional, Union

import numpy as np
import pandas as pd

from benchmark.report.stats import _resamples

__all__ = ["Stability", "kendall_tau_b", "kendall_tau_b_rows", "metric_agreement", "ranking_stability",
           "stability_from_replicates"]


class Stability(NamedTuple):
    """Bootstrap summary of a ranking's Kendall tau-b to the full-data ranking (:func:`ranking_stability`).

    Attributes:
        mean: mean tau-b over the resamples where it is defined.
        low: 2.5th percentile of those tau-b values.
        high: 97.5th percentile of those tau-b values.
        n_boot: number of resamples where tau-b is defined (those the three numbers are over).
    """

    mean: float
    low: float
    high: float
    n_boot: int


def kendall_tau_b_rows(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b between each row of ``X`` and ``y``, vectorised over rows.

    With ``S = sign(X[:, i] - X[:, j])`` and ``s = sign(y_i - y_j)`` over the pairs ``i < j``, row ``b``
    gets ``S[b] @ s / sqrt(sum(S[b] ** 2) * sum(s ** 2))`` (module docstring). Memory and time are
    ``O(B m^2)``: meant for rankings of a few dozen methods.

    Args:
        X: ``(B, m)`` values, one scoring of ``m`` items per row.
        y: ``(m,)`` values of the same items.

    Returns:
        ``(B,)`` float64 tau-b values; NaN for a row that is constant (or has a NaN), and everywhere when
        ``y`` is constant (or has a NaN) or ``m < 2``.

    Examples:
        >>> kendall_tau_b_rows(np.array([[1, 2, 3], [3, 2, 1], [1, 3, 2], [5, 5, 5]]), np.array([1, 2, 3]))
        array([ 1.        , -1.        ,  0.33333333,         nan])
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or X.shape[1] != len(y):
        raise ValueError(f"Expected `X` to have shape (B, m) and `y` shape (m,), but got {X.shape} and {y.shape}.")
    i, j = np.triu_indices(len(y), k=1)
    sx = np.sign(X[:, i] - X[:, j])
    sy = np.sign(y[i] - y[j])
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sx @ sy) / np.sqrt(np.sum(sx * sx, axis=1) * np.sum(sy * sy))
    return np.where(np.isfinite(tau), tau, np.nan)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b of two 1-D arrays of the same length (module docstring), from pairwise signs.

    Args:
        x: ``(m,)`` values.
        y: ``(m,)`` values of the same items.

    Returns:
        tau-b in ``[-1, 1]``; NaN when either array is constant (no untied pair: tau-b is undefined),
        has fewer than two items or holds a NaN.

    Examples:
        >>> kendall_tau_b([1, 2, 3], [1, 3, 2])  # 2 concordant pairs, 1 discordant, no ties: 1/3
        0.3333333333333333
        >>> round(kendall_tau_b([1, 1, 2], [1, 2, 3]), 6)  # 2 / sqrt(2 * 3): one pair tied in x
        0.816497
        >>> kendall_tau_b([1, 2, 3], [3, 2, 1]), kendall_tau_b([4, 4, 4], [1, 2, 3])
        (-1.0, nan)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"Expected `x` and `y` to be 1-D of the same length, but got {x.shape} and {y.shape}.")
    return float(kendall_tau_b_rows(x[None, :], y)[0])


def _nanmean_rows(samples: np.ndarray) -> np.ndarray:
    """``np.nanmean(samples, axis=1)`` without its warning: NaN for a row that is all NaN."""
    valid = ~np.isnan(samples)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, samples, 0.0).sum(axis=1) / valid.sum(axis=1)


def _round(values: np.ndarray, decimals: Optional[int]) -> np.ndarray:
    """``values`` rounded as the leaderboard prints them (``f"{v:.{decimals}f}"``, as ``stats.rankable``)."""
    if decimals is None:
        return values
    if isinstance(decimals, bool) or not isinstance(decimals, Integral) or decimals < 0:
        raise ValueError(f"Expected `decimals` to be a non-negative integer, but got {decimals!r}.")
    return np.array([float(f"{v:.{int(decimals)}f}") if np.isfinite(v) else v for v in values.ravel()],
                    dtype=np.float64).reshape(values.shape)


def ranking_stability(values: Mapping[str, np.ndarray], higher_is_better: bool, n_boot: int = 1000,
                      seed: Optional[int] = 0, decimals: Optional[int] = None) -> Stability:
    """Bootstrap stability of one metric's ranking of methods (Tomsett et al., AAAI 2020).

    A method's score is the mean of its per-sample values, NaN left out (``np.nanmean``), oriented so
    that higher is better (negated when ``higher_is_better`` is False). The full-data scores are
    compared with the scores on each resample of the samples, ``idx[b]`` from
    :func:`benchmark.report.stats._resamples` ``(n, n_boot, seed)``: the resamples of
    :func:`~benchmark.report.stats.bootstrap_ci` with the same seed, so the stability goes with the
    leaderboard's confidence intervals. ``tau[b]`` = Kendall tau-b (:func:`kendall_tau_b_rows`) between
    the methods' scores on resample ``b`` and on the full data. Methods whose full-data mean is NaN
    (no defined sample) are left out; a resample where a kept method has no defined sample, or where
    the scores are all tied, has no tau and is dropped.

    Args:
        values: method -> ``(n,)`` per-sample values of the metric, all on the same samples in the same
            order (NaN = undefined for that method).
        higher_is_better: whether a higher value of the metric is better.
        n_boot: number of bootstrap resamples.
        seed: seed of ``numpy.random.default_rng`` (as in ``bootstrap_ci``).
        decimals: when given, the means are rounded to this many decimals (as the leaderboard prints
            them) before comparing, so methods that show the same number tie.

    Returns:
        :class:`Stability` ``(mean, low, high, n_boot)``: the mean of the defined ``tau[b]``, their
        2.5 / 97.5 percentiles (``np.percentile``, linear) and how many there are; NaN (and 0) when no
        resample has a tau (e.g. fewer than two methods).

    Examples:
        >>> values = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([5.0, 6.0, 7.0]), "c": np.array([9.0, 9, 9])}
        >>> ranking_stability(values, higher_is_better=True, n_boot=100)  # b's values are a's + 4
        Stability(mean=1.0, low=1.0, high=1.0, n_boot=100)
        >>> noisy = {"a": np.array([0.0, 1.0, 0.0, 1.2]), "b": np.array([1.0, 0.0, 1.0, 0.0])}
        >>> ranking_stability(noisy, higher_is_better=False, n_boot=100)  # 5 resamples tie a and b: dropped
        Stability(mean=0.3894736842105263, low=-1.0, high=1.0, n_boot=95)
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"Expected `values` to be a dict of method -> per-sample values, but got "
                        f"{type(values).__name__}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, Integral) or n_boot < 1:
        raise ValueError(f"Expected `n_boot` to be a positive integer, but got {n_boot!r}.")
    arrays = {m: np.asarray(v, dtype=np.float64) for m, v in values.items()}
    shapes = {m: a.shape for m, a in arrays.items()}
    if any(a.ndim != 1 for a in arrays.values()) or len(set(shapes.values())) > 1:
        raise ValueError(f"Expected `values` to hold 1-D arrays of the same length, but got shapes {shapes}.")
    full = {m: _nanmean_rows(a[None, :])[0] for m, a in arrays.items()}
    kept = [m for m in arrays if not np.isnan(full[m])]
    if len(kept) < 2:
        return Stability(math.nan, math.nan, math.nan, 0)
    n = len(arrays[kept[0]])
    chunks = list(_resamples(n, n_boot, seed))
    replicates = {m: np.concatenate([_nanmean_rows(arrays[m][idx]) for idx in chunks]) for m in kept}
    return stability_from_replicates({m: full[m] for m in kept}, replicates, higher_is_better, decimals)


def stability_from_replicates(full: Mapping[str, float], replicates: Mapping[str, np.ndarray],
                              higher_is_better: bool, decimals: Optional[int] = None) -> Stability:
    """:func:`ranking_stability` from each method's full-data score and its bootstrap replicates, for metrics
    whose dataset value is not a plain mean (ADCC's harmonic mean, the pointing game's hit rate over the
    defined samples): the replicates are the metric's own reduction on each resample
    (:func:`benchmark.report.stats.bootstrap_replicates`, the numbers behind the leaderboard's intervals).

    Args:
        full: method -> the dataset value (NaN: the method is left out).
        replicates: method -> ``(B,)`` replicate values, replicate ``b`` of every method on the same resample.
        higher_is_better, decimals: as in :func:`ranking_stability`.

    Examples:
        >>> full = {"a": 1.0, "b": 2.0, "c": 3.0}
        >>> reps = {"a": np.array([1.0, 1.0, 2.5]), "b": np.array([2.0, 2.0, 2.0]), "c": np.array([3.0, 1.5, 3.0])}
        >>> stability_from_replicates(full, reps, higher_is_better=True)  # taus 1, 1/3 (c < b), 1/3 (a > b)
        Stability(mean=0.5555555555555555, low=0.3333333333333333, high=0.9666666666666667, n_boot=3)
    """
    kept = [m for m in full if np.isfinite(full[m])]
    if len(kept) < 2:
        return Stability(math.nan, math.nan, math.nan, 0)
    sign = 1.0 if higher_is_better else -1.0
    reference = sign * _round(np.array([full[m] for m in kept], dtype=np.float64), decimals)
    scores = np.stack([np.asarray(replicates[m], dtype=np.float64) for m in kept], axis=1)  # (B, methods)
    taus = kendall_tau_b_rows(sign * _round(scores, decimals), reference)
    taus = taus[~np.isnan(taus)]
    if len(taus) == 0:
        return Stability(math.nan, math.nan, math.nan, 0)
    low, high = np.percentile(taus, [2.5, 97.5])
    return Stability(float(np.mean(taus)), float(low), float(high), len(taus))


def metric_agreement(table: pd.DataFrame, higher_is_better: Mapping[str, bool],
                     decimals: Union[int, Mapping[str, int], None] = None) -> pd.DataFrame:
    """Kendall tau-b between the rankings of methods by every pair of metrics (Tomsett et al., AAAI 2020).

    Each column is oriented so that higher is better (negated when ``higher_is_better[metric]`` is
    False) after the optional rounding, then ``agreement[A, B]`` is :func:`kendall_tau_b` of columns A
    and B over the methods defined (not NaN) in both: +1 when the two metrics order the methods the
    same way, -1 when they reverse it. NaN when fewer than two methods are common or either column is
    constant on them; the diagonal is 1.0 unless the column is constant.

    Args:
        table: index = methods, columns = metrics, values = each method's dataset-level value (NaN allowed).
        higher_is_better: metric -> whether higher values are better; needed for every column of ``table``.
        decimals: decimals to round to before comparing (as the leaderboard prints them, so shown ties
            are ties): one int for every metric, or metric -> int (metrics left out are not rounded).

    Returns:
        DataFrame metrics x metrics (in ``table``'s column order), symmetric.

    Examples:
        >>> table = pd.DataFrame({"drop": [10.0, 20.0, 30.0], "gain": [0.9, 0.5, 0.1], "size": [1.0, 2.0, 3.0]},
        ...                      index=["a", "b", "c"])
        >>> metric_agreement(table, {"drop": False, "gain": True, "size": True})
              drop  gain  size
        drop   1.0   1.0  -1.0
        gain   1.0   1.0  -1.0
        size  -1.0  -1.0   1.0
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"Expected `table` to be a pandas.DataFrame, but got {type(table).__name__}.")
    metrics = list(table.columns)
    missing = [c for c in metrics if c not in higher_is_better]
    if missing:
        raise ValueError(f"Expected `higher_is_better` to give every column of `table`, but got none for {missing}.")
    oriented = {}
    for metric in metrics:
        places = decimals.get(metric) if isinstance(decimals, Mapping) else decimals
        column = _round(table[metric].to_numpy(dtype=np.float64), places)
        oriented[metric] = column if higher_is_better[metric] else -column
    out = np.full((len(metrics), len(metrics)), np.nan)
    for a, first in enumerate(metrics):
        for b in range(a, len(metrics)):
            x, y = oriented[first], oriented[metrics[b]]
            both = ~np.isnan(x) & ~np.isnan(y)
            out[a, b] = out[b, a] = kendall_tau_b(x[both], y[both])
    return pd.DataFrame(out, index=metrics, columns=metrics)
