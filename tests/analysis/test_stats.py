"""Group statistics against scipy.stats and hand calculations; corrections checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from napari_sbl.analysis.stats import (
    adjust_p_values,
    benjamini_hochberg,
    compare_groups,
    dunn,
    holm,
    kruskal_wallis,
    mann_whitney,
)


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> Holm 4*.005, 3*.01, 2*.03, max(1*.04, .06); BH p*m/rank, min from the top
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert benjamini_hochberg(p).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1
    with_nan = holm([0.01, np.nan, 0.02])
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]].tolist() == pytest.approx([0.02, 0.02])
    with pytest.raises(ValueError, match="unknown correction"):
        adjust_p_values(p, "bonferroni-ish")


def test_mann_whitney_matches_scipy_and_rank_biserial_by_hand():
    a, b = [1.0, 5.0, 3.0, 8.0], [2.0, 4.0, 6.0]
    result = mann_whitney(a, b)
    reference = sps.mannwhitneyu(a, b, alternative="two-sided")
    assert result.statistic == 6.0 == reference.statistic  # pairs a > b: 0 + 2 + 1 + 3
    assert result.p == pytest.approx(reference.pvalue)
    assert result.effect == pytest.approx(0.0)  # 2 * 6 / 12 - 1
    separated = mann_whitney([1, 2, 3], [4, 5, 6, 7])
    assert separated.statistic == 0 and separated.effect == -1.0
    assert separated.p == pytest.approx(2 / 35)  # exact: 1 of C(7, 3) orderings in each tail
    tied = mann_whitney([1, 1, 2, 3, 3], [2, 3, 4, 4])
    assert tied.p == pytest.approx(sps.mannwhitneyu([1, 1, 2, 3, 3], [2, 3, 4, 4]).pvalue)


def test_kruskal_wallis_matches_scipy_and_epsilon_squared():
    groups = [[2.9, 3.0, 2.5, 2.6, 3.2], [3.8, 2.7, 4.0, 2.4], [2.8, 3.4, 3.7, 2.2, 2.0]]
    result = kruskal_wallis(groups)
    reference = sps.kruskal(*groups)
    assert result.statistic == pytest.approx(reference.statistic) and result.p == pytest.approx(reference.pvalue)
    assert result.effect == pytest.approx(reference.statistic / (14 - 1))
    assert np.isnan(kruskal_wallis([[1, 1], [1, 1], [1]]).p)  # all equal: no test


def test_dunn_by_hand():
    pairs = dunn([[1, 2, 3], [4, 5, 6], [7, 8, 9]], ["a", "b", "c"], correction="holm")
    # mean ranks 2, 5, 8; N = 9, no ties: var = 9 * 10 / 12 * (1/3 + 1/3) = 5
    z = [(2 - 5) / np.sqrt(5), (2 - 8) / np.sqrt(5), (5 - 8) / np.sqrt(5)]
    p = [2 * sps.norm.sf(abs(v)) for v in z]
    assert [(r.group_a, r.group_b) for r in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert [r.z for r in pairs] == pytest.approx(z)
    assert [r.p for r in pairs] == pytest.approx(p)
    assert [r.p_adjusted for r in pairs] == pytest.approx([2 * p[0], 3 * p[1], 2 * p[2]])
    assert [r.rank_biserial for r in pairs] == pytest.approx([-1.0, -1.0, -1.0])


def test_dunn_tie_correction():
    groups = [[1, 1, 2], [2, 3, 3], [3, 4, 4]]
    pooled = np.concatenate(groups).astype(float)
    ranks = sps.rankdata(pooled)
    n = 9
    ties = sum(t**3 - t for t in np.unique(pooled, return_counts=True)[1])
    variance = (n * (n + 1) / 12 - ties / (12 * (n - 1))) * (2 / 3)
    expected = (ranks[:3].mean() - ranks[3:6].mean()) / np.sqrt(variance)
    assert dunn(groups, ["x", "y", "z"])[0].z == pytest.approx(expected)


def test_compare_groups_table():
    rng = np.random.default_rng(1)
    rows = []
    for group, shift in (("wt", 0.0), ("ko", 0.3), ("het", 0.15)):
        for animal in range(6):
            for cls in ("groom", "walk"):
                value = rng.uniform(0, 0.2) + (shift if cls == "groom" else 0)
                rows.append({"genotype": group, "animal_id": animal, "class": cls, "fraction": value,
                             "bouts": rng.integers(1, 9)})
    subjects = pd.DataFrame(rows)
    tests, pairs = compare_groups(subjects, "genotype", ["fraction", "bouts"], correction="bh")
    assert len(tests) == 4 and set(tests["test"]) == {"kruskal-wallis"}
    assert (tests[["n_het", "n_ko", "n_wt"]] == 6).all().all()
    groom = tests[(tests["metric"] == "fraction") & (tests["class"] == "groom")].iloc[0]
    samples = [subjects[(subjects["genotype"] == g) & (subjects["class"] == "groom")]["fraction"]
               for g in ("het", "ko", "wt")]
    assert groom["statistic"] == pytest.approx(sps.kruskal(*samples).statistic)
    assert groom["p"] < 0.01
    assert tests["p_adjusted"].tolist() == pytest.approx(benjamini_hochberg(tests["p"]).tolist())
    assert len(pairs) == 4 * 3 and {"z", "p", "p_adjusted", "rank_biserial"} <= set(pairs.columns)
    two = compare_groups(subjects[subjects["genotype"] != "het"], "genotype", ["fraction"])[0]
    assert set(two["test"]) == {"mann-whitney"} and "effect" in two.columns
    with pytest.raises(ValueError, match="a comparison needs two or more"):
        compare_groups(subjects[subjects["genotype"] == "wt"], "genotype", ["fraction"])
