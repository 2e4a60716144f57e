"""Statistics of the leaderboard: bootstrap confidence intervals, pairwise win rates, mean ranks.

* :func:`bootstrap_ci`: percentile bootstrap (Efron & Tibshirani, *An Introduction to the
  Bootstrap*, 1993, ch. 13) of any metric's dataset results, resampling its per-sample rows. The
  resamples depend only on ``(N, n_boot, seed)``, so methods scored on the same images share them
  (paired resamples).
* :func:`win_matrix`: the share of images on which method A beats method B, as in Table 1 of
  Grad-CAM++ (Chattopadhyay et al., WACV 2018: images where A's Average Drop is lower than B's;
  ties count half here), with a two-sided exact sign test per pair and the Holm-Bonferroni
  adjustment (Holm, *Scand. J. Statist.* 1979) over all pairs.
* :func:`mean_ranks`: the average rank of each method over metrics and backbones (Demsar,
  *Statistical comparisons of classifiers over multiple data sets*, JMLR 2006).
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest, rankdata
from torch import Tensor

from benchmark.metrics.base import PerSampleMetric

__all__ = ["bootstrap_ci", "bootstrap_replicates", "degenerate_maps", "intervals", "mean_ranks", "on_most",
           "rankable", "unranked_methods", "win_matrix"]

#: at most this many resampled values are held at once (the draws come in row chunks)
_CHUNK_ELEMENTS = 1 << 20


def _resamples(n: int, n_boot: int, seed) -> Iterator[np.ndarray]:
    """``default_rng(seed).integers(0, n, size=(n_boot, n))`` in chunks of rows (the same numbers)."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(rows, n_boot - start), n))


def _fast_policy(results_fn: Callable, values: Tensor) -> Optional[str]:
    """The ``nan_policy`` when ``results_fn`` is a plain-mean metric's ``results_from`` on 1-D values, else None."""
    metric = getattr(results_fn, "__self__", None)
    plain = (isinstance(metric, PerSampleMetric) and values.ndim == 1
             and getattr(results_fn, "__func__", None) is PerSampleMetric.results_from
             and type(metric).reduce is PerSampleMetric.reduce
             and type(metric).extra_reduce is PerSampleMetric.extra_reduce)
    return metric.nan_policy if plain else None


def _policy_means(samples: np.ndarray, nan_policy: str) -> np.ndarray:
    """Row means of ``samples`` as :func:`reduce_values` takes them (``"mean"``, ``nan_policy``)."""
    if nan_policy == "zero":
        return np.nan_to_num(samples, nan=0.0).mean(axis=1)
    if nan_policy == "propagate":
        return samples.mean(axis=1)
    valid = ~np.isnan(samples)  # "omit": nansum / count, NaN (no warning) when a row is all NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, samples, 0.0).sum(axis=1) / valid.sum(axis=1)


def bootstrap_ci(results_fn: Callable[[Tensor], Mapping[str, object]], values: Tensor, n_boot: int = 1000,
                 seed: Optional[int] = 0, level: float = 0.95) -> Dict[str, Tuple[float, float]]:
    """Percentile bootstrap confidence interval of every result ``results_fn`` computes from ``values``.

    The row resamples are ``numpy.random.default_rng(seed).integers(0, N, size=(n_boot, N))``
    (drawn in row chunks, which gives the same numbers), so two calls with the same ``N`` and
    ``seed`` use the same resamples: intervals of methods scored on the same images are paired.
    Each replicate is ``results_fn(values[idx[b]])``; the interval of a key is the
    ``numpy.nanpercentile`` (linear interpolation) of its replicates at ``100 (1 - level) / 2``
    and ``100 (1 + level) / 2``; ``(nan, nan)`` when every replicate is NaN. When ``results_fn``
    is the ``results_from`` of a metric that keeps the default mean (``PerSampleMetric.reduce``,
    no ``extra_reduce``) and ``values`` is 1-D, the replicate means are computed at once with
    numpy under the metric's ``nan_policy`` (equal to the per-replicate calls up to rounding).

    Args:
        results_fn: per-sample rows -> ``{name: 0-d tensor or float}``, e.g.
            ``create_metric("adcc").results_from``.
        values: ``(N,)`` or ``(N, K)`` per-sample values in dataset-index order (NaN = undefined).
        n_boot: number of bootstrap replicates.
        seed: seed of ``numpy.random.default_rng``.
        level: confidence level in ``(0, 1)``.

    Returns:
        ``{name: (low, high)}`` for each key of ``results_fn``'s result; ``{}`` when ``N == 0``.

    Examples:
        >>> from benchmark.metrics import create_metric
        >>> values = torch.tensor([2.0, 4.0, 4.0, 6.0], dtype=torch.float64)
        >>> bootstrap_ci(create_metric("complexity").results_from, values, n_boot=200)
        {'': (2.5, 5.0)}
        >>> bootstrap_ci(create_metric("complexity").results_from, torch.full((5,), 7.0))
        {'': (7.0, 7.0)}
    """
    if not callable(results_fn):
        raise TypeError(f"Expected `results_fn` to be callable, but got {type(results_fn).__name__}.")
    if not isinstance(values, Tensor):
        raise TypeError(f"Expected `values` to be a torch.Tensor, but got {type(values).__name__}.")
    if values.ndim not in (1, 2):
        raise ValueError(f"Expected `values` to have shape (N,) or (N, K), but got {tuple(values.shape)}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, Integral) or n_boot < 1:
        raise ValueError(f"Expected `n_boot` to be a positive integer, but got {n_boot!r}.")
    if isinstance(level, bool) or not isinstance(level, Real) or not 0 < level < 1:
        raise ValueError(f"Expected `level` to be a number in (0, 1), but got {level!r}.")
    return intervals(bootstrap_replicates(results_fn, values, n_boot, seed), level)


def bootstrap_replicates(results_fn: Callable[[Tensor], Mapping[str, object]], values: Tensor, n_boot: int = 1000,
                         seed: Optional[int] = 0) -> Dict[str, np.ndarray]:
    """The ``n_boot`` replicates of every result of ``results_fn`` (see :func:`bootstrap_ci`, which takes
    their percentiles; :func:`benchmark.report.reliability.stability_from_replicates` ranks methods on them).

    Examples:
        >>> from benchmark.metrics import create_metric
        >>> reps = bootstrap_replicates(create_metric("complexity").results_from, torch.tensor([1.0, 3.0]), 4)
        >>> sorted(reps), reps[""].shape
        ([''], (4,))
    """
    values = values.detach().cpu().double()
    n = len(values)
    if n == 0:
        return {}
    policy = _fast_policy(results_fn, values)
    replicates: Dict[str, List[float]] = {}
    if policy is not None:
        values_np = values.numpy()
        return {"": np.concatenate([_policy_means(values_np[idx], policy) for idx in _resamples(n, n_boot, seed)])}
    for chunk in _resamples(n, n_boot, seed):
        for idx in torch.from_numpy(chunk):  # index_select: the same rows as values[idx], far faster
            for key, value in results_fn(values.index_select(0, idx)).items():
                replicates.setdefault(key, []).append(float(value))
    return {key: np.asarray(reps, dtype=np.float64) for key, reps in replicates.items()}


def intervals(replicates: Mapping[str, np.ndarray], level: float = 0.95) -> Dict[str, Tuple[float, float]]:
    """Percentile interval of each key's replicates (``numpy.nanpercentile``, linear); ``(nan, nan)`` when
    all are NaN.

    Examples:
        >>> intervals({"": np.array([1.0, 2.0, 3.0, np.nan])}, level=0.5)
        {'': (1.5, 2.5)}
    """
    quantiles = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    out = {}
    for key, reps in replicates.items():
        reps = np.asarray(reps, dtype=np.float64)
        if np.isnan(reps).all():
            out[key] = (math.nan, math.nan)
        else:
            low, high = np.nanpercentile(reps, quantiles)
            out[key] = (float(low), float(high))
    return out


def _holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values (same order as ``pvalues``)."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate(pvalues[order] * (m - np.arange(m))), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def win_matrix(values: Mapping[str, np.ndarray], lower_is_better: bool = True) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise win rates of methods over images, with Holm-adjusted sign-test p-values.

    ``win[A, B] = 100 * (wins + ties / 2) / n`` over the ``n`` images where both A and B are
    defined (not NaN); NaN when there is none. Values are compared exactly: methods whose maps are
    mathematically equal (Grad-CAM, HiResCAM and XGrad-CAM on a global-average-pooled linear head) differ
    per image by float32 rounding, which splits them by a few images (the leaderboard's caption says so).
    ``p[A, B] = p[B, A]`` is the two-sided exact sign test of the pair
    (``scipy.stats.binomtest(wins, wins + losses, 0.5)``, ties dropped; 1.0 without any untied image),
    Holm-Bonferroni adjusted over the unordered pairs.

    Args:
        values: method -> ``(n_images,)`` per-image values, all in the same image order.
        lower_is_better: whether a lower value wins (Average Drop) or a higher one.

    Returns:
        ``(win, p)``: DataFrames indexed by method (rows = A, columns = B, in the order of
        ``values``), NaN on the diagonal.

    Examples:
        >>> win, p = win_matrix({"a": np.array([1.0, 2.0, 3.0, 5.0]), "b": np.array([2.0, 2.0, 4.0, 4.0])})
        >>> win
              a     b
        a   NaN  62.5
        b  37.5   NaN
        >>> p  # 2 wins, 1 loss: P(|X - 1.5| >= 0.5), X ~ B(3, 1/2)
             a    b
        a  NaN  1.0
        b  1.0  NaN
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"Expected `values` to be a dict of method -> per-image values, but got "
                        f"{type(values).__name__}.")
    methods = list(values)
    arrays = [np.asarray(values[m], dtype=np.float64) for m in methods]
    shapes = {m: a.shape for m, a in zip(methods, arrays)}
    if any(a.ndim != 1 for a in arrays) or len(set(shapes.values())) > 1:
        raise ValueError(f"Expected `values` to hold 1-D arrays of the same length, but got shapes {shapes}.")
    k = len(methods)
    win = np.full((k, k), np.nan)
    pairs, pvalues = [], []
    for i in range(k):
        for j in range(i + 1, k):
            a, b = arrays[i], arrays[j]
            both = ~np.isnan(a) & ~np.isnan(b)
            a, b = a[both], b[both]
            wins = int(np.sum(a < b if lower_is_better else a > b))
            losses = int(np.sum(b < a if lower_is_better else b > a))
            ties = len(a) - wins - losses
            if len(a):
                win[i, j] = 100 * (wins + ties / 2) / len(a)
                win[j, i] = 100 * (losses + ties / 2) / len(a)
            pairs.append((i, j))
            pvalues.append(binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0)
    p = np.full((k, k), np.nan)
    for (i, j), adjusted in zip(pairs, _holm(np.asarray(pvalues, dtype=np.float64))):
        p[i, j] = p[j, i] = adjusted
    return (pd.DataFrame(win, index=methods, columns=methods),
            pd.DataFrame(p, index=methods, columns=methods))


def mean_ranks(table: pd.DataFrame, higher_is_better: Mapping[str, bool]) -> pd.DataFrame:
    """Mean rank of each method per backbone (over metrics) and over backbones; 1 = best.

    For each backbone and each metric of ``higher_is_better``, the methods with a value (not
    NaN) are ranked with ``scipy.stats.rankdata(method="average")`` (ties share the mean rank);
    a method's rank on a backbone is the mean of its ranks over the metrics, and NaN when it is not ranked on
    one that other methods are ranked on (a mean over fewer columns would not compare). ``mean rank`` is the
    mean over the backbones, NaN unless the method has a rank on every one.

    Args:
        table: columns ``backbone``, ``method`` and one column per metric (its dataset value);
            one row per (backbone, method).
        higher_is_better: metric -> whether higher values are better; only these metrics are ranked.

    Returns:
        DataFrame indexed by method (first appearance in ``table``), one column per backbone (first
        appearance) and ``mean rank``, sorted by ``mean rank`` (stable, NaN last).

    Examples:
        >>> table = pd.DataFrame({"backbone": ["r50", "r50", "vgg", "vgg"], "method": ["a", "b", "a", "b"],
        ...                       "drop": [10.0, 20.0, 30.0, 5.0], "game": [0.9, 0.8, 0.7, 0.7]})
        >>> mean_ranks(table, {"drop": False, "game": True})  # doctest: +NORMALIZE_WHITESPACE
                r50   vgg  mean rank
        method
        a       1.0  1.75      1.375
        b       2.0  1.25      1.625
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"Expected `table` to be a pandas.DataFrame, but got {type(table).__name__}.")
    missing = [c for c in ["backbone", "method", *higher_is_better] if c not in table.columns]
    if missing:
        raise ValueError(f"Expected `table` to have the columns `backbone`, `method` and every metric of "
                         f"`higher_is_better`, but got no {missing} in {list(table.columns)}.")
    duplicated = table.duplicated(["backbone", "method"])
    if duplicated.any():
        raise ValueError(f"Expected one row per (backbone, method) in `table`, but got repeated rows "
                         f"{table.loc[duplicated, ['backbone', 'method']].values.tolist()}.")
    methods = list(dict.fromkeys(table["method"]))
    backbones = list(dict.fromkeys(table["backbone"]))
    out = pd.DataFrame(np.nan, index=pd.Index(methods, name="method"), columns=[*backbones, "mean rank"])
    for backbone in backbones:
        rows = table[table["backbone"] == backbone]
        ranks = pd.DataFrame(np.nan, index=rows["method"].tolist(), columns=list(higher_is_better))
        for metric, higher in higher_is_better.items():
            scores = rows[metric].to_numpy(dtype=np.float64)
            defined = ~np.isnan(scores)
            ranks.loc[defined, metric] = rankdata(-scores[defined] if higher else scores[defined], method="average")
        ranked = [metric for metric in ranks.columns if ranks[metric].notna().any()]
        out.loc[ranks.index, backbone] = ranks[ranked].mean(axis=1).where(ranks[ranked].notna().all(axis=1))
    out["mean rank"] = out[backbones].mean(axis=1, skipna=False)
    return out.sort_values("mean rank", kind="stable")


def degenerate_maps(frame: pd.DataFrame) -> Dict[str, Dict[str, int]]:
    """Per method, how many of its maps were ``constant`` or ``not_finite`` (the per-sample ``map_status``;
    absent in runs written before it existed).

    Examples:
        >>> frame = pd.DataFrame({"method": ["a", "a", "b"], "map_status": ["constant", "ok", "not_finite"]})
        >>> degenerate_maps(frame)
        {'a': {'constant': 1, 'n': 2}, 'b': {'not_finite': 1, 'n': 1}}
    """
    if "map_status" not in frame.columns:
        return {}
    out: Dict[str, Dict[str, int]] = {}
    for method, group in frame.groupby("method", sort=False):
        counts = group["map_status"].value_counts()
        bad = {k: int(counts[k]) for k in ("constant", "not_finite") if k in counts}
        if bad:
            out[str(method)] = {**bad, "n": len(group)}
    return out


def on_most(count, n):
    """Whether ``count`` of ``n`` images is most of them (more than half): the rule for a metric undefined on
    most images and for a method whose maps are degenerate on most (works on numbers and pandas columns).

    Examples:
        >>> on_most(3, 6), on_most(4, 6)
        (False, True)
    """
    return 2 * count > n


def unranked_methods(frame: pd.DataFrame) -> List[str]:
    """The methods whose maps are constant or not finite on most images (:func:`degenerate_maps`).

    Examples:
        >>> unranked_methods(pd.DataFrame({"method": ["a", "a", "b"], "map_status": ["constant", "ok", "constant"]}))
        ['b']
    """
    return [m for m, c in degenerate_maps(frame).items()
            if on_most(c.get("constant", 0) + c.get("not_finite", 0), c["n"])]


def rankable(results: pd.DataFrame, frame: pd.DataFrame, decimals: Optional[Mapping[str, int]] = None) -> pd.Series:
    """``results``' values as the table shows them, NaN where they must not be ranked or bolded: a metric
    undefined on most of the method's images (``n_invalid > n / 2``), and every metric of a method whose maps
    are constant or not finite on most images (a constant map's Complexity 0 would otherwise win).

    ``decimals`` (metric -> the decimals the table prints): each value is rounded exactly as printed, so
    methods that show the same number tie (identical maps must not get different bolds or mean ranks from
    float noise in the last bits).

    Examples:
        >>> results = pd.DataFrame({"method": ["a", "a", "b"], "metric": ["x", "y", "x"],
        ...                         "value": [1.0, 2.0, 3.0], "n": [4, 4, 4], "n_invalid": [0, 3, 0]})
        >>> frame = pd.DataFrame({"method": ["b"] * 4, "map_status": ["constant"] * 3 + ["ok"]})
        >>> rankable(results, frame).tolist()
        [1.0, nan, nan]
        >>> noisy = pd.DataFrame({"method": ["a", "b"], "metric": ["x", "x"], "value": [84.4512, 84.4488],
        ...                       "n": [4, 4], "n_invalid": [0, 0]})
        >>> rankable(noisy, frame.iloc[:0], {"x": 2}).tolist()  # both print 84.45: a tie
        [84.45, 84.45]
    """
    keep = ~on_most(results["n_invalid"], results["n"]) & ~results["method"].isin(unranked_methods(frame))
    values = results["value"].astype(float)
    if decimals:
        places = results["metric"].map(decimals)
        values = pd.Series([float(f"{v:.{int(d)}f}") if np.isfinite(v) and pd.notna(d) else v
                            for v, d in zip(values, places)], index=values.index)
    return values.where(keep)
