"""Group comparisons of per-animal metrics: rank tests, post-hoc pairs, corrections, effect sizes.

Two groups: Mann-Whitney U with the rank-biserial correlation ``r = 2 U / (n1 n2) - 1`` (positive when
the first group tends higher). More groups: Kruskal-Wallis with ``epsilon² = H / (n - 1)`` and Dunn's
pairwise test (tie-corrected), its p-values corrected within each test. The p-values of all tests in
a comparison table are corrected together (Holm by default, or Benjamini-Hochberg).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

CORRECTIONS = ("holm", "bh")


@dataclass(frozen=True)
class TestResult:
    test: str  # "mann-whitney" or "kruskal-wallis"
    statistic: float
    p: float
    effect_name: str  # "rank-biserial" or "epsilon²"
    effect: float


@dataclass(frozen=True)
class PairResult:
    group_a: str
    group_b: str
    z: float  # Dunn's z (mean rank of a minus b, standardised)
    p: float
    p_adjusted: float
    rank_biserial: float


def _ranked_valid(p_values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p as float64, an all-NaN result of its shape, indices of the non-NaN p-values from smallest to
    largest, ties in input order): what both corrections start from."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    return p, np.full(p.shape, np.nan), valid[np.argsort(p[valid], kind="stable")]


def holm(p_values) -> np.ndarray:
    """Holm's step-down family-wise correction of ``p_values`` (NaN left as NaN)."""
    p, adjusted, order = _ranked_valid(p_values)
    m = order.size
    if m == 0:
        return adjusted
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg false-discovery-rate adjusted p-values (NaN left as NaN)."""
    p, adjusted, order = _ranked_valid(p_values)
    m = order.size
    if m == 0:
        return adjusted
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return adjusted


def adjust_p_values(p_values, method: str = "holm") -> np.ndarray:
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    return holm(p_values) if method == "holm" else benjamini_hochberg(p_values)


def mann_whitney(a, b) -> TestResult:
    """Two-sided Mann-Whitney U of ``a`` against ``b``; U counts pairs with a > b (ties count half)."""
    from scipy.stats import mannwhitneyu

    a, b = _clean(a), _clean(b)
    if a.size == 0 or b.size == 0:
        return TestResult("mann-whitney", np.nan, np.nan, "rank-biserial", np.nan)
    result = mannwhitneyu(a, b, alternative="two-sided")
    u = float(result.statistic)
    return TestResult("mann-whitney", u, float(result.pvalue), "rank-biserial", 2 * u / (a.size * b.size) - 1)


def kruskal_wallis(groups) -> TestResult:
    """Kruskal-Wallis H over several groups, with epsilon² = H / (n - 1)."""
    from scipy.stats import kruskal

    samples = [_clean(g) for g in groups]
    samples = [s for s in samples if s.size]
    n = sum(s.size for s in samples)
    if len(samples) < 2 or np.unique(np.concatenate(samples)).size < 2:
        return TestResult("kruskal-wallis", np.nan, np.nan, "epsilon²", np.nan)
    result = kruskal(*samples)
    h = float(result.statistic)
    return TestResult("kruskal-wallis", h, float(result.pvalue), "epsilon²", h / (n - 1))


def dunn(groups, names, correction: str = "holm") -> list[PairResult]:
    """Dunn's pairwise test after Kruskal-Wallis (pooled ranks, tie-corrected variance)."""
    from scipy.stats import norm, rankdata

    samples = [_clean(g) for g in groups]
    pooled = np.concatenate(samples)
    n = pooled.size
    ranks = rankdata(pooled)
    _, tie_counts = np.unique(pooled, return_counts=True)
    tie_term = float((tie_counts**3 - tie_counts).sum()) / (12 * (n - 1)) if n > 1 else 0.0
    bounds = np.cumsum([0] + [s.size for s in samples])
    mean_rank = [ranks[bounds[i]:bounds[i + 1]].mean() if samples[i].size else np.nan for i in range(len(samples))]
    pairs, z_values, p_values = [], [], []
    for i, j in combinations(range(len(samples)), 2):
        variance = (n * (n + 1) / 12 - tie_term) * (1 / max(samples[i].size, 1) + 1 / max(samples[j].size, 1))
        z = (mean_rank[i] - mean_rank[j]) / np.sqrt(variance) if variance > 0 else np.nan
        pairs.append((i, j))
        z_values.append(z)
        p_values.append(2 * norm.sf(abs(z)) if np.isfinite(z) else np.nan)
    adjusted = adjust_p_values(p_values, correction)
    return [PairResult(str(names[i]), str(names[j]), float(z), float(p), float(q),
                       mann_whitney(samples[i], samples[j]).effect)
            for (i, j), z, p, q in zip(pairs, z_values, p_values, adjusted, strict=True)]


def compare_groups(subjects: pd.DataFrame, group_column: str, metrics: list[str], by: str = "class",
                   correction: str = "holm") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test every metric (per value of ``by``) between the groups of ``group_column``.

    ``subjects`` has one row per animal (and ``by`` value) with ``group_column`` and the ``metrics``.
    Returns (tests, pairs): one row per (metric, ``by``) with group sizes and medians, statistic, p,
    ``p_adjusted`` over the whole table and the effect size; one row per post-hoc pair (> 2 groups).
    """
    data = subjects.dropna(subset=[group_column])
    group_names = sorted(data[group_column].astype(str).unique())
    if len(group_names) < 2:
        raise ValueError(f"column {group_column!r} has {len(group_names)} group(s); a comparison needs two or more")
    rows, pair_rows = [], []
    for key, part in (data.groupby(by, sort=False) if by else [(None, data)]):
        for metric in metrics:
            samples = [part.loc[part[group_column].astype(str) == g, metric].to_numpy(float) for g in group_names]
            row = {"metric": metric, by: key} if by else {"metric": metric}
            for name, sample in zip(group_names, samples, strict=True):
                row[f"n_{name}"] = int(np.isfinite(sample).sum())
                row[f"median_{name}"] = float(np.nanmedian(sample)) if np.isfinite(sample).any() else np.nan
            result = mann_whitney(*samples) if len(samples) == 2 else kruskal_wallis(samples)
            row.update(test=result.test, statistic=result.statistic, p=result.p, effect_size=result.effect_name,
                       effect=result.effect)
            rows.append(row)
            if len(samples) > 2 and np.isfinite(result.p):
                for pair in dunn(samples, group_names, correction):
                    pair_rows.append({"metric": metric, **({by: key} if by else {}), **pair.__dict__})
    tests = pd.DataFrame(rows)
    tests.insert(tests.columns.get_loc("p") + 1, "p_adjusted", adjust_p_values(tests["p"].to_numpy(), correction))
    return tests, pd.DataFrame(pair_rows)


def _clean(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]
